"""The seam between data and training: what an activation source is, and how DATA opens one.

The trainer accepts an :class:`ActivationSource`, an (N, d) array, or a plain iterable of (B, d)
tensors. A source is *resumable*: ``batches(batch_size, seed, start)`` must yield exactly the
batches an uninterrupted call would have yielded from batch index ``start`` on, which is what
lets an interrupted training run continue to the same result. A plain iterable is read once, in
order, one batch per step, as given: ``batch_size`` and ``seed`` do not apply to it, it is not
reshuffled or repeated, and running out before the last step is a SoftSAEError naming the step.

:func:`open_source` opens what a user passes as DATA: a ``.npy`` array, an activation store, or
another toolkit's activation files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from softsae_vision.data.arrays import ArraySource
from softsae_vision.errors import SoftSAEError


@runtime_checkable
class ActivationSource(Protocol):
    """A resumable, shuffled stream of float32 activation batches."""

    d: int
    """Width of one activation vector."""

    def __len__(self) -> int:
        """Number of activation vectors (rows) in one epoch."""
        ...

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """Return up to ``n`` rows (n, d) float32, drawn at random; used to fit normalisation."""
        ...

    def batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
        """Yield (batch_size, d) float32 batches forever, reshuffled per epoch, from ``start``."""
        ...

    def iter_eval(self, batch_size: int) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (group, (b, d) float32 batch) covering every row exactly once, in order.

        ``group`` names the kind of row ("all" for plain arrays; "cls", "register" or "patch"
        for a store) so evaluation can report metrics per group as well as pooled.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the data, recorded in a run's config.json."""
        ...


def open_source(
    data: str | os.PathLike, layer: str | int | None = None, tokens: str | None = None
) -> ActivationSource:
    """An :class:`ActivationSource` over a ``.npy`` file (N, d) or a store directory."""
    path = Path(data)
    from softsae_vision.data.foreign import foreign_source  # saev shards, MSAE memmaps

    if (found := foreign_source(path, layer, tokens)) is not None:
        return found
    if path.is_dir():
        from softsae_vision.data.store_source import StoreSource

        return StoreSource(path, layer=layer, tokens=tokens)
    if not path.exists():
        raise SoftSAEError(f"no such file or directory: {path}")
    if path.suffix != ".npy":
        raise SoftSAEError(
            f"{path}: DATA must be a .npy file of shape (N, d) or an activation store "
            "directory made by `softsae extract`"
        )
    if layer is not None or (tokens not in (None, "all")):
        raise SoftSAEError("--layer and --tokens apply to activation stores, not .npy files")
    return ArraySource.from_npy(path)
