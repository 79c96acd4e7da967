"""The activation store: a self-describing folder of per-layer ``.npy`` arrays, opened read-only.

Layout (normative description in ``docs/formats.md``)::

    STORE/meta.json          what made the store and how to read it (schema_version 1 or 2)
    STORE/images.jsonl       one record per input image, in input order, "ok" or why not
    STORE/layer_<L>.npy      schema 1: (n_ok_images, tokens, d) activations of layer L
    STORE/layer_<L>/*.npy    schema 2: the same rows split into bounded shards ...
    STORE/shards.json        ... listed in row order, per layer
    STORE/progress.json      only while an extraction is unfinished (``parts/`` for schema 2)

Opening checks what is cheap to check (see :func:`open_store`), so a damaged or inconsistent
store fails with one :class:`SoftSAEError` naming the file, never later with a traceback or,
worse, silently wrong rows.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from softsae_vision import _io
from softsae_vision._deprecated import deprecated
from softsae_vision.backbones.transform import Preprocess
from softsae_vision.data.sharded import ShardedArray, read_shard_table
from softsae_vision.data.store_check import FIX, check_meta, count_index, damaged, read_progress
from softsae_vision.data.store_format import (
    DTYPES,
    FORMAT_NAME,
    INDEX_FILE,
    META_FILE,
    PROGRESS_FILE,
    READABLE_SCHEMAS,
    SCHEMA_VERSION,
    SHARDED_SCHEMA_VERSION,
    ImageRecord,
    check_npy_file,
    fingerprint,
    layer_file,
    layer_key,
    new_meta,
)
from softsae_vision.errors import SoftSAEError
from softsae_vision.vocab import EMBED, Layer, resolve_layer_index

__all__ = [
    "DTYPES",
    "INDEX_FILE",
    "META_FILE",
    "PROGRESS_FILE",
    "SCHEMA_VERSION",
    "SHARDED_SCHEMA_VERSION",
    "ImageRecord",
    "Store",
    "layer_file",
    "new_meta",
    "open_store",
    "read_meta",
    "read_progress",
]

FINITE_SAMPLE_ROWS = 8
"""Rows per layer (evenly spaced, first and last included) checked for NaN/inf when read."""


class Store:
    """A finished activation store, opened read-only; arrays are memory-mapped on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta: dict[str, Any] = read_meta(self.path)
        if not self.meta.get("complete"):
            done = _images_done(self.path, self.meta)
            total = self.meta["images"]["n_total"]
            raise SoftSAEError(
                f"{self.path} is an unfinished store ({done} of {total} images extracted); "
                "re-run the same `softsae extract` command to finish it"
            )
        self._layers = {layer_key(e["layer"]): e for e in self.meta["layers"]}
        self._images: list[ImageRecord] | None = None
        self._ok_images: list[str] | None = None
        self._arrays: dict[str, np.ndarray | ShardedArray] = {}
        self._check_index_counts()
        self._shards = None
        if self.schema_version == SHARDED_SCHEMA_VERSION:
            self._shards = read_shard_table(self.path, self.meta)
        else:
            dtype = np.dtype(self.meta["dtype"])
            for entry in self.meta["layers"]:
                shape = (self.n_images, entry["n_tokens"], entry["d"])
                check_npy_file(self.path / entry["file"], shape, dtype)

    @property
    def schema_version(self) -> int:
        """1: one ``.npy`` per layer; 2: each layer in bounded ``.npy`` shards."""
        return int(self.meta["schema_version"])

    @property
    def layers(self) -> list[Layer]:
        """Stored layers: block indices (>= 0) and/or ``"embed"``."""
        return [e["layer"] for e in self.meta["layers"]]

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (h, w) of the block layers."""
        h, w = self.meta["token_layout"]["grid"]
        return int(h), int(w)

    @property
    def token_types(self) -> list[str]:
        """Type of each stored token position of the block layers: cls, register or patch."""
        return list(self.meta["token_layout"]["token_types"])

    @property
    def transform(self) -> Preprocess:
        """The preprocessing the backbone saw (resize, crop, normalisation)."""
        return Preprocess.from_dict(self.meta["transform"])

    @property
    def backbone(self) -> str:
        return self.meta["backbone"]["name"]

    @property
    def n_images(self) -> int:
        """Number of stored (readable) images, the first axis of every layer array."""
        return int(self.meta["images"]["n_ok"])

    def _check_index_counts(self) -> None:
        """Records and ``ok`` records of the index against meta.json, without parsing it."""
        index = self.path / INDEX_FILE
        n_lines, n_ok = count_index(index)
        n_total = self.meta["images"]["n_total"]
        if (n_lines, n_ok) != (n_total, self.n_images):
            raise damaged(
                index,
                f"{n_lines} records ({n_ok} stored images), but meta.json says {n_total} "
                f"({self.n_images} stored)",
            )

    @property
    def images(self) -> list[ImageRecord]:
        """One record per input image in input order, skipped ones included."""
        if self._images is None:
            self._images = self._read_index()
        return self._images

    def _read_index(self) -> list[ImageRecord]:
        """Parse ``images.jsonl`` and check it against meta.json: counts, rows, fingerprint."""
        index = self.path / INDEX_FILE
        records, number = [], 0
        try:
            with open(index, encoding="utf-8") as f:
                for line in f:
                    number += 1
                    if line.strip():
                        records.append(ImageRecord(**json.loads(line)))
        except (ValueError, TypeError) as err:
            raise damaged(index, f"record {number} is malformed ({err})") from None
        n_total = self.meta["images"]["n_total"]
        ok_rows = [r.row for r in records if r.ok]
        if len(records) != n_total or len(ok_rows) != self.n_images:
            raise damaged(
                index,
                f"{len(records)} records ({len(ok_rows)} stored images), but meta.json says "
                f"{n_total} ({self.n_images} stored)",
            )
        if ok_rows != list(range(self.n_images)):
            raise damaged(index, "stored images' rows are not 0, 1, 2, ... in order")
        if fingerprint([r.path for r in records]) != self.meta["images"]["fingerprint"]:
            raise damaged(index, "its image list does not match meta.json's fingerprint")
        return records

    @property
    def ok_images(self) -> list[str]:
        """Paths of the stored images in row order (built once: :meth:`view` indexes it per row).

        The list is shared between calls; do not modify it.
        """
        if self._ok_images is None:
            self._ok_images = [r.path for r in self.images if r.ok]
        return self._ok_images

    def resolve_layer(self, layer: Layer | None) -> Layer:
        """The stored layer meant by ``layer`` (int, "6", "-1", "embed"; None if only one)."""
        available = ", ".join(str(x) for x in self.layers)
        if layer is None:
            if len(self.layers) == 1:
                return self.layers[0]
            raise SoftSAEError(
                f"{self.path} holds several layers ({available}); pick one with --layer"
            )
        try:
            key = layer_key(
                resolve_layer_index(layer, self.meta["backbone"]["n_blocks"], self.backbone)
            )
        except SoftSAEError as err:
            raise SoftSAEError(f"{err}; {self.path} holds {available}") from None
        if key not in self._layers:
            raise SoftSAEError(f"layer {layer} is not in {self.path}; it holds {available}")
        return self._layers[key]["layer"]

    def layer_token_types(self, layer: Layer) -> list[str]:
        """Token types along axis 1 of ``activations(layer)``: ["embed"] for the embed layer."""
        return ["embed"] if self.resolve_layer(layer) == EMBED else self.token_types

    def token_indices(self, kind: str, layer: Layer | None = None) -> np.ndarray:
        """Positions (along axis 1) of tokens of one type ("cls", "register", "patch", "embed")."""
        types = self.token_types if layer is None else self.layer_token_types(layer)
        return np.array([i for i, t in enumerate(types) if t == kind], dtype=np.int64)

    def activations(self, layer: Layer | None = None) -> np.ndarray | ShardedArray:
        """A layer's rows (n_images, tokens, d) in ``ok_images`` order, read lazily.

        Schema 1: a read-only ``np.memmap``. Schema 2: a :class:`ShardedArray` with ``.shape``,
        ``.dtype``, row slicing and integer-array indexing on the first axis, reading only the
        shards it needs. Either way a sample of rows is checked for NaN/inf on first access.
        """
        key = layer_key(self.resolve_layer(layer))
        if key not in self._arrays:
            entry = self._layers[key]
            if self._shards is not None:
                array = ShardedArray(
                    self._shards[key], entry["n_tokens"], entry["d"], np.dtype(self.meta["dtype"])
                )
                where = self.path / entry["file"]
            else:
                where = self.path / entry["file"]
                try:
                    array = np.load(where, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as err:
                    raise damaged(where, f"cannot be memory-mapped ({err})") from None
            _check_finite_sample(array, where)
            self._arrays[key] = array
        return self._arrays[key]

    def view(self, row: int) -> Image.Image:
        """The stored image of ``row`` as the model saw it: resized and cropped RGB."""
        from softsae_vision.data.images import load_image

        return self.transform.view(load_image(self.ok_images[row]))

    def view_array(self, row: int) -> np.ndarray:
        """:meth:`view` as a (H, W, 3) uint8 array."""
        return np.asarray(self.view(row), dtype=np.uint8)

    def __repr__(self) -> str:
        return (
            f"Store({str(self.path)!r}, backbone={self.backbone!r}, layers={self.layers}, "
            f"images={self.n_images}, tokens={len(self.token_types)}, grid={self.grid})"
        )


def _check_finite_sample(array: np.ndarray | ShardedArray, where: Path) -> None:
    """NaN or inf in a few evenly spaced rows: a garbled file (extraction never stores them)."""
    n = array.shape[0]
    if n == 0:
        return
    rows = np.unique(np.linspace(0, n - 1, min(n, FINITE_SAMPLE_ROWS)).round().astype(np.int64))
    sample = np.asarray(array[rows])
    if not np.isfinite(sample).all():
        bad = rows[~np.isfinite(sample).reshape(len(rows), -1).all(axis=1)]
        raise damaged(where, f"row {int(bad[0])} holds NaN or infinite values")


def open_store(path: str | os.PathLike) -> Store:
    """Open a finished activation store made by ``softsae extract`` (schema 1 or 2).

    Checked at open: every key and type of ``meta.json``; the token types against each layer's
    token count; every layer file (or shard) exists, is a real ``.npy`` of the shape and dtype
    meta.json gives and has exactly the bytes its header promises; the number of index records
    and of stored images against meta.json. Checked on first use: the index's rows and image
    fingerprint (:attr:`Store.images`), and a sample of each layer's rows for NaN/inf.
    """
    return Store(path)


def read_meta(path: Path) -> dict[str, Any]:
    """Parse, version-check and validate ``meta.json`` of a store folder."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        if not Path(path).exists():
            raise SoftSAEError(f"no such activation store: {path}; make one with `softsae extract`")
        raise SoftSAEError(f"{path} is not an activation store (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise SoftSAEError(f"{meta_path} is not valid JSON ({err}); {FIX}") from None
    except OSError as err:
        raise SoftSAEError(f"cannot read {meta_path}: {err.strerror}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise SoftSAEError(f"{meta_path} does not describe an activation store")
    version = meta.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise SoftSAEError(
            f"{path} has store schema_version {version}; this softsae_vision reads versions "
            f"{', '.join(map(str, READABLE_SCHEMAS))}: upgrade softsae_vision or re-extract"
        )
    check_meta(meta, meta_path)
    return meta


def _images_done(path: Path, meta: dict[str, Any]) -> int:
    """Images an unfinished store has durably processed (over every rank for schema 2)."""
    if meta["schema_version"] == SCHEMA_VERSION:
        return read_progress(path)["images_done"]
    from softsae_vision.data.shard_writer import PARTS_DIR, read_rank_progress

    ranks = meta.get("extraction", {}).get("world_size", 1)
    if not (path / PARTS_DIR).is_dir():
        return 0
    return sum(int(read_rank_progress(path, r).get("images_done", 0)) for r in range(ranks))


def __getattr__(name: str) -> Any:
    if name == "write_json_atomic":  # the store's JSON layout is _io's compact one
        new = "softsae_vision._io.write_json_atomic(path, obj, compact=True)"
        return deprecated(f"{__name__}.{name}", new, partial(_io.write_json_atomic, compact=True))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
