"""Run a backbone over images and write an activation store, resumably, on one or N processes.

Decoding (DataLoader worker processes), the forward pass (main thread) and writing (a thread)
overlap (:mod:`softsae_vision.data.extract_loop`). New stores are sharded (schema 2): under
``torchrun`` each rank takes a contiguous share of whole batches, writes its own shards and
resume point, and rank 0 finalises the store once every rank is done; one process is simply
rank 0 of 1. A re-run continues every rank after its last commit. A store made with another
model, weights, transform, layer set, token selection, dtype, precision or image list is never
mixed into: that is refused, and so are ranks started with different arguments.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from softsae_vision._io import write_json_atomic
from softsae_vision.backbones.base import Backbone
from softsae_vision.data.distributed import Ranks
from softsae_vision.data.extract_loop import PRECISIONS, run_share
from softsae_vision.data.gpu_decode import DECODERS, check_gpu_decoding
from softsae_vision.data.images import list_images
from softsae_vision.data.shard_writer import (
    DEFAULT_SHARD_BYTES,
    PARTS_DIR,
    ShardWriter,
    finalize_store,
    rank_share,
    read_rank_progress,
)
from softsae_vision.data.store import Store, read_meta
from softsae_vision.data.store_format import (
    DTYPES,
    LOCK_FILE,
    META_FILE,
    SCHEMA_VERSION,
    SHARDED_SCHEMA_VERSION,
    is_stale_temporary,
    new_meta,
)
from softsae_vision.data.store_lock import StoreLock
from softsae_vision.data.store_writer import StoreWriter
from softsae_vision.errors import SoftSAEError
from softsae_vision.vocab import EMBED, TOKEN_KINDS, Layer

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
    """Images of this process's share done (all of them for one process)."""
    n_total: int
    resumed: bool


