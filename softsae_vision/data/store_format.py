"""The activation store's on-disk vocabulary: file names, JSON and ``.npy`` headers, records.

Shared by the reader (:mod:`softsae_vision.data.store`), the writers and the validation at open.
The normative description is ``docs/formats.md``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softsae_vision._io import write_text_atomic
from softsae_vision._version import __version__
from softsae_vision.backbones.base import EMBED, Layer, TokenLayout
from softsae_vision.backbones.transform import Preprocess
from softsae_vision.errors import SoftSAEError

SCHEMA_VERSION = 1
"""The single-file-per-layer layout (``layer_<L>.npy``)."""
SHARDED_SCHEMA_VERSION = 2
"""The sharded layout (``layer_<L>/shard_*.npy`` plus ``shards.json``)."""
READABLE_SCHEMAS = (SCHEMA_VERSION, SHARDED_SCHEMA_VERSION)
FORMAT_NAME = "softsae_vision.activation_store"
META_FILE, INDEX_FILE, PROGRESS_FILE = "meta.json", "images.jsonl", "progress.json"
SHARDS_FILE = "shards.json"
LOCK_FILE = ".lock"
DTYPES = ("float16", "float32")
NPY_MAGIC = b"\x93NUMPY\x01\x00"
_STALE_TEMP = re.compile(r"^\..+\.tmp$")
_SURROGATE = re.compile("[\ud800-\udfff]")


def layer_file(layer: Layer) -> str:
    """File name of a layer's array (schema 1): ``layer_6.npy``, ``layer_embed.npy``."""
    return f"layer_{layer}.npy"


def layer_key(layer: Layer) -> str:
    """Dictionary key of a layer: ``"6"`` or ``"embed"``."""
    return str(layer)


def json_dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` keeping UTF-8 text readable and file names with undecodable bytes lossless.

    Python gives a file name with bytes that are not UTF-8 as a str with lone surrogates
    (``os.fsdecode``); those are written as ``\\udcXX`` escapes, which ``json.loads`` turns back
    into the same str, and ``os.fsencode`` into the original bytes.
    """
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def dumps_pretty(obj: Any, indent: str = "") -> str:
    """JSON with one key per line but short lists of numbers or strings kept on one line."""
    inner = indent + "  "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json_dumps(str(k))}: {dumps_pretty(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + dumps_pretty(v, inner) for v in obj) + f"\n{indent}]"
    return json_dumps(obj)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON (compact lists, one key per line) to ``path`` atomically."""
    write_text_atomic(path, dumps_pretty(obj) + "\n")


def is_stale_temporary(name: str) -> bool:
    """Whether a file name is a temporary of an interrupted atomic write (``.meta.json.x.tmp``)."""
    return bool(_STALE_TEMP.match(name))


def npy_header(dtype: np.dtype, shape: tuple[int, ...], total_len: int | None = None) -> bytes:
    """A version 1.0 ``.npy`` header, padded to ``total_len`` bytes (default: 64-byte aligned)."""
    text = repr(
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    if total_len is None:
        total_len = -(-(len(NPY_MAGIC) + 2 + len(text) + 1 + 32) // 64) * 64  # room to spare
    pad = total_len - len(NPY_MAGIC) - 2 - len(text) - 1
    if pad < 0:
        raise ValueError(f"npy header for shape {shape} does not fit in {total_len} bytes")
    body = (text + " " * pad + "\n").encode("latin1")
    return NPY_MAGIC + len(body).to_bytes(2, "little") + body


def npy_header_len(path: Path) -> int:
    """Total header length (the data offset) of a version 1.0 ``.npy`` file."""
    with open(path, "rb") as f:
        start = f.read(len(NPY_MAGIC) + 2)
    if start[: len(NPY_MAGIC)] != NPY_MAGIC:
        raise SoftSAEError(f"{path} is not a version 1.0 .npy file; the store is damaged")
    return len(NPY_MAGIC) + 2 + int.from_bytes(start[-2:], "little")


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of an ``.npy`` file; a SoftSAEError if it is not one."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except FileNotFoundError:
        raise SoftSAEError(
            f"{path} is missing; the store is incomplete: re-extract it with `softsae extract`"
        ) from None
    except (ValueError, OSError, SyntaxError) as err:
        reason = "it is empty" if path.is_file() and path.stat().st_size == 0 else str(err)
        raise SoftSAEError(
            f"{path} is not a valid .npy array ({reason}); the store is damaged: "
            "re-extract it with `softsae extract`"
        ) from None
    if fortran or dtype.hasobject:
        raise SoftSAEError(f"{path} is not a C-order numeric .npy array; the store is damaged")
    return tuple(int(s) for s in shape), dtype, offset


def check_npy_file(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Check an ``.npy`` file's header and length against ``shape``; return the data offset."""
    found, found_dtype, offset = read_npy_header(path)
    if found != tuple(shape) or found_dtype != dtype:
        raise SoftSAEError(
            f"{path} holds {found} {found_dtype}, but meta.json says {tuple(shape)} {dtype}; "
            "the store is damaged: re-extract it with `softsae extract`"
        )
    want = offset + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size != want:
        what = "truncated" if size < want else "longer than its header says"
        raise SoftSAEError(
            f"{path} is {what} ({size} of {want} bytes); the store is damaged: "
            "re-extract it with `softsae extract`"
        )
    return offset


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
        """One ``images.jsonl`` line (without the newline); undecodable names stay lossless."""
        d: dict[str, str | int | None] = {"path": self.path, "status": self.status}
        if self.ok:
            d.update(row=self.row, width=self.width, height=self.height)
        return json_dumps(d)


OK_MARK = b'"status": "ok"'
"""How ``status: ok`` appears in an ``images.jsonl`` line (counted at open, without parsing)."""


def fingerprint(paths: Sequence[str | os.PathLike]) -> str:
    """sha256 of the newline-joined paths (file-system bytes), the identity of an image list."""
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
    schema_version: int = SCHEMA_VERSION,
) -> dict[str, Any]:
    """``meta.json`` for a new, unfinished store (counts are added when it is finished).

    ``backbone`` is :meth:`Backbone.describe` (at least name, weights and n_blocks); ``kinds``
    the token types kept for block layers; ``layer_widths`` maps each layer to its width d.
    """
    types = layout.token_types()
    positions = [i for i, t in enumerate(types) if t in kinds]
    sharded = schema_version == SHARDED_SCHEMA_VERSION
    return {
        "format": FORMAT_NAME,
        "schema_version": schema_version,
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
                "file": f"layer_{layer}" if sharded else layer_file(layer),
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
            "fingerprint": fingerprint(paths),
        },
        "extraction": dict(extraction or {}),
    }
