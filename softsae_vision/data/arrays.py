"""In-memory or memory-mapped (N, d) arrays as a resumable, shuffled activation source."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from softsae_vision.errors import SoftSAEError


class RowArray(Protocol):
    """A 2-D array of rows (N, d) read by index: an ndarray, a memory map, or a lazy reader."""

    @property
    def ndim(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, idx: slice | np.ndarray, /) -> np.ndarray: ...


class ArraySource:
    """Rows of a 2-D array, reshuffled every epoch; batch b is a pure function of (seed, b)."""

    array: RowArray

    def __init__(self, array: RowArray | torch.Tensor, description: dict[str, Any] | None = None):
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        if array.ndim != 2:
            raise SoftSAEError(
                f"activations must be a 2-D array (N, d), got shape {array.shape}; "
                "reshape token activations to rows first"
            )
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise SoftSAEError(f"activation array is empty (shape {array.shape})")
        if not np.issubdtype(array.dtype, np.floating):
            raise SoftSAEError(f"activations must be floating point, got dtype {array.dtype}")
        self.array = array
        self.d = int(array.shape[1])
        self._description = description or {"kind": "array"}
        self._perm_cache: tuple[int, int, torch.Tensor] | None = None

    @classmethod
    def from_npy(cls, path: str | os.PathLike) -> ArraySource:
        """Memory-map a ``.npy`` file of shape (N, d)."""
        path = Path(path)
        if not path.is_file():
            raise SoftSAEError(f"no such file: {path}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise SoftSAEError(f"{path} is not a readable .npy array ({err})") from None
        return cls(array, {"kind": "npy", "path": str(path.resolve()), "shape": list(array.shape)})

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def _rows(self, idx: np.ndarray) -> torch.Tensor:
        order = np.argsort(idx)  # sorted reads are much faster on a memory map
        rows = np.empty((len(idx), self.d), dtype=np.float32)
        rows[order] = self.array[idx[order]]
        return torch.from_numpy(rows)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        gen = np.random.default_rng(seed)
        idx = gen.choice(len(self), size=min(n, len(self)), replace=False)
        return self._rows(idx)

    def _perm(self, seed: int, epoch: int) -> torch.Tensor:
        if self._perm_cache is None or self._perm_cache[:2] != (seed, epoch):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            self._perm_cache = (seed, epoch, torch.randperm(len(self), generator=gen))
        return self._perm_cache[2]

    def batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
        n = len(self)
        b = start
        while True:
            pos = np.arange(b * batch_size, (b + 1) * batch_size, dtype=np.int64)
            epochs, offsets = pos // n, pos % n
            idx = np.empty_like(pos)
            for epoch in np.unique(epochs):
                mask = epochs == epoch
                idx[mask] = self._perm(seed, int(epoch)).numpy()[offsets[mask]]
            yield self._rows(idx)
            b += 1

    def iter_eval(self, batch_size: int) -> Iterator[tuple[str, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield "all", torch.from_numpy(np.array(self.array[start:stop], dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        return dict(self._description)
