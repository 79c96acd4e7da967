"""Other tools' activation files as training data, memory-mapped (never copied into memory).

- **saev shard directories** (protocol 1.x): ``metadata.json`` (``layers``,
  ``n_patches_per_img``, ``cls_token``, ``d_vit``, ``n_imgs``, ``max_patches_per_shard``),
  optional ``shards.json`` (images per shard) and headerless float32 shards ``acts000000.bin``,
  each of shape (images, layers, tokens, d) with the CLS token first when ``cls_token``.
- **MSAE memmaps**: one headerless float32 file whose name ends in ``_{N}_{d}`` (before any
  suffix, ``.npy`` included), e.g. ``cc3m_ViT-L~14_train_image_2905954_768.npy``.

Both become an :class:`~softsae_vision.data.arrays.ArraySource` over rows (N, d).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from softsae_vision.data.arrays import ArraySource
from softsae_vision.errors import SoftSAEError

NPY_MAGIC = b"\x93NUMPY"
_MSAE_NAME = re.compile(r"_(\d+)_(\d+)(\.[A-Za-z0-9]+)?$")
SAEV_TOKENS = ("patch", "cls", "all")


def foreign_source(
    path: Path, layer: str | int | None = None, tokens: str | None = None
) -> ArraySource | None:
    """A source over ``path`` if it is a saev shard directory or an MSAE memmap, else None."""
    if path.is_dir() and (path / "metadata.json").is_file() and (path / "acts000000.bin").exists():
        return open_saev(path, layer, tokens)
    if path.is_file() and _MSAE_NAME.search(path.name) and not _has_npy_header(path):
        if layer is not None or tokens not in (None, "all"):
            raise SoftSAEError("--layer and --tokens apply to activation stores, not MSAE files")
        return open_msae(path)
    return None


def _has_npy_header(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(NPY_MAGIC)) == NPY_MAGIC


def open_msae(path: Path) -> ArraySource:
    """Memory-map an MSAE headerless float32 file, its shape (N, d) read from its name."""
    match = _MSAE_NAME.search(path.name)
    if match is None:
        raise SoftSAEError(f"{path}: an MSAE file name must end in _N_d (rows, width)")
    n, d = int(match.group(1)), int(match.group(2))
    size, expected = path.stat().st_size, n * d * 4
    if size != expected:
        raise SoftSAEError(
            f"{path} holds {size} bytes but its name promises {n}×{d} float32 ({expected} "
            "bytes); the file is truncated or its name is wrong"
        )
    array = np.memmap(path, dtype=np.float32, mode="r", shape=(n, d))
    return ArraySource(array, {"kind": "msae", "path": str(path.resolve()), "shape": [n, d]})


class ShardRows:
    """Rows (N, d) of one layer and some token positions across saev shards, read on demand."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, shards: list[np.memmap], layer_idx: int, positions: np.ndarray, d: int):
        self._shards = shards
        self._starts = np.cumsum([0] + [len(s) for s in shards])  # first image of each shard
        self._layer = layer_idx
        self._positions = positions
        self.shape = (int(self._starts[-1]) * len(positions), d)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: slice | np.ndarray) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(self.shape[0]), dtype=np.int64)
        idx = np.asarray(idx, dtype=np.int64)
        image, pos = np.divmod(idx, len(self._positions))
        token = self._positions[pos]
        shard = np.searchsorted(self._starts, image, side="right") - 1
        out = np.empty((len(idx), self.shape[1]), dtype=np.float32)
        for s in np.unique(shard):
            mask = shard == s
            local = image[mask] - self._starts[s]
            out[mask] = self._shards[s][local, self._layer, token[mask]]
        return out


def open_saev(path: Path, layer: str | int | None, tokens: str | None) -> ArraySource:
    """One layer (default: the last recorded) and token kind of a saev shard directory."""
    meta = _read_json(path / "metadata.json")
    try:
        layers = [int(v) for v in meta["layers"]]
        n_patches, d = int(meta["n_patches_per_img"]), int(meta["d_vit"])
        cls_token, n_imgs = bool(meta["cls_token"]), int(meta["n_imgs"])
    except (KeyError, TypeError, ValueError) as err:
        raise SoftSAEError(f"{path}/metadata.json lacks saev field {err}") from None
    if str(meta.get("dtype", "float32")) != "float32":
        raise SoftSAEError(f"{path}: saev dtype {meta['dtype']!r} is not float32")
    n_tokens = n_patches + int(cls_token)
    if layer is None:
        layer_value = layers[-1]
    else:
        try:
            layer_value = int(layer)
        except ValueError:
            raise SoftSAEError(f"--layer must be one of {layers} for {path}") from None
    if layer_value not in layers:
        raise SoftSAEError(f"{path} recorded layers {layers}, not {layer_value}; pick one")
    tokens = tokens or "patch"
    if tokens not in SAEV_TOKENS:
        raise SoftSAEError(f"--tokens for saev shards must be one of {SAEV_TOKENS}")
    if tokens == "cls" and not cls_token:
        raise SoftSAEError(f"{path} recorded no CLS token (cls_token is false)")
    positions = {
        "patch": np.arange(int(cls_token), n_tokens),
        "cls": np.array([0]),
        "all": np.arange(n_tokens),
    }[tokens].astype(np.int64)
    shards = _open_shards(path, meta, n_imgs, len(layers), n_tokens, d)
    rows = ShardRows(shards, layers.index(layer_value), positions, d)
    return ArraySource(
        rows,
        {
            "kind": "saev",
            "path": str(path.resolve()),
            "backbone": f"{meta.get('vit_family', '?')}/{meta.get('vit_ckpt', '?')}",
            "layer": layer_value,
            "tokens": tokens,
            "d": d,
            "n_rows": len(rows),
        },
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SoftSAEError(f"{path} is unreadable ({err})") from None


def _open_shards(
    path: Path, meta: dict[str, Any], n_imgs: int, n_layers: int, n_tokens: int, d: int
) -> list[np.memmap]:
    if (path / "shards.json").is_file():
        listed = _read_json(path / "shards.json")
        counts = [(str(s["name"]), int(s["n_imgs"])) for s in listed]
    else:  # protocol §3: equal shards, the last one smaller
        per_shard = int(meta["max_patches_per_shard"]) // (n_tokens * n_layers)
        n_shards = -(-n_imgs // per_shard)
        counts = [
            (f"acts{i:06d}.bin", min(per_shard, n_imgs - i * per_shard)) for i in range(n_shards)
        ]
    if sum(c for _, c in counts) != n_imgs:
        raise SoftSAEError(f"{path}: shards hold {sum(c for _, c in counts)} images, not {n_imgs}")
    shards = []
    for name, count in counts:
        file = path / name
        expected = count * n_layers * n_tokens * d * 4
        if not file.is_file() or file.stat().st_size < expected:
            raise SoftSAEError(
                f"{file} is missing or shorter than {count} images × {n_layers} layers × "
                f"{n_tokens} tokens × {d} float32; the shard directory is incomplete"
            )
        shards.append(
            np.memmap(file, dtype=np.float32, mode="r", shape=(count, n_layers, n_tokens, d))
        )
    return shards
