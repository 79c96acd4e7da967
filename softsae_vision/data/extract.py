"""Run a backbone over images and write an activation store, resumably.

Three things overlap: decoding (DataLoader worker processes), the forward pass (main thread)
and writing (a background thread). Work is committed in chunks of whole batches; a re-run of
the same extraction continues after the last commit, with the same batch boundaries, so its
result equals an uninterrupted run. A store made with another model, weights, transform, layer
set, token selection, dtype or image list is never mixed into: that is refused.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from softsae_vision.backbones.base import EMBED, TOKEN_TYPES, Backbone, Layer
from softsae_vision.data.images import ImageBatch, image_loader, list_images
from softsae_vision.data.store import Store, read_meta
from softsae_vision.data.store_format import (
    DTYPES,
    LOCK_FILE,
    META_FILE,
    ImageRecord,
    is_stale_temporary,
    new_meta,
)
from softsae_vision.data.store_lock import StoreLock
from softsae_vision.data.store_writer import StoreWriter
from softsae_vision.errors import SoftSAEError

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_IMAGES = 1024
"""Images per commit; a kill loses at most this much work."""


@dataclass
class ExtractResult:
    """What an :func:`extract` call did."""

    store: Store | None
    """The finished store, or None when stopped early by ``max_chunks``."""
    path: Path
    n_processed: int
    """Images decoded and run in this call (0 if the store was already complete)."""
    images_done: int
    n_total: int
    resumed: bool


def check_arguments(
    batch_size: int = 1,
    dtype: str = "float16",
    workers: int | None = None,
    chunk_images: int = DEFAULT_CHUNK_IMAGES,
) -> None:
    """Refuse bad extraction settings before anything (a model, a store folder) is made."""
    for flag, value, low in (
        ("--batch-size", batch_size, 1),
        ("--workers", workers, 0),
        ("chunk_images", chunk_images, 1),
    ):
        if value is None and flag == "--workers":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SoftSAEError(f"{flag} must be an integer >= {low}, got {value!r}")
    if dtype not in DTYPES:
        raise SoftSAEError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def select_tokens(backbone: Backbone, tokens: Sequence[str] | None) -> list[str]:
    """Validated token kinds to store; None means every kind the model has."""
    layout = backbone.layout
    if tokens is None:
        return [kind for kind in TOKEN_TYPES if layout.count(kind) > 0]
    kinds = [t.strip().lower() for t in tokens if t.strip()]
    for kind in kinds:
        if kind not in TOKEN_TYPES:
            raise SoftSAEError(f"unknown token type {kind!r}; use any of {', '.join(TOKEN_TYPES)}")
        if layout.count(kind) == 0:
            raise SoftSAEError(
                f"{backbone.name} has no {kind} tokens (layout: {layout.n_cls} cls, "
                f"{layout.n_reg} register, {layout.grid[0]}x{layout.grid[1]} patches); "
                f"drop {kind!r} from --tokens"
            )
    if not kinds:
        raise SoftSAEError("--tokens is empty; use any of cls,register,patch")
    return [kind for kind in TOKEN_TYPES if kind in kinds]


def resolve_layers(backbone: Backbone, layers: Sequence[Layer]) -> list[Layer]:
    """Resolved, de-duplicated layers: block indices ascending, then ``"embed"``."""
    if not layers:
        raise SoftSAEError("no layers requested; pass e.g. --layers -1 or --layers 6,embed")
    resolved = {backbone.resolve_layer(layer) for layer in layers}
    return sorted(x for x in resolved if x != EMBED) + ([EMBED] if EMBED in resolved else [])


def store_meta(
    backbone: Backbone,
    layers: Sequence[Layer],
    kinds: Sequence[str],
    dtype: str,
    source: str | os.PathLike,
    paths: Sequence[Path],
    batch_size: int,
) -> dict[str, Any]:
    """The ``meta.json`` of a new store made with ``backbone``."""
    return new_meta(
        backbone=backbone.describe(),
        transform=backbone.preprocess,
        layout=backbone.layout,
        kinds=kinds,
        layer_widths={layer: backbone.layer_width(layer) for layer in layers},
        dtype=dtype,
        source=source,
        paths=paths,
        extraction={"batch_size": batch_size, "device": str(backbone.device)},
    )


def _config(meta: dict[str, Any]) -> dict[str, Any]:
    """The parts of meta.json that must agree for a re-run to continue a store."""
    return {
        "model": f"{meta['backbone']['name']} ({meta['backbone']['weights']} weights)",
        "transform": meta["transform"],
        "layers": [e["layer"] for e in meta["layers"]],
        "tokens": meta["token_layout"]["tokens"],
        "dtype": meta["dtype"],
        "images": f"{meta['images']['n_total']} images, list sha256 "
        f"{meta['images']['fingerprint'][:12]}",
    }


def _check_same_config(out: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    before, now = _config(old), _config(new)
    diffs = [
        f"{key}: {before[key]} (store) vs {now[key]} (now)"
        for key in now
        if before[key] != now[key]
    ]
    if diffs:
        raise SoftSAEError(
            f"{out} holds a store made differently ({'; '.join(diffs)}); "
            "pass a new --out folder, or delete the old store to replace it"
        )


def _prepare_out(out: Path) -> None:
    """Make sure ``out`` is a folder we may write a store into (creating it if needed)."""
    if out.exists() and not out.is_dir():
        raise SoftSAEError(f"{out} exists and is not an activation store; pass a new --out folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SoftSAEError(f"cannot create the store folder {out}: {err.strerror}") from None


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporaries of atomic writes a killed run left behind (we hold the lock)."""
    for child in out.iterdir():
        if is_stale_temporary(child.name) and child.is_file():
            child.unlink(missing_ok=True)


