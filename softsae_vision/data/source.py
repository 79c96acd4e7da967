"""The seam between data and training: anything that yields (B, d) activation batches.

The trainer accepts either a plain iterable of tensors or an :class:`ActivationSource`. A source
is *resumable*: ``batches(batch_size, seed, start)`` must yield exactly the batches an
uninterrupted call would have yielded from batch index ``start`` on, which is what lets an
interrupted training run continue to the same result.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch


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
