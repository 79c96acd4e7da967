"""A layer split into ``.npy`` shards, read as one (n_rows, tokens, d) array (schema 2).

``shards.json`` lists, per layer, the shard files in row order with their row counts; the row
index ``i`` lives in the shard whose cumulative start is the last one <= ``i``. Each shard is a
plain ``.npy`` file that ``np.load(path, mmap_mode="r")`` reads without this library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from softsae_vision.data.store_check import damaged
from softsae_vision.data.store_format import SHARDS_FILE, check_npy_file, layer_key

Shard = tuple[Path, int]
"""A shard file and its number of rows."""


class ShardedArray:
    """Read-only rows of a sharded layer; indexing reads only the shards (and rows) it needs.

    Supports ``.shape``, ``.dtype``, ``len()``, ``np.asarray()``, and on the first axis an int,
    a slice or an integer/boolean array, optionally followed by indices of the other axes
    (``a[rows, positions]`` pairs them like numpy does).
    """

    ndim = 3

    def __init__(self, shards: list[Shard], n_tokens: int, d: int, dtype: np.dtype):
        self._paths = [Path(p) for p, _ in shards]
        counts = np.array([int(n) for _, n in shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.shape = (int(self._starts[-1]), int(n_tokens), int(d))
        self.dtype = np.dtype(dtype)
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def n_shards(self) -> int:
        return len(self._paths)

    def _shard(self, i: int) -> np.ndarray:
        if i not in self._maps:
            try:
                self._maps[i] = np.load(self._paths[i], mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                raise damaged(self._paths[i], f"cannot be memory-mapped ({err})") from None
        return self._maps[i]

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) (stop > start) copied from the shards that hold them."""
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        at, s = start, first
        while at < stop:
            lo, hi = int(self._starts[s]), int(self._starts[s + 1])
            take = min(stop, hi) - at
            if take > 0:
                out[at - start : at - start + take] = self._shard(s)[at - lo : at - lo + take]
            at += max(take, 0)
            s += 1
        return out

    def _read_rows(self, rows_N: np.ndarray) -> np.ndarray:
        """Rows at the (in-range, non-negative) indices ``rows_N``, in that order."""
        out = np.empty((len(rows_N), *self.shape[1:]), dtype=self.dtype)
        if len(rows_N) == 0:
            return out
        shard_of = np.searchsorted(self._starts, rows_N, side="right") - 1
        for s in np.unique(shard_of):
            sel = shard_of == s
            local = rows_N[sel] - self._starts[s]
            order = np.argsort(local, kind="stable")  # sorted reads are faster on a memory map
            picked = np.empty((len(local), *self.shape[1:]), dtype=self.dtype)
            picked[order] = self._shard(int(s))[local[order]]
            out[sel] = picked
        return out

    def _rows_of(self, key: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        """Flat row indices and result shape for an integer or boolean index array."""
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (self.shape[0],):
                raise IndexError(
                    f"boolean index of shape {index.shape} does not match {self.shape[0]} rows"
                )
            index = np.flatnonzero(index)
        elif not np.issubdtype(index.dtype, np.integer):
            if index.size:
                raise IndexError(f"arrays used as indices must be integers, not {index.dtype}")
            index = index.astype(np.int64)
        flat = index.reshape(-1).astype(np.int64)
        n = self.shape[0]
        if flat.size and (flat.min() < -n or flat.max() >= n):
            raise IndexError(f"row index out of bounds for {n} rows")
        return np.where(flat < 0, flat + n, flat), index.shape

    def __getitem__(self, key: Any) -> np.ndarray:
        keys = key if isinstance(key, tuple) else (key,)
        if not keys:
            return self[:]
        first, rest = keys[0], keys[1:]
        if first is Ellipsis:
            rest = (Ellipsis, *rest)
            first = slice(None)
        n = self.shape[0]
        if isinstance(first, slice):
            start, stop, step = first.indices(n)
            if step == 1:
                block = (
                    self._read_range(start, stop)
                    if stop > start
                    else self._read_rows(np.empty(0, dtype=np.int64))
                )
            else:
                block = self._read_rows(np.arange(start, stop, step, dtype=np.int64))
            return block[(slice(None), *rest)] if rest else block
        if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
            i = int(first)
            if not -n <= i < n:
                raise IndexError(f"row {i} is out of bounds for {n} rows")
            row = self._read_range(i % n, i % n + 1)[0]
            return row[rest] if rest else row
        rows, shape = self._rows_of(first)
        block = self._read_rows(rows)
        if not rest:
            return block.reshape(*shape, *self.shape[1:])
        if len(shape) != 1:
            raise IndexError("a multi-dimensional row index cannot be combined with other axes")
        if any(isinstance(k, (list, np.ndarray)) for k in rest):  # pairwise, as numpy does
            return block[(np.arange(len(rows)), *rest)]
        return block[(slice(None), *rest)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"ShardedArray(shape={self.shape}, dtype={self.dtype}, shards={self.n_shards})"


def read_shard_table(path: Path, meta: dict[str, Any]) -> dict[str, list[Shard]]:
    """Per layer key, its shards in row order; every shard's header and length checked."""
    table_path = path / SHARDS_FILE
    try:
        table = json.loads(table_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise damaged(table_path, "the shard list is missing") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise damaged(table_path, f"not valid JSON ({err})") from None
    layers = table.get("layers") if isinstance(table, dict) else None
    if not isinstance(layers, dict):
        raise damaged(table_path, "no 'layers' object")
    n_ok = int(meta["images"]["n_ok"])
    dtype = np.dtype(meta["dtype"])
    out = {}
    for entry in meta["layers"]:
        key = layer_key(entry["layer"])
        listed = layers.get(key)
        if not isinstance(listed, list):
            raise damaged(table_path, f"layer {key} has no shard list")
        shards = []
        for item in listed:
            name, rows = (item.get("file"), item.get("rows")) if isinstance(item, dict) else (0, 0)
            folder, _, base = str(name).partition("/")
            if folder != entry["file"] or not base or "/" in base or base.startswith("."):
                raise damaged(table_path, f"layer {key}: bad shard file name {name!r}")
            if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
                raise damaged(table_path, f"layer {key}: shard {name} has bad row count {rows!r}")
            file = path / folder / base
            check_npy_file(file, (rows, entry["n_tokens"], entry["d"]), dtype)
            shards.append((file, rows))
        total = sum(rows for _, rows in shards)
        if total != n_ok:
            raise damaged(
                table_path, f"layer {key}'s shards hold {total} rows, meta.json says {n_ok}"
            )
        out[key] = shards
    return out