def _open_writer(out: Path, meta: dict[str, Any]) -> tuple[StoreWriter | None, bool]:
    """A writer positioned after the last commit, or None if the store is already complete.

    The caller holds the store's lock. A folder holding only our lock file and temporaries of
    an interrupted first write (a kill during the very first ``meta.json``) counts as empty.
    """
    _remove_stale_temporaries(out)
    if (out / META_FILE).exists():
        old = read_meta(out)
        _check_same_config(out, old, meta)
        if old.get("complete"):
            return None, True
        return StoreWriter.resume(out, old), True
    if any(child.name != LOCK_FILE for child in out.iterdir()):
        raise SoftSAEError(f"{out} exists and is not an activation store; pass a new --out folder")
    return StoreWriter.create(out, meta), False


def _batch_records(
    batch: ImageBatch, paths: Sequence[Path], first_row: int
) -> tuple[list[ImageRecord], int]:
    records, row = [], first_row
    for i in batch.indices:
        if i in batch.errors:
            records.append(ImageRecord(str(paths[i]), batch.errors[i]))
        else:
            width, height = batch.sizes[i]
            records.append(ImageRecord(str(paths[i]), "ok", row, width, height))
            row += 1
    return records, row


def _to_storage(
    backbone: Backbone,
    x_BCHW: torch.Tensor,
    layers: Sequence[Layer],
    positions: torch.Tensor,
    dtype: torch.dtype,
) -> dict[Layer, np.ndarray]:
    """Run the backbone; select stored tokens; cast to the storage dtype; (B, T, d) per layer."""
    outs = backbone.forward_layers(x_BCHW, layers)
    acts = {}
    for layer, act_BTD in outs.items():
        if layer != EMBED:
            act_BTD = act_BTD.index_select(1, positions.to(act_BTD.device))
        stored = act_BTD.to(dtype)
        if dtype == torch.float16 and torch.isinf(stored).any() and torch.isfinite(act_BTD).all():
            raise SoftSAEError(
                f"layer {layer} of {backbone.name} has activations beyond float16's range; "
                "re-run with --dtype float32"
            )
        acts[layer] = stored.cpu().numpy()
    return acts