def check_arguments(
    batch_size: int = 1,
    dtype: str = "float16",
    workers: int | None = None,
    chunk_images: int = DEFAULT_CHUNK_IMAGES,
    precision: str | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    decode: str = "cpu",
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
    if precision is not None and precision not in PRECISIONS:
        raise SoftSAEError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if shard_bytes < 1:
        raise SoftSAEError(f"shard_bytes must be positive, got {shard_bytes}")
    if decode not in DECODERS:
        raise SoftSAEError(f"--decode must be one of {', '.join(DECODERS)}, got {decode!r}")


def select_tokens(backbone: Backbone, tokens: Sequence[str] | None) -> list[str]:
    """Validated token kinds to store; None means every kind the model has."""
    layout = backbone.layout
    if tokens is None:
        return [kind for kind in TOKEN_KINDS if layout.count(kind) > 0]
    kinds = [t.strip().lower() for t in tokens if t.strip()]
    for kind in kinds:
        if kind not in TOKEN_KINDS:
            raise SoftSAEError(f"unknown token type {kind!r}; use any of {', '.join(TOKEN_KINDS)}")
        if layout.count(kind) == 0:
            raise SoftSAEError(
                f"{backbone.name} has no {kind} tokens (layout: {layout.n_cls} cls, "
                f"{layout.n_reg} register, {layout.grid[0]}x{layout.grid[1]} patches); "
                f"drop {kind!r} from --tokens"
            )
    if not kinds:
        raise SoftSAEError(f"--tokens is empty; use any of {','.join(TOKEN_KINDS)}")
    return [kind for kind in TOKEN_KINDS if kind in kinds]


def resolve_layers(backbone: Backbone, layers: Sequence[Layer]) -> list[Layer]:
    """Resolved, de-duplicated layers: block indices ascending, then ``"embed"``."""
    if not layers:
        raise SoftSAEError("no layers requested; pass e.g. --layers -1 or --layers 6,embed")
    resolved = {backbone.resolve_layer(layer) for layer in layers}
    return sorted(x for x in resolved if x != EMBED) + ([EMBED] if EMBED in resolved else [])


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """The forward precision: as given, else bf16 autocast on CUDA and fp32 elsewhere."""
    if precision is None:
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def store_meta(
    backbone: Backbone,
    layers: Sequence[Layer],
    kinds: Sequence[str],
    dtype: str,
    source: str | os.PathLike,
    paths: Sequence[Path],
    batch_size: int,
    precision: str = "fp32",
    shard_bytes: int | None = DEFAULT_SHARD_BYTES,
    world: int = 1,
    decode: str = "cpu",
) -> dict[str, Any]:
    """The ``meta.json`` of a new store made with ``backbone`` (sharded unless shard_bytes=None)."""
    meta = new_meta(
        backbone=backbone.describe(),
        transform=backbone.preprocess,
        layout=backbone.layout,
        kinds=kinds,
        layer_widths={layer: backbone.layer_width(layer) for layer in layers},
        dtype=dtype,
        source=source,
        paths=paths,
        extraction={
            "batch_size": batch_size,
            "device": str(backbone.device),
            "precision": precision,
            "jpeg_draft": decode == "cpu",
            "decode": decode,
            "world_size": world,
        },
        schema_version=SCHEMA_VERSION if shard_bytes is None else SHARDED_SCHEMA_VERSION,
    )
    if shard_bytes is not None:
        meta["shard_bytes"] = int(shard_bytes)
    return meta


def _config(meta: dict[str, Any], unfinished: bool = True) -> dict[str, Any]:
    """The parts of meta.json that must agree for a re-run to continue a store."""
    config = {
        "model": f"{meta['backbone']['name']} ({meta['backbone']['weights']} weights)",
        "transform": meta["transform"],
        "layers": [e["layer"] for e in meta["layers"]],
        "tokens": meta["token_layout"]["tokens"],
        "dtype": meta["dtype"],
        "precision": meta.get("extraction", {}).get("precision", "fp32"),
        "decode": meta.get("extraction", {}).get("decode", "cpu"),
        "images": f"{meta['images']['n_total']} images, list sha256 "
        f"{meta['images']['fingerprint'][:12]}",
    }
    if unfinished and meta["schema_version"] == SHARDED_SCHEMA_VERSION:
        # the shares and shard boundaries of an unfinished store depend on these
        extraction = meta.get("extraction", {})
        config["processes"] = extraction.get("world_size", 1)
        config["batch size"] = extraction.get("batch_size")
        config["shard bytes"] = meta.get("shard_bytes")
    return config


def _check_same_config(out: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    unfinished = not old.get("complete")
    if old["schema_version"] != new["schema_version"]:
        unfinished = False  # an unfinished schema-1 store resumes with the schema-1 writer
    before, now = _config(old, unfinished), _config(new, unfinished)
    diffs = [
        f"{key}: {before[key]} (store) vs {now[key]} (now)"
        for key in now
        if before.get(key) != now[key]
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
    for folder in (out, out / "parts"):
        if folder.is_dir():
            for child in folder.iterdir():
                if is_stale_temporary(child.name) and child.is_file():
                    child.unlink(missing_ok=True)


def estimate_bytes(meta: dict[str, Any], n_images: int) -> int:
    """Disk bytes the activations of ``n_images`` images take (every image readable)."""
    itemsize = np.dtype(meta["dtype"]).itemsize
    per_image = sum(e["n_tokens"] * e["d"] for e in meta["layers"]) * itemsize
    return n_images * (per_image + 256)  # + index record and headers, generously


def _check_free_space(out: Path, meta: dict[str, Any], n_left: int) -> None:
    """Refuse to start when the disk under ``out`` cannot hold what is left to write."""
    need = estimate_bytes(meta, n_left)
    free = shutil.disk_usage(out).free
    if need > free:
        layers = len(meta["layers"])
        raise SoftSAEError(
            f"{out}: the store needs about {_human(need)} more ({n_left} images, "
            f"{layers} layer(s), {meta['dtype']}) but the disk has {_human(free)} free; "
            "free some space, pass an --out on a larger disk, or store fewer layers or tokens"
        )


def _human(n_bytes: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n_bytes >= size or unit == "MiB":
            return f"{n_bytes / size:.1f} {unit}"
    return ""  # unreachable


def _open_store_folder(
    out: Path, meta: dict[str, Any], ranks: Ranks, check_space: bool
) -> tuple[str, dict[str, Any]]:
    """Rank 0, holding the lock: ("complete" | "schema1" | "new" | "resume", meta on disk)."""
    _remove_stale_temporaries(out)
    if (out / META_FILE).exists():
        old = read_meta(out)
        _check_same_config(out, old, meta)
        if old["complete"]:
            return "complete", old
        if old["schema_version"] == SCHEMA_VERSION:
            if ranks.world > 1:
                raise SoftSAEError(
                    f"{out} is an unfinished single-file (schema 1) store; finish it with one "
                    "process (without torchrun), or pass a new --out"
                )
            state = "schema1"
        else:
            state = "resume"
    else:
        if any(not child.name.startswith(LOCK_FILE) for child in out.iterdir()):
            raise SoftSAEError(
                f"{out} exists and is not an activation store; pass a new --out folder"
            )
        old, state = meta, "new"
    if check_space:
        n_total = int(meta["images"]["n_total"])
        if state == "schema1":
            from softsae_vision.data.store_check import read_progress

            done = read_progress(out)["images_done"]
        else:
            done = sum(read_rank_progress(out, r)["images_done"] for r in range(ranks.world))
        _check_free_space(out, meta, n_total - (done if state != "new" else 0))
    if state == "new":
        write_json_atomic(
            out / META_FILE, meta, compact=True
        )  # first, so a crash right after still resumes
    return state, old


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
    precision: str | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    check_space: bool = True,
    decode: str = "cpu",
) -> ExtractResult:
    """Extract ``layers`` activations of every image under ``images`` into the store ``out``.

    ``tokens`` picks the token kinds kept for block layers (None: all the model has);
    ``precision`` the forward pass (fp32, bf16, fp16; None: bf16 autocast on CUDA, else fp32);
    ``shard_bytes`` bounds each shard file; ``decode="gpu"`` decodes JPEGs on the model's CUDA
    device (:mod:`softsae_vision.data.gpu_decode`). Work is committed every ``chunk_images`` images
    (rounded up to whole batches); ``max_chunks`` stops after that many commits, leaving a store
    that a later call with the same arguments finishes. Under ``torchrun`` every rank calls
    this with the same arguments and takes its own share; the result is the same store.
    """
    check_arguments(batch_size, dtype, workers, chunk_images, precision, shard_bytes, decode)
    if decode == "gpu":
        check_gpu_decoding(backbone.device, backbone.preprocess)
    ranks = Ranks.current()
    out = Path(out)
    paths = list_images(images)
    layers = resolve_layers(backbone, layers)
    kinds = select_tokens(backbone, tokens)
    precision = resolve_precision(precision, backbone.device)
    meta = store_meta(
        backbone,
        layers,
        kinds,
        dtype,
        images,
        paths,
        batch_size,
        precision,
        shard_bytes,
        ranks.world,
        decode,
    )
    _check_ranks_agree(ranks, meta)
    with ExitStack() as stack:
        state, error = "", None
        if ranks.main:
            try:
                _prepare_out(out)
                stack.enter_context(StoreLock(out))
                state, meta = _open_store_folder(out, meta, ranks, check_space)
            except SoftSAEError as err:
                error = str(err)
        ranks.agree(error)
        state = ranks.gather(state)[0]
        if state == "complete":
            if ranks.main:
                shutil.rmtree(out / PARTS_DIR, ignore_errors=True)  # a kill after finalising
            logger.info("%s is already complete; nothing to do", out)
            return ExtractResult(Store(out), out, 0, len(paths), len(paths), resumed=True)
        if state == "schema1":
            return _finish_schema1(
                backbone,
                out,
                meta,
                paths,
                layers,
                batch_size,
                workers,
                progress,
                chunk_images,
                max_chunks,
            )
        if not ranks.main:
            try:
                stack.enter_context(StoreLock(out, f"{LOCK_FILE}.r{ranks.rank}"))
                meta = read_meta(out)
            except SoftSAEError as err:
                error = str(err)
        ranks.agree(error)
        share = rank_share(len(paths), batch_size, ranks.rank, ranks.world)
        writer = ShardWriter(out, meta, ranks.rank, share)
        resumed = state == "resume"
        if resumed and not writer.done:
            logger.info(
                "resuming %s: rank %d after %d of %d images",
                out,
                ranks.rank,
                writer.images_done,
                share[1] - share[0],
            )
        n_processed, stopped = 0, False
        if not writer.done:
            label = progress and ("extract" if ranks.world == 1 else f"extract[{ranks.rank}]")
            share_paths = paths[share[0] : share[1]]
            n_processed = run_share(
                backbone,
                writer,
                share_paths,
                meta,
                layers,
                batch_size,
                workers,
                label,
                chunk_images,
                max_chunks,
            )
            stopped = writer.images_done < len(share_paths)  # by max_chunks
            if not stopped:
                writer.finish()
        else:
            writer.close()  # this rank finished in an earlier run
        if any(ranks.gather(stopped)):  # every rank returns: none waits for a stopped one
            if not writer.done:
                writer.commit()
            writer.close()
            return ExtractResult(None, out, n_processed, writer.images_done, len(paths), resumed)
        ranks.barrier()
        if ranks.main:
            finalize_store(out, meta, ranks.world)
        ranks.barrier()
        store = Store(out)
        logger.info(
            "%s: %d images stored, %d skipped", out, store.n_images, len(paths) - store.n_images
        )
        return ExtractResult(store, out, n_processed, share[1] - share[0], len(paths), resumed)


def _check_ranks_agree(ranks: Ranks, meta: dict[str, Any]) -> None:
    """Refuse ranks started with different arguments: they would not make one store."""
    if ranks.world == 1:
        return
    mine = {**_config(meta), "source": meta["images"]["source"]}
    for rank, theirs in enumerate(ranks.gather(mine)):
        diffs = [key for key in mine if theirs.get(key) != mine[key]]
        if diffs:
            raise SoftSAEError(
                f"ranks were started with different arguments (rank {rank} differs from rank "
                f"{ranks.rank} in {', '.join(diffs)}); start every rank with the same command"
            )


def _finish_schema1(
    backbone: Backbone,
    out: Path,
    meta: dict[str, Any],
    paths: Sequence[Path],
    layers: Sequence[Layer],
    batch_size: int,
    workers: int | None,
    progress: bool,
    chunk_images: int,
    max_chunks: int | None,
) -> ExtractResult:
    """Finish an unfinished store an older version started in the single-file layout."""
    writer = StoreWriter.resume(out, meta)
    start = writer.images_done
    n = run_share(
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
    )
    if writer.images_done < len(paths):
        writer.commit()
        writer.close()
        return ExtractResult(None, out, n, writer.images_done, len(paths), True)
    store = writer.finalize()
    return ExtractResult(store, out, writer.images_done - start, len(paths), len(paths), True)
