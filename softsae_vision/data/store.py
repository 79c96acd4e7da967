"""The activation store: a self-describing folder of per-layer ``.npy`` arrays.

Layout (normative description in ``docs/formats.md``)::

    STORE/meta.json          what made the store and how to read it (schema_version 1)
    STORE/images.jsonl       one record per input image, in input order, "ok" or why not
    STORE/layer_<L>.npy      (n_ok_images, tokens, d) activations of layer L, fp16 by default
    STORE/progress.json      only while an extraction is unfinished

Each layer file is written in place (the rows of one committed chunk at a time) behind a
provisional header sized for every input image; ``progress.json`` records how far the data and
the index are durable, so an interrupted run resumes from the last commit. Finishing rewrites
the header to the number of readable images, truncates the file and marks ``meta.json``
complete: from then on ``np.load(path, mmap_mode="r")`` reads each layer without this library.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from softsae_vision._io import write_text_atomic
from softsae_vision._version import __version__
from softsae_vision.backbones.base import EMBED, Layer, TokenLayout
from softsae_vision.backbones.transform import Preprocess
from softsae_vision.errors import SoftSAEError

SCHEMA_VERSION = 1
FORMAT_NAME = "softsae_vision.activation_store"
META_FILE, INDEX_FILE, PROGRESS_FILE = "meta.json", "images.jsonl", "progress.json"
DTYPES = ("float16", "float32")
_NPY_MAGIC = b"\x93NUMPY\x01\x00"


def layer_file(layer: Layer) -> str:
    """File name of a layer's array: ``layer_6.npy``, ``layer_embed.npy``."""
    return f"layer_{layer}.npy"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON (compact lists, one key per line) to ``path`` atomically."""
    write_text_atomic(path, _dumps(obj) + "\n")


def _dumps(obj: Any, indent: str = "") -> str:
    """JSON with one key per line but short lists of numbers or strings kept on one line."""
    inner = indent + "  "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {_dumps(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in obj) + f"\n{indent}]"
    return json.dumps(obj, ensure_ascii=False)


def _npy_header(dtype: np.dtype, shape: tuple[int, ...], total_len: int | None = None) -> bytes:
    """A version 1.0 ``.npy`` header, padded to ``total_len`` bytes (default: 64-byte aligned)."""
    text = repr(
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    if total_len is None:
        total_len = -(-(len(_NPY_MAGIC) + 2 + len(text) + 1 + 32) // 64) * 64  # room to spare
    pad = total_len - len(_NPY_MAGIC) - 2 - len(text) - 1
    if pad < 0:
        raise ValueError(f"npy header for shape {shape} does not fit in {total_len} bytes")
    body = (text + " " * pad + "\n").encode("latin1")
    return _NPY_MAGIC + len(body).to_bytes(2, "little") + body


def _npy_header_len(path: Path) -> int:
    """Total header length (the data offset) of a version 1.0 ``.npy`` file."""
    with open(path, "rb") as f:
        start = f.read(len(_NPY_MAGIC) + 2)
    if start[: len(_NPY_MAGIC)] != _NPY_MAGIC:
        raise SoftSAEError(f"{path} is not a version 1.0 .npy file; the store is damaged")
    return len(_NPY_MAGIC) + 2 + int.from_bytes(start[-2:], "little")


@dataclass(frozen=True)
class ImageRecord:
    """One input image: its path, "ok" or the reason it was skipped, and its row if stored."""

    path: str
    status: str
    row: int | None = None
    width: int | None = None
    height: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> str:
        d = {"path": self.path, "status": self.status}
        if self.ok:
            d.update(row=self.row, width=self.width, height=self.height)
        return json.dumps(d, ensure_ascii=False)


def _layer_key(layer: Layer) -> str:
    return str(layer)


class Store:
    """A finished activation store, opened read-only; arrays are memory-mapped on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta: dict[str, Any] = read_meta(self.path)
        if not self.meta.get("complete"):
            done = _read_progress(self.path).get("images_done", 0)
            total = self.meta["images"]["n_total"]
            raise SoftSAEError(
                f"{self.path} is an unfinished store ({done} of {total} images extracted); "
                "re-run the same `softsae extract` command to finish it"
            )
        self._layers = {_layer_key(e["layer"]): e for e in self.meta["layers"]}
        self._images: list[ImageRecord] | None = None
        self._ok_images: list[str] | None = None
        self._arrays: dict[str, np.ndarray] = {}

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

    @property
    def images(self) -> list[ImageRecord]:
        """One record per input image in input order, skipped ones included."""
        if self._images is None:
            with open(self.path / INDEX_FILE, encoding="utf-8") as f:
                self._images = [ImageRecord(**json.loads(line)) for line in f if line.strip()]
        return self._images

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
        key = str(layer).strip().lower()
        if key != EMBED:
            try:
                index = int(key)
            except ValueError:
                raise SoftSAEError(
                    f"unknown layer {layer!r}; {self.path} holds {available}"
                ) from None
            key = str(index % self.meta["backbone"]["n_blocks"] if index < 0 else index)
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

    def activations(self, layer: Layer | None = None) -> np.ndarray:
        """Read-only memory map of a layer, (n_images, tokens, d), rows in ``ok_images`` order."""
        key = _layer_key(self.resolve_layer(layer))
        if key not in self._arrays:
            file = self.path / self._layers[key]["file"]
            try:
                array = np.load(file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                raise SoftSAEError(f"cannot read {file} ({err}); the store is damaged") from None
            expected = (self.n_images, self._layers[key]["n_tokens"], self._layers[key]["d"])
            if array.shape != expected:
                raise SoftSAEError(f"{file} has shape {array.shape}, meta.json says {expected}")
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


def open_store(path: str | os.PathLike) -> Store:
    """Open a finished activation store made by ``softsae extract``."""
    return Store(path)


def read_meta(path: Path) -> dict[str, Any]:
    """Parse and version-check ``meta.json`` of a store folder."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        if not Path(path).exists():
            raise SoftSAEError(f"no such activation store: {path}; make one with `softsae extract`")
        raise SoftSAEError(f"{path} is not an activation store (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SoftSAEError(f"{meta_path} is not valid JSON ({err}); the store is damaged") from None
    if meta.get("format") != FORMAT_NAME:
        raise SoftSAEError(f"{meta_path} does not describe an activation store")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SoftSAEError(
            f"{path} has store schema_version {version}; this softsae_vision reads version "
            f"{SCHEMA_VERSION}: upgrade softsae_vision or re-extract"
        )
    return meta


def _read_progress(path: Path) -> dict[str, int]:
    try:
        return json.loads((path / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {"images_done": 0, "n_ok": 0, "index_bytes": 0}


def _fingerprint(paths: Sequence[str | os.PathLike]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(str(p).encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def new_meta(
    backbone: dict[str, Any],
    transform: Preprocess,
    layout: TokenLayout,
    kinds: Sequence[str],
    layer_widths: dict[Layer, int],
    dtype: str,
    source: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    extraction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``meta.json`` for a new, unfinished store (counts are added when it is finished).

    ``backbone`` is :meth:`Backbone.describe` (at least name, weights and n_blocks); ``kinds``
    the token types kept for block layers; ``layer_widths`` maps each layer to its width d.
    """
    types = layout.token_types()
    positions = [i for i, t in enumerate(types) if t in kinds]
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "library_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backbone": dict(backbone),
        "transform": transform.to_dict(),
        "token_layout": {
            "n_cls": layout.n_cls,
            "n_reg": layout.n_reg,
            "grid": list(layout.grid),
            "tokens": list(kinds),
            "positions": positions,
            "token_types": [types[p] for p in positions],
        },
        "layers": [
            {
                "layer": layer,
                "file": layer_file(layer),
                "n_tokens": 1 if layer == EMBED else len(positions),
                "d": int(d),
            }
            for layer, d in layer_widths.items()
        ],
        "dtype": dtype,
        "images": {
            "source": str(Path(source).resolve()),
            "index": INDEX_FILE,
            "n_total": len(paths),
            "fingerprint": _fingerprint(paths),
        },
        "extraction": dict(extraction or {}),
    }


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
            self._files[_layer_key(entry["layer"])] = (f, _npy_header_len(path / entry["file"]))
        index = path / INDEX_FILE
        self._index_bytes = int(progress["index_bytes"])
        with open(index, "ab") as f:
            f.truncate(self._index_bytes)  # drop records written after the last commit
        self._index = open(index, "ab")  # noqa: SIM115 - closed in close()

    @classmethod
    def create(cls, path: Path, meta: dict[str, Any]) -> StoreWriter:
        """Start a new store (``meta.json`` first, so a crash right after still resumes)."""
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / META_FILE, meta)
        n_total = int(meta["images"]["n_total"])
        for entry in meta["layers"]:
            shape = (n_total, int(entry["n_tokens"]), int(entry["d"]))
            nbytes = int(np.prod(shape)) * np.dtype(meta["dtype"]).itemsize
            tmp = path / f".{entry['file']}.tmp"
            with open(tmp, "wb") as f:
                header = _npy_header(np.dtype(meta["dtype"]), shape)
                f.write(header)
                f.truncate(len(header) + nbytes)  # sparse where the filesystem allows
            os.replace(tmp, path / entry["file"])
        (path / INDEX_FILE).write_bytes(b"")
        progress = {"images_done": 0, "n_ok": 0, "index_bytes": 0}
        write_json_atomic(path / PROGRESS_FILE, progress)
        return cls(path, meta, progress)

    @classmethod
    def resume(cls, path: Path, meta: dict[str, Any]) -> StoreWriter:
        """Reopen an unfinished store at its last commit (``meta`` must match the stored one)."""
        progress = _read_progress(path)
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
                f, offset = self._files[_layer_key(layer)]
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
        )

    def finalize(self) -> Store:
        """Shrink every layer to the readable images, mark the store complete, and open it."""
        self.commit()
        for entry in self.meta["layers"]:
            f, offset = self._files[_layer_key(entry["layer"])]
            shape = (self.n_ok, int(entry["n_tokens"]), int(entry["d"]))
            f.seek(0)
            f.write(_npy_header(self._dtype, shape, total_len=offset))
            f.truncate(offset + int(np.prod(shape)) * self._dtype.itemsize)
            f.flush()
            os.fsync(f.fileno())
        self.close()
        n_total = int(self.meta["images"]["n_total"])
        self.meta["images"].update(n_ok=self.n_ok, n_skipped=n_total - self.n_ok)
        self.meta["complete"] = True
        write_json_atomic(self.path / META_FILE, self.meta)
        (self.path / PROGRESS_FILE).unlink(missing_ok=True)
        return Store(self.path)

    def close(self) -> None:
        for f, _ in self._files.values():
            f.close()
        self._index.close()
