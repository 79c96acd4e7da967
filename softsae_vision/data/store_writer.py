"""Writing a single-process, schema-1 store chunk by chunk, resumably (see docs/formats.md)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from softsae_vision._io import write_json_atomic
from softsae_vision.data.store import Store
from softsae_vision.data.store_check import read_progress
from softsae_vision.data.store_format import (
    INDEX_FILE,
    META_FILE,
    PROGRESS_FILE,
    ImageRecord,
    layer_key,
    npy_header,
    npy_header_len,
)
from softsae_vision.vocab import Layer


class StoreWriter:
    """Writes a store chunk by chunk; :meth:`commit` makes everything so far durable.

    ``meta`` is the complete description of the store except the counts (see
    :func:`softsae_vision.data.extract.store_meta`); its ``layers`` entries give each layer's
    file, token count and width. Rows go into each layer file at the position of the next
    readable image, so a resumed writer simply continues from the last commit.
    """

    def __init__(self, path: Path, meta: dict[str, Any], progress: dict[str, int]):
        self.path, self.meta = path, meta
        self.images_done = int(progress["images_done"])
        self.n_ok = int(progress["n_ok"])
        self._dtype = np.dtype(meta["dtype"])
        self._files = {}
        for entry in meta["layers"]:
            f = open(path / entry["file"], "r+b")  # noqa: SIM115 - closed in close()
            self._files[layer_key(entry["layer"])] = (f, npy_header_len(path / entry["file"]))
        index = path / INDEX_FILE
        self._index_bytes = int(progress["index_bytes"])
        with open(index, "ab") as f:
            f.truncate(self._index_bytes)  # drop records written after the last commit
        self._index = open(index, "ab")  # noqa: SIM115 - closed in close()

    @classmethod
    def create(cls, path: Path, meta: dict[str, Any]) -> StoreWriter:
        """Start a new store (``meta.json`` first, so a crash right after still resumes)."""
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / META_FILE, meta, compact=True)
        n_total = int(meta["images"]["n_total"])
        for entry in meta["layers"]:
            shape = (n_total, int(entry["n_tokens"]), int(entry["d"]))
            nbytes = int(np.prod(shape)) * np.dtype(meta["dtype"]).itemsize
            tmp = path / f".{entry['file']}.tmp"
            with open(tmp, "wb") as f:
                header = npy_header(np.dtype(meta["dtype"]), shape)
                f.write(header)
                f.truncate(len(header) + nbytes)  # sparse where the filesystem allows
            os.replace(tmp, path / entry["file"])
        (path / INDEX_FILE).write_bytes(b"")
        progress = {"images_done": 0, "n_ok": 0, "index_bytes": 0}
        write_json_atomic(path / PROGRESS_FILE, progress, compact=True)
        return cls(path, meta, progress)

    @classmethod
    def resume(cls, path: Path, meta: dict[str, Any]) -> StoreWriter:
        """Reopen an unfinished store at its last commit (``meta`` must match the stored one)."""
        progress = read_progress(path)
        if progress["images_done"] == 0 or not all(
            (path / e["file"]).is_file() for e in meta["layers"]
        ):
            return cls.create(path, meta)
        return cls(path, meta, progress)

    def write(self, records: Sequence[ImageRecord], acts: dict[Layer, np.ndarray]) -> None:
        """Append the next input images' records and their rows (n_ok_in_batch, tokens, d)."""
        n_new = sum(r.ok for r in records)
        for layer, array in acts.items():
            if array.shape[0] != n_new or array.dtype != self._dtype:
                raise ValueError(
                    f"layer {layer}: got {array.shape} {array.dtype}, want {n_new} rows"
                )
            if n_new:
                f, offset = self._files[layer_key(layer)]
                f.seek(offset + self.n_ok * array[0].nbytes)
                f.write(np.ascontiguousarray(array).data)
        lines = b"".join(r.to_json().encode("utf-8") + b"\n" for r in records)
        self._index.write(lines)
        self.images_done += len(records)  # counters move only once everything is written
        self.n_ok += n_new
        self._index_bytes += len(lines)

    def commit(self) -> None:
        """Flush data and index to disk, then record the new resume point atomically."""
        for f, _ in self._files.values():
            f.flush()
            os.fsync(f.fileno())
        self._index.flush()
        os.fsync(self._index.fileno())
        write_json_atomic(
            self.path / PROGRESS_FILE,
            {"images_done": self.images_done, "n_ok": self.n_ok, "index_bytes": self._index_bytes},
            compact=True,
        )

    def finalize(self) -> Store:
        """Shrink every layer to the readable images, mark the store complete, and open it."""
        self.commit()
        for entry in self.meta["layers"]:
            f, offset = self._files[layer_key(entry["layer"])]
            shape = (self.n_ok, int(entry["n_tokens"]), int(entry["d"]))
            f.seek(0)
            f.write(npy_header(self._dtype, shape, total_len=offset))
            f.truncate(offset + int(np.prod(shape)) * self._dtype.itemsize)
            f.flush()
            os.fsync(f.fileno())
        self.close()
        n_total = int(self.meta["images"]["n_total"])
        self.meta["images"].update(n_ok=self.n_ok, n_skipped=n_total - self.n_ok)
        self.meta["complete"] = True
        write_json_atomic(self.path / META_FILE, self.meta, compact=True)
        (self.path / PROGRESS_FILE).unlink(missing_ok=True)
        return Store(self.path)

    def close(self) -> None:
        for f, _ in self._files.values():
            f.close()
        self._index.close()
