"""Open whatever the user passed as DATA: a ``.npy`` array or an activation store."""

from __future__ import annotations

import os
from pathlib import Path

from softsae_vision.data.arrays import ArraySource
from softsae_vision.data.source import ActivationSource
from softsae_vision.errors import SoftSAEError


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
