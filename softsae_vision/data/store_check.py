"""Validation of a store's ``meta.json`` and index when it is opened.

Every malformed or inconsistent file becomes one :class:`SoftSAEError` naming the file and the
fix, never a ``KeyError`` or ``TypeError`` from deep inside a reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from softsae_vision.backbones.transform import Preprocess
from softsae_vision.data.store_format import DTYPES, INDEX_FILE, OK_MARK, PROGRESS_FILE
from softsae_vision.errors import SoftSAEError
from softsae_vision.vocab import EMBED, TOKEN_KINDS

FIX = "the store is damaged: re-extract it with `softsae extract`"


def damaged(path: Path, what: str) -> SoftSAEError:
    """The error for a damaged store file."""
    return SoftSAEError(f"{path}: {what}; {FIX}")


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _field(meta: dict, path: Path, key: str, kind: type) -> Any:
    value = meta.get(key)
    if not isinstance(value, kind):
        raise damaged(path, f"{key!r} is missing or not a {kind.__name__} (got {value!r:.60})")
    return value


def _plain_name(name: Any) -> bool:
    """A file name inside the store folder: no separators, no parent references."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and ("\\" not in name)
    )


def check_meta(meta: Any, path: Path) -> None:
    """Check every key a reader relies on (types, ranges, cross-references) in ``meta.json``."""
    if not isinstance(meta, dict):
        raise damaged(path, "not a JSON object")
    if not isinstance(meta.get("complete"), bool):
        raise damaged(path, "'complete' is missing or not true/false")
    backbone = _field(meta, path, "backbone", dict)
    if not isinstance(backbone.get("name"), str) or not _is_int(backbone.get("n_blocks"), 1):
        raise damaged(path, "'backbone' needs a 'name' and a positive 'n_blocks'")
    n_blocks = backbone["n_blocks"]
    try:
        Preprocess.from_dict(_field(meta, path, "transform", dict))
    except (TypeError, ValueError, SoftSAEError) as err:
        raise damaged(path, f"'transform' is malformed ({err})") from None
    layout = _field(meta, path, "token_layout", dict)
    grid = layout.get("grid")
    if not (isinstance(grid, list) and len(grid) == 2 and all(_is_int(g, 1) for g in grid)):
        raise damaged(path, f"'token_layout.grid' must be two positive integers, got {grid!r}")
    if not (_is_int(layout.get("n_cls")) and _is_int(layout.get("n_reg"))):
        raise damaged(path, "'token_layout' needs integer 'n_cls' and 'n_reg'")
    types, positions = layout.get("token_types"), layout.get("positions")
    if not isinstance(types, list) or not all(t in TOKEN_KINDS for t in types):
        raise damaged(path, f"'token_layout.token_types' must list {', '.join(TOKEN_KINDS)}")
    if not isinstance(positions, list) or not all(_is_int(p) for p in positions):
        raise damaged(path, "'token_layout.positions' must be a list of token indices")
    if len(positions) != len(types) or not types:
        raise damaged(
            path,
            f"'token_layout' lists {len(types)} token types for {len(positions)} positions",
        )
    if not isinstance(layout.get("tokens"), list):
        raise damaged(path, "'token_layout.tokens' must be a list of token types")
    if meta.get("dtype") not in DTYPES:
        raise damaged(
            path, f"'dtype' must be one of {', '.join(DTYPES)}, got {meta.get('dtype')!r}"
        )
    layers = _field(meta, path, "layers", list)
    if not layers:
        raise damaged(path, "'layers' is empty")
    seen = set()
    for entry in layers:
        if not isinstance(entry, dict):
            raise damaged(path, f"a 'layers' entry is not an object: {entry!r:.60}")
        layer = entry.get("layer")
        if not (layer == EMBED or (_is_int(layer) and layer < n_blocks)):
            raise damaged(path, f"layer {layer!r} is neither 0..{n_blocks - 1} nor 'embed'")
        if str(layer) in seen:
            raise damaged(path, f"layer {layer} is listed twice")
        seen.add(str(layer))
        if not _plain_name(entry.get("file")):
            raise damaged(path, f"layer {layer}: 'file' must be a file name in the store")
        if not (_is_int(entry.get("n_tokens"), 1) and _is_int(entry.get("d"), 1)):
            raise damaged(path, f"layer {layer}: 'n_tokens' and 'd' must be positive integers")
        want = 1 if layer == EMBED else len(types)
        if entry["n_tokens"] != want:
            raise damaged(
                path,
                f"layer {layer} has {entry['n_tokens']} tokens but token_types lists {want}",
            )
    images = _field(meta, path, "images", dict)
    if images.get("index") != INDEX_FILE:
        raise damaged(path, f"'images.index' must be {INDEX_FILE!r}")
    if not _is_int(images.get("n_total")) or not isinstance(images.get("fingerprint"), str):
        raise damaged(path, "'images' needs an integer 'n_total' and a 'fingerprint'")
    if meta["complete"]:
        n_ok = images.get("n_ok")
        if not _is_int(n_ok) or n_ok > images["n_total"]:
            raise damaged(path, f"'images.n_ok' must be an integer in 0..n_total, got {n_ok!r}")


def count_index(path: Path, chunk_bytes: int = 1 << 24) -> tuple[int, int]:
    """(records, records with status ok) of an ``images.jsonl``, counted without parsing it."""
    lines = ok = 0
    tail = b""
    keep = len(OK_MARK) - 1
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk_bytes):
                lines += block.count(b"\n")
                data = tail + block
                ok += data.count(OK_MARK)
                tail = data[-keep:]  # shorter than a mark: one straddling blocks counts once
    except FileNotFoundError:
        raise damaged(path, "the image index is missing") from None
    return lines, ok


def read_progress(path: Path) -> dict[str, int]:
    """The resume point of an unfinished schema-1 store (zeros if there is none yet)."""
    try:
        progress = json.loads((path / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {"images_done": 0, "n_ok": 0, "index_bytes": 0}
    keys = ("images_done", "n_ok", "index_bytes")
    if not isinstance(progress, dict) or not all(
        isinstance(progress.get(k), int) and progress[k] >= 0 for k in keys
    ):
        raise damaged(path / PROGRESS_FILE, "malformed resume point")
    return progress
