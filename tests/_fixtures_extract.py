"""Shared helpers for the extraction tests: small synthetic images, good and broken."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def smooth_image(seed: int, height: int, width: int) -> Image.Image:
    """A smooth random RGB image (gradients and blobs compress like photos, unlike noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.3)
        channels.append(0.5 + 0.5 * np.sin(fx * 6.3 * xx + phase) * np.cos(fy * 6.3 * yy))
    return Image.fromarray((np.stack(channels, -1) * 255).astype(np.uint8))


def write_images(
    folder: Path, n: int, sizes: tuple[int, int] = (48, 64), seed: int = 0
) -> list[Path]:
    """``n`` JPEG/PNG images of varied sizes under ``folder`` (some in a subfolder)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = sizes[0] + 3 * (i % 5), sizes[1] - 2 * (i % 4)
        sub = folder / "sub" if i % 3 == 0 else folder
        sub.mkdir(exist_ok=True)
        path = sub / (f"img_{i:03d}.jpg" if i % 2 else f"img_{i:03d}.PNG")
        smooth_image(seed + i, h, w).save(path)
        paths.append(path)
    return paths


def write_broken_files(folder: Path) -> dict[str, Path]:
    """A truncated JPEG, a text file named .jpg, an empty .png and a non-image .txt."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "_whole.jpg"
    smooth_image(99, 64, 64).save(good, quality=95)
    data = good.read_bytes()
    good.unlink()
    files = {
        "truncated": folder / "truncated.jpg",
        "not_image": folder / "notes.jpg",
        "empty": folder / "empty.png",
        "ignored": folder / "readme.txt",
    }
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["not_image"].write_text("this is not a picture\n")
    files["empty"].write_bytes(b"")
    files["ignored"].write_text("not listed: wrong extension\n")
    return files


def write_synthetic_store(
    path: Path,
    n_images: int,
    n_cls: int = 1,
    n_reg: int = 2,
    grid: tuple[int, int] = (2, 3),
    d: int = 4,
    dtype: str = "float16",
    fail_every: int = 0,
    chunk: int = 7,
    layers: tuple = (3, "embed"),
    schema: int = 1,
    shard_bytes: int = 700,
):
    """A store without a model whose vectors name themselves: [image row, position, layer, 1...].

    Every ``fail_every``-th input (if > 0) is recorded as unreadable. Rows are written ``chunk``
    inputs at a time, committing after each, as an extraction would. ``schema`` 2 writes the
    sharded layout with shards of at most ``shard_bytes`` (a few rows each by default).
    """
    from softsae_vision._io import write_json_atomic
    from softsae_vision.backbones import EMBED, Preprocess, TokenLayout
    from softsae_vision.data.shard_writer import ShardWriter, finalize_store
    from softsae_vision.data.store import ImageRecord, Store, new_meta
    from softsae_vision.data.store_writer import StoreWriter

    layout = TokenLayout(n_cls, n_reg, grid)
    kinds = [k for k in ("cls", "register", "patch") if layout.count(k)]
    paths = [f"/fake/img_{i:04d}.png" for i in range(n_images)]
    meta = new_meta(
        backbone={"name": "synthetic/model", "weights": "random", "n_blocks": 4},
        transform=Preprocess((8, 8), (8, 8)),
        layout=layout,
        kinds=kinds,
        layer_widths={layer: d for layer in layers},
        dtype=dtype,
        source="/fake",
        paths=paths,
        schema_version=schema,
    )
    if schema == 2:
        meta["shard_bytes"] = shard_bytes
        path.mkdir(parents=True)
        write_json_atomic(path / "meta.json", meta, compact=True)
        writer = ShardWriter(path, meta, 0, (0, n_images))
    else:
        writer = StoreWriter.create(path, meta)
    row = 0
    for start in range(0, n_images, chunk):
        records, rows = [], []
        for i in range(start, min(start + chunk, n_images)):
            if fail_every and i % fail_every == fail_every - 1:
                records.append(ImageRecord(paths[i], "unreadable: synthetic failure"))
                continue
            records.append(ImageRecord(paths[i], "ok", row, 8, 8))
            rows.append(row)
            row += 1
        acts = {}
        for li, layer in enumerate(layers):
            n_tok = 1 if layer == EMBED else layout.n_tokens
            a = np.ones((len(rows), n_tok, d), dtype=np.float32)
            a[:, :, 0] = np.asarray(rows, dtype=np.float32)[:, None]
            a[:, :, 1] = np.arange(n_tok)[None, :]
            a[:, :, 2] = li
            acts[layer] = a.astype(dtype)
        writer.write(records, acts)
        writer.commit()
    if schema == 2:
        writer.finish()
        finalize_store(path, meta, 1)
        return Store(path)
    return writer.finalize()
