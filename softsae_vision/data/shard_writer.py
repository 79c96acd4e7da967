"""Writing a sharded (schema 2) store: one writer per rank, then one finalisation.

Rank ``r`` of ``W`` owns a contiguous share of the input images (whole batches), writes its rows
into its own shards ``layer_<L>/r<rrr>_<kkkkk>.npy`` (at most ``shard_bytes`` each) and its
records and resume point under ``parts/``. Concatenating the ranks' shards in rank order gives
the rows in input order, so a store made by W processes equals one made by a single process.
:func:`finalize_store` (run once, after every rank is done) merges the index, lists the shards
in ``shards.json`` and marks ``meta.json`` complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from softsae_vision._io import atomic_write, json_dumps, write_json_atomic
from softsae_vision.data.store_check import damaged
from softsae_vision.data.store_format import (
    INDEX_FILE,
    META_FILE,
    SHARDS_FILE,
    ImageRecord,
    layer_key,
    npy_header,
)
from softsae_vision.errors import SoftSAEError
from softsae_vision.vocab import Layer

PARTS_DIR = "parts"
DEFAULT_SHARD_BYTES = 2 << 30
"""Default upper bound on one shard file (2 GiB)."""


def rank_share(n_images: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Images [begin, end) of rank ``rank``: a contiguous run of whole batches, balanced."""
    n_batches = -(-n_images // batch_size)
    first, last = rank * n_batches // world, (rank + 1) * n_batches // world
    return min(first * batch_size, n_images), min(last * batch_size, n_images)


def shard_rows(meta: dict[str, Any], entry: dict[str, Any]) -> int:
    """Rows per shard of a layer: as many as fit in ``shard_bytes`` (at least one)."""
    row_bytes = entry["n_tokens"] * entry["d"] * np.dtype(meta["dtype"]).itemsize
    return max(1, int(meta["shard_bytes"]) // row_bytes)


def shard_name(entry: dict[str, Any], rank: int, k: int) -> str:
    """Relative path of shard ``k`` of rank ``rank`` of a layer."""
    return f"{entry['file']}/r{rank:03d}_{k:05d}.npy"


def _progress_path(path: Path, rank: int) -> Path:
    return path / PARTS_DIR / f"rank{rank:03d}.json"


def _index_path(path: Path, rank: int) -> Path:
    return path / PARTS_DIR / f"rank{rank:03d}.jsonl"


def read_rank_progress(path: Path, rank: int) -> dict[str, Any]:
    """A rank's resume point (zeros if it has none yet)."""
    file = _progress_path(path, rank)
    try:
        progress = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"images_done": 0, "n_ok": 0, "index_bytes": 0, "done": False}
    except ValueError:
        raise damaged(file, "malformed resume point") from None
    return progress


class ShardWriter:
    """Writes one rank's share of a schema-2 store; :meth:`commit` makes it durable.

    ``images_done`` counts the share's images already processed, ``n_ok`` the rows written;
    a resumed writer continues from the last commit, overwriting anything written after it.
    """

    def __init__(self, path: Path, meta: dict[str, Any], rank: int, share: tuple[int, int]):
        self.path, self.meta, self.rank, self.share = path, meta, rank, share
        (path / PARTS_DIR).mkdir(exist_ok=True)
        for entry in meta["layers"]:
            (path / entry["file"]).mkdir(exist_ok=True)
        progress = read_rank_progress(path, rank)
        self.images_done = int(progress["images_done"])
        self.n_ok = int(progress["n_ok"])
        self.done = bool(progress.get("done"))
        self._index_bytes = int(progress["index_bytes"])
        self._dtype = np.dtype(meta["dtype"])
        self._entries = {layer_key(e["layer"]): e for e in meta["layers"]}
        self._caps = {key: shard_rows(meta, e) for key, e in self._entries.items()}
        self._open: dict[str, tuple[int, Any, int]] = {}  # key -> (k, file, data offset)
        index = _index_path(path, rank)
        with open(index, "ab") as f:
            f.truncate(self._index_bytes)  # drop records written after the last commit
        self._index = open(index, "ab")  # noqa: SIM115 - closed in close()

    @property
    def first_image(self) -> int:
        """Input index of the next image this rank processes."""
        return self.share[0] + self.images_done

    def _shard(self, key: str, k: int) -> tuple[Any, int]:
        """Shard ``k`` of a layer, opened (created at full provisional size if new)."""
        current = self._open.get(key)
        if current is not None and current[0] == k:
            return current[1], current[2]
        if current is not None:
            current[1].close()
        entry, cap = self._entries[key], self._caps[key]
        file = self.path / shard_name(entry, self.rank, k)
        shape = (cap, entry["n_tokens"], entry["d"])
        header = npy_header(self._dtype, shape)
        f = open(file, "r+b" if file.exists() else "w+b")  # noqa: SIM115 - closed later
        f.write(header)
        f.truncate(len(header) + int(np.prod(shape)) * self._dtype.itemsize)  # sparse
        self._open[key] = (k, f, len(header))
        return f, len(header)

    def write(self, records: Sequence[ImageRecord], acts: dict[Layer, np.ndarray]) -> None:
        """Append the next images' records (rows local to this rank) and their activations."""
        n_new = sum(r.ok for r in records)
        for layer, array in acts.items():
            key = layer_key(layer)
            if array.shape[0] != n_new or array.dtype != self._dtype:
                raise ValueError(f"layer {layer}: got {array.shape} {array.dtype}, want {n_new}")
            cap, at = self._caps[key], 0
            while at < n_new:
                row = self.n_ok + at
                k, local = divmod(row, cap)
                take = min(n_new - at, cap - local)
                f, offset = self._shard(key, k)
                f.seek(offset + local * array[0].nbytes)
                f.write(np.ascontiguousarray(array[at : at + take]).data)
                at += take
        lines = b"".join(r.to_json().encode("utf-8") + b"\n" for r in records)
        self._index.write(lines)
        self.images_done += len(records)
        self.n_ok += n_new
        self._index_bytes += len(lines)

    def _progress(self, done: bool = False) -> dict[str, Any]:
        return {
            "images_done": self.images_done,
            "n_ok": self.n_ok,
            "index_bytes": self._index_bytes,
            "done": done,
            "share": list(self.share),
        }

    def commit(self) -> None:
        """Flush shards and index to disk, then record the new resume point atomically."""
        for _, f, _ in self._open.values():
            f.flush()
            os.fsync(f.fileno())
        self._index.flush()
        os.fsync(self._index.fileno())
        write_json_atomic(_progress_path(self.path, self.rank), self._progress(), compact=True)

    def finish(self) -> None:
        """Cut this rank's last shard to its rows, drop shards past it, mark the rank done."""
        self.commit()
        for _, f, _ in self._open.values():
            f.close()
        self._open.clear()
        for key, entry in self._entries.items():
            cap = self._caps[key]
            n_shards = -(-self.n_ok // cap)
            if n_shards:
                file = self.path / shard_name(entry, self.rank, n_shards - 1)
                rows = self.n_ok - (n_shards - 1) * cap
                shape = (rows, entry["n_tokens"], entry["d"])
                full = npy_header(self._dtype, (cap, entry["n_tokens"], entry["d"]))
                with open(file, "r+b") as f:
                    f.write(npy_header(self._dtype, shape, total_len=len(full)))
                    f.truncate(len(full) + int(np.prod(shape)) * self._dtype.itemsize)
                    f.flush()
                    os.fsync(f.fileno())
            prefix = f"r{self.rank:03d}_"
            for stale in (self.path / entry["file"]).glob(f"{prefix}*.npy"):
                if int(stale.stem[len(prefix) :]) >= n_shards:  # written after a lost commit
                    stale.unlink()
        write_json_atomic(
            _progress_path(self.path, self.rank), self._progress(done=True), compact=True
        )
        self.done = True
        self.close()

    def close(self) -> None:
        for _, f, _ in self._open.values():
            f.close()
        self._open.clear()
        self._index.close()


def finalize_store(path: Path, meta: dict[str, Any], world: int) -> None:
    """Merge every rank's index and shards into the finished store (once, after all ranks)."""
    progress = [read_rank_progress(path, r) for r in range(world)]
    missing = [r for r, p in enumerate(progress) if not p.get("done")]
    if missing:
        raise SoftSAEError(
            f"{path}: ranks {missing} have not finished; re-run the same command to finish them"
        )
    shards: dict[str, list[dict[str, Any]]] = {}
    for entry in meta["layers"]:
        key, cap = layer_key(entry["layer"]), shard_rows(meta, entry)
        listed = []
        for r, p in enumerate(progress):
            n_ok = int(p["n_ok"])
            for k in range(-(-n_ok // cap)):
                listed.append({"file": shard_name(entry, r, k), "rows": min(cap, n_ok - k * cap)})
        shards[key] = listed

    def merge(tmp: str) -> None:
        offset = 0
        with open(tmp, "wb") as out:
            for r, p in enumerate(progress):
                with open(_index_path(path, r), "rb") as f:
                    data = f.read(int(p["index_bytes"]))
                for line in data.splitlines():
                    record = json.loads(line)
                    if record.get("row") is not None:
                        record["row"] += offset
                    out.write(json_dumps(record).encode("utf-8") + b"\n")
                offset += int(p["n_ok"])

    atomic_write(path / INDEX_FILE, merge)
    write_json_atomic(path / SHARDS_FILE, {"schema_version": 2, "layers": shards}, compact=True)
    n_ok = sum(int(p["n_ok"]) for p in progress)
    n_total = int(meta["images"]["n_total"])
    meta["images"].update(n_ok=n_ok, n_skipped=n_total - n_ok)
    meta["complete"] = True
    write_json_atomic(path / META_FILE, meta, compact=True)
    shutil.rmtree(path / PARTS_DIR, ignore_errors=True)