def extract(
    backbone: Backbone,
    images: str | os.PathLike,
    out: str | os.PathLike,
    layers: Sequence[Layer] = (-1,),
    tokens: Sequence[str] | None = None,
    batch_size: int = 64,
    dtype: str = "float16",
    workers: int | None = None,
    progress: bool = True,
    chunk_images: int = DEFAULT_CHUNK_IMAGES,
    max_chunks: int | None = None,
) -> ExtractResult:
    """Extract ``layers`` activations of every image under ``images`` into the store ``out``.

    ``tokens`` picks the token kinds kept for block layers (None: all the model has). Work is
    committed every ``chunk_images`` images (rounded up to whole batches); ``max_chunks`` stops
    after that many commits, leaving a store that a later call with the same arguments finishes.
    """
    check_arguments(batch_size=batch_size, dtype=dtype, workers=workers, chunk_images=chunk_images)
    out = Path(out)
    paths = list_images(images)
    layers = resolve_layers(backbone, layers)
    kinds = select_tokens(backbone, tokens)
    meta = store_meta(backbone, layers, kinds, dtype, images, paths, batch_size)
    _prepare_out(out)
    with StoreLock(out):
        writer, resumed = _open_writer(out, meta)
        if writer is None:
            logger.info("%s is already complete; nothing to do", out)
            return ExtractResult(Store(out), out, 0, len(paths), len(paths), resumed=True)
        if resumed:
            logger.info("resuming %s after %d of %d images", out, writer.images_done, len(paths))
        return _fill(
            backbone,
            writer,
            paths,
            meta,
            layers,
            batch_size,
            workers,
            progress,
            chunk_images,
            max_chunks,
            resumed,
        )


def _fill(
    backbone: Backbone,
    writer: StoreWriter,
    paths: Sequence[Path],
    meta: dict[str, Any],
    layers: Sequence[Layer],
    batch_size: int,
    workers: int | None,
    progress: bool,
    chunk_images: int,
    max_chunks: int | None,
    resumed: bool,
) -> ExtractResult:
    """Decode, run and write every image after the writer's last commit; finish the store."""
    out, dtype = writer.path, meta["dtype"]
    chunk = math.ceil(chunk_images / batch_size) * batch_size
    positions = torch.tensor(meta["token_layout"]["positions"], dtype=torch.long)
    torch_dtype = getattr(torch, dtype)
    start = last_commit = writer.images_done
    next_row, commits, skipped = writer.n_ok, 0, 0
    bar = tqdm(total=len(paths), initial=start, unit="img", desc="extract", disable=not progress)
    loader = image_loader(
        paths,
        backbone.preprocess,
        batch_size,
        workers,
        offset=start,
        pin_memory=backbone.device.type == "cuda",
    )
    pending: deque[Future] = deque()
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer") as pool:
            for batch in loader:
                records, next_row = _batch_records(batch, paths, next_row)
                acts = {}
                if batch.ok:
                    acts = _to_storage(backbone, batch.pixels, layers, positions, torch_dtype)
                pending.append(pool.submit(writer.write, records, acts))
                end = batch.indices[-1] + 1
                if end - last_commit >= chunk and end < len(paths):
                    pending.append(pool.submit(writer.commit))
                    last_commit, commits = end, commits + 1
                while len(pending) > 2 or (pending and pending[0].done()):
                    pending.popleft().result()  # re-raises write errors; bounds memory
                skipped += len(batch.errors)
                bar.update(len(batch.indices))
                bar.set_postfix(skipped=skipped, refresh=False)
                if max_chunks is not None and commits >= max_chunks:
                    break
            while pending:
                pending.popleft().result()
    except KeyboardInterrupt:  # every submitted write has finished: keep them
        writer.commit()
        writer.close()
        raise
    except BaseException:
        writer.close()
        raise
    finally:
        bar.close()
    n_processed = writer.images_done - start
    if writer.images_done < len(paths):  # stopped by max_chunks
        writer.commit()
        writer.close()
        return ExtractResult(None, out, n_processed, writer.images_done, len(paths), resumed)
    store = writer.finalize()
    skipped = len(paths) - store.n_images
    logger.info("%s: %d images stored, %d skipped", out, store.n_images, skipped)
    return ExtractResult(store, out, n_processed, len(paths), len(paths), resumed)
