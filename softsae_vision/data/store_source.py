"""Shuffled, resumable batches of token activations read from an activation store.

A store can be far larger than memory, and single random rows of a memory map are slow to read.
So each epoch shuffles *blocks* of consecutive images (about ``block_bytes`` each), reads a
window of blocks (at most ``buffer_rows`` tokens) into memory, and shuffles the tokens inside
the window. Consecutive batches therefore mix tokens from hundreds of images spread over the
whole store, while memory stays bounded by the window, whatever the store size.

The stream of rows is a pure function of the seed: epoch ``e`` draws its block order from
``(seed, e)`` and window ``w`` its token order from ``(seed, e, w)``. Batch ``b`` is rows
``[b * B, (b + 1) * B)`` of that stream, so ``batches(B, seed, start=b)`` can jump straight to
the right window, which is what lets training resume exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from softsae_vision.data.store import Store, open_store
from softsae_vision.errors import SoftSAEError
from softsae_vision.vocab import EMBED, TOKEN_CHOICES, TOKEN_KINDS, Layer


class StoreSource:
    """An :class:`~softsae_vision.data.source.ActivationSource` over one layer of a store.

    ``tokens`` picks which token positions are rows: "patch", "cls", "register", "all", or
    "embed" (the one token of the embed layer; None picks "patch", or "embed" for that layer).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        layer: Layer | None = None,
        tokens: str | None = "patch",
        buffer_rows: int = 1 << 18,
        block_bytes: int = 1 << 20,
    ):
        self.store: Store = open_store(path)
        self.layer = self.store.resolve_layer(layer)
        types = self.store.layer_token_types(self.layer)
        if tokens is None:
            tokens = EMBED if self.layer == EMBED else "patch"
        tokens = str(tokens).strip().lower()
        if tokens not in TOKEN_CHOICES:
            raise SoftSAEError(
                f"unknown --tokens {tokens!r}; use one of {', '.join(TOKEN_CHOICES)}"
            )
        if self.layer == EMBED and tokens not in (EMBED, "all"):
            raise SoftSAEError(
                f"layer 'embed' holds one pooled embedding per image, not {tokens} tokens; "
                "pass --tokens embed (or all)"
            )
        if self.layer != EMBED and tokens == EMBED:
            raise SoftSAEError("--tokens embed is for the embed layer; pass --layer embed")
        self.tokens = tokens
        if tokens == "all":
            positions = np.arange(len(types), dtype=np.int64)
        else:
            positions = self.store.token_indices(tokens, self.layer)
        if len(positions) == 0:
            present = ", ".join(dict.fromkeys(types))
            raise SoftSAEError(
                f"{self.store.path} has no {tokens} tokens (it holds: {present}); "
                f"choose --tokens from {present} or all"
            )
        self._array = self.store.activations(self.layer)  # (N, T, d) memory map
        n_images, n_tokens, self.d = (int(s) for s in self._array.shape)
        if n_images == 0:
            raise SoftSAEError(f"{self.store.path} holds no images (every input was skipped)")
        self._positions = positions
        self._all_positions = len(positions) == n_tokens
        self._types = [types[p] for p in positions]
        self.n_images = n_images
        row_bytes = n_tokens * self.d * self._array.dtype.itemsize
        self._block_images = max(1, block_bytes // row_bytes)
        self._n_blocks = -(-n_images // self._block_images)
        window_images = max(1, buffer_rows // len(positions))
        self._window_blocks = max(1, window_images // self._block_images)

    def __len__(self) -> int:
        return self.n_images * len(self._positions)

    # -- reading ------------------------------------------------------------------------

    def _read_images(
        self, start: int, stop: int, positions: np.ndarray | None = None
    ) -> np.ndarray:
        """Rows (n_images * P, d) of images [start, stop) at ``positions``, storage dtype."""
        chunk = self._array[start:stop]
        positions = self._positions if positions is None else positions
        if not (positions is self._positions and self._all_positions):
            chunk = chunk[:, positions]
        return np.ascontiguousarray(chunk).reshape(-1, self.d)

    def _window_plan(self, seed: int, epoch: int) -> list[np.ndarray]:
        """The blocks of each window of an epoch, each window's blocks in file order."""
        order = np.random.default_rng([seed, epoch]).permutation(self._n_blocks)
        step = self._window_blocks
        return [np.sort(order[i : i + step]) for i in range(0, self._n_blocks, step)]

    def _max_window_rows(self) -> int:
        """Rows of the largest window (a bound: ``window_blocks`` full blocks, or every row)."""
        return min(len(self), self._window_blocks * self._block_images * len(self._positions))

    def _window_rows(self, blocks: np.ndarray) -> int:
        starts = blocks * self._block_images
        sizes = np.minimum(starts + self._block_images, self.n_images) - starts
        return int(sizes.sum()) * len(self._positions)

    def _load_window(self, blocks: np.ndarray, buffer: np.ndarray | None = None) -> np.ndarray:
        """Rows (n, d) of a window's blocks, in storage dtype, read into ``buffer`` if it fits.

        Each block is copied straight from the memory map into the window and checked for
        NaN/inf while it is still in cache; reusing one buffer per stream spares the page
        faults of a fresh window-sized allocation (on a small machine, most of a load's cost).
        """
        n_rows = self._window_rows(blocks)
        if buffer is None or len(buffer) < n_rows:
            buffer = np.empty((n_rows, self.d), dtype=self._array.dtype)
        rows = buffer[:n_rows]
        P = len(self._positions)
        finite = np.empty(self._block_images * P * self.d, dtype=bool)
        at = 0
        for block in blocks:
            start = int(block) * self._block_images
            stop = min(start + self._block_images, self.n_images)
            part = rows[at : at + (stop - start) * P]
            chunk = self._array[start:stop]  # a view of the memory map (a copy if sharded)
            if self._all_positions:
                part[...] = chunk.reshape(-1, self.d)
            else:
                np.take(
                    chunk, self._positions, axis=1, out=part.reshape(-1, P, self.d), mode="clip"
                )
            flags = finite[: part.size].reshape(part.shape)
            if not np.isfinite(part, out=flags).all():  # extraction never writes NaN/inf
                raise SoftSAEError(
                    f"{self.store.path}: layer {self.layer} holds NaN or infinite values in "
                    f"images {start}-{stop - 1}; the store is damaged: re-extract it with "
                    "`softsae extract`"
                )
            at += len(part)
        return rows

    # -- ActivationSource ---------------------------------------------------------------

    def batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
        """(batch_size, d) float32 batches forever; batch ``start`` onwards of the seed's stream."""
        for rows_BD in self.raw_batches(batch_size, seed, start):
            yield torch.from_numpy(rows_BD.astype(np.float32))

    def raw_batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[np.ndarray]:
        """The stream of :meth:`batches` in the store's dtype (fp16 by default), not cast.

        The training loader prefers it: the cast to fp32 then happens on the device (or in the
        read-ahead thread on a CPU), and half the bytes cross the bus.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        epoch, skip = divmod(start * batch_size, len(self))
        pieces: list[np.ndarray] = []
        need = batch_size
        window: np.ndarray | None = None  # one buffer for every window of the stream
        while True:
            for w, blocks in enumerate(self._window_plan(seed, epoch)):
                n_rows = self._window_rows(blocks)
                if skip >= n_rows:
                    skip -= n_rows
                    continue
                if window is None:
                    window = np.empty((self._max_window_rows(), self.d), self._array.dtype)
                rows = self._load_window(blocks, window)
                perm = np.random.default_rng([seed, epoch, w]).permutation(n_rows)
                i, skip = skip, 0
                while i < n_rows:
                    take = min(need, n_rows - i)
                    pieces.append(rows[perm[i : i + take]])
                    i, need = i + take, need - take
                    if need == 0:
                        yield np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
                        pieces, need = [], batch_size
            epoch += 1

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """Up to ``n`` distinct random rows (n, d) float32, reading only those tokens."""
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(self), size=min(n, len(self)), replace=False)
        order = np.argsort(rows)  # sorted reads are much faster on a memory map
        image, slot = np.divmod(rows[order], len(self._positions))
        out = np.empty((len(rows), self.d), dtype=np.float32)
        out[order] = self._array[image, self._positions[slot]]
        return torch.from_numpy(out)

    def iter_eval(self, batch_size: int) -> Iterator[tuple[str, torch.Tensor]]:
        """Every row once, grouped by token type (cls, register, patch or embed), image order."""
        kinds = [k for k in (*TOKEN_KINDS, EMBED) if k in self._types]
        for kind in kinds:
            positions = self._positions[[t == kind for t in self._types]]
            step = max(1, batch_size // len(positions))

            def chunks(positions: np.ndarray = positions, step: int = step) -> Iterator[np.ndarray]:
                for start in range(0, self.n_images, step):
                    yield self._read_images(start, min(start + step, self.n_images), positions)

            for batch in _rebatch(chunks(), batch_size):
                yield kind, batch

    def describe(self) -> dict[str, Any]:
        """What a run's config.json records about its training data."""
        return {
            "kind": "store",
            "path": str(Path(self.store.path).resolve()),
            "layer": self.layer,
            "tokens": self.tokens,
            "backbone": self.store.backbone,
            "d": self.d,
            "n_rows": len(self),
        }

    def __repr__(self) -> str:
        return (
            f"StoreSource({str(self.store.path)!r}, layer={self.layer!r}, tokens={self.tokens!r}, "
            f"rows={len(self)}, d={self.d})"
        )


def _to_float(pieces: list[np.ndarray]) -> torch.Tensor:
    rows = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    return torch.from_numpy(rows.astype(np.float32))


def _rebatch(chunks: Iterable[np.ndarray], batch_size: int) -> Iterator[torch.Tensor]:
    """Cut a stream of (n_i, d) arrays into (batch_size, d) float32 batches, the last shorter."""
    pieces: list[np.ndarray] = []
    have = 0
    for chunk in chunks:
        while len(chunk):
            take = min(batch_size - have, len(chunk))
            pieces.append(chunk[:take])
            chunk, have = chunk[take:], have + take
            if have == batch_size:
                yield _to_float(pieces)
                pieces, have = [], 0
    if pieces:
        yield _to_float(pieces)
