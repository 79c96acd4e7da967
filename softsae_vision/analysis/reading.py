"""Reading a store layer a few images at a time, as float32 tensors, with bounded memory."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from softsae_vision.data.store import Store
from softsae_vision.errors import SoftSAEError

ELEMENT_BUDGET = 1 << 25
"""Largest (tokens x latents) codes block encoded at once: 32M floats = 128 MiB in float32."""


def images_per_chunk(n_tokens: int, width: int, budget: int = ELEMENT_BUDGET) -> int:
    """How many images fit one chunk if each yields ``n_tokens`` rows of ``width`` values."""
    return max(1, budget // max(1, n_tokens * width))


def token_positions(store: Store, layer: int | str, kinds: str | tuple[str, ...]) -> np.ndarray:
    """Positions along the token axis of ``layer`` holding any of ``kinds`` ("all": every one)."""
    types = store.layer_token_types(layer)
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    if "all" in kinds:
        return np.arange(len(types), dtype=np.int64)
    positions = np.array([i for i, t in enumerate(types) if t in kinds], dtype=np.int64)
    if positions.size == 0:
        raise SoftSAEError(
            f"layer {layer} of {store.path} has no {'/'.join(kinds)} tokens "
            f"(it holds {', '.join(sorted(set(types)))})"
        )
    return positions


def patch_positions(store: Store, layer: int | str) -> np.ndarray:
    """Positions of the patch tokens in grid (row-major) order; checks they fill the grid."""
    positions = token_positions(store, layer, "patch")
    h, w = store.grid
    if positions.size != h * w:
        raise SoftSAEError(
            f"{store.path} has {positions.size} patch tokens but a {h}x{w} grid; the store is "
            "damaged or from an unsupported backbone"
        )
    return positions


def iter_chunks(
    store: Store,
    layer: int | str,
    positions: np.ndarray,
    chunk_images: int,
    *,
    rows: np.ndarray | None = None,
    progress: bool = False,
    desc: str = "images",
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (store rows (B,), activations (B, T, d) float32) for ``rows`` (default: all).

    Only the selected token ``positions`` are read from the memory map.
    """
    acts_NTD = store.activations(layer)
    rows = np.arange(acts_NTD.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    contiguous_all = positions.size == acts_NTD.shape[1] and np.all(np.diff(positions) == 1)
    with tqdm(total=len(rows), unit="img", desc=desc, disable=not progress) as bar:
        for start in range(0, len(rows), chunk_images):
            chunk = rows[start : start + chunk_images]
            if chunk.size and np.all(np.diff(chunk) == 1):  # one slice: the fast path
                block = acts_NTD[chunk[0] : chunk[-1] + 1]
            else:
                block = acts_NTD[chunk]
            block = block if contiguous_all else block[:, positions]
            yield chunk, torch.from_numpy(np.array(block, dtype=np.float32))
            bar.update(len(chunk))
