"""Store loader throughput: shuffled fp16 -> fp32 batches from a memory-mapped store.

    python benchmarks/bench_store_loader.py [--images 1500 --d 384 --batch-size 4096]

Writes a synthetic store shaped like vit_small at 224 px (1 CLS + 14x14 patch tokens, d = 384,
fp16), then times ``StoreSource(..., tokens="patch").batches(4096, seed)`` end to end: window
reads from the memory map, token shuffling, fp16 -> fp32 conversion. Each repeat starts a fresh
stream at a different batch index (the resume path), so window loads are included. The store
was just written, so it is read from the page cache: the figure is the loader's own cost, not
the disk's. Target: >= 50k tokens/s on 2 cores.

``--train`` measures instead what the loader is for: training from the store against training
on the same rows held in memory (an in-memory source), tokens/s of whole optimiser steps
through ``train()`` (read-ahead on), per architecture and per data distribution (``--dist``:
gaussian; heavy, Student-t tails; vit, a residual stream's large offset, a few outlier
dimensions and log-normal token norms; zeros, ReLU-like rows with over half exact zeros).
Per-step time is taken from two runs of N and 2N steps (their difference), so set-up is left
out. Target: store >= 0.9x in memory.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import emit_json, time_interleaved

from softsae_vision.backbones import Preprocess, TokenLayout
from softsae_vision.data.arrays import ArraySource
from softsae_vision.data.store_format import ImageRecord, new_meta
from softsae_vision.data.store_source import StoreSource
from softsae_vision.data.store_writer import StoreWriter
from softsae_vision.devices import resolve_device

DISTS = ("gaussian", "heavy", "vit", "zeros")


def synthetic_acts(rng: np.random.Generator, shape: tuple[int, ...], dist: str) -> np.ndarray:
    """float32 activations of one of DISTS (see the module docstring)."""
    x = rng.standard_normal(shape, dtype=np.float32)
    if dist == "heavy":
        x = rng.standard_t(3, size=shape).astype(np.float32)
    elif dist == "vit":
        d = shape[-1]
        offset = np.random.default_rng(1).standard_normal(d).astype(np.float32) * 2
        offset[:: max(1, d // 4)] *= 25  # a few outlier dimensions, as ViT residuals have
        norms = rng.lognormal(0.0, 0.5, size=(*shape[:-1], 1)).astype(np.float32)
        x = x * norms + offset
    elif dist == "zeros":
        x = np.maximum(x - 0.3, 0)  # about 62 % exact zeros
    elif dist != "gaussian":
        raise ValueError(f"unknown distribution {dist!r}; use one of {', '.join(DISTS)}")
    return np.clip(x, -6e4, 6e4)  # inside fp16's range


def write_store(
    path: Path, n_images: int, d: int, grid: int, seed: int = 0, dist: str = "gaussian"
) -> None:
    """A store of random fp16 activations, one layer (11), written 256 images at a time."""
    layout = TokenLayout(n_cls=1, n_reg=0, grid=(grid, grid))
    paths = [f"/synthetic/{i:06d}.jpg" for i in range(n_images)]
    meta = new_meta(
        backbone={"name": "synthetic/vit_small", "weights": "random", "n_blocks": 12},
        transform=Preprocess((256, 256), (224, 224)),
        layout=layout,
        kinds=["cls", "patch"],
        layer_widths={11: d},
        dtype="float16",
        source="/synthetic",
        paths=paths,
    )
    writer = StoreWriter.create(path, meta)
    rng = np.random.default_rng(seed)
    for start in range(0, n_images, 256):
        stop = min(start + 256, n_images)
        acts = synthetic_acts(rng, (stop - start, layout.n_tokens, d), dist)
        records = [ImageRecord(paths[i], "ok", i, 224, 224) for i in range(start, stop)]
        writer.write(records, {11: acts.astype(np.float16)})
    writer.finalize()


def _make_sae(arch: str, d: int, latents: int, k: int):
    from softsae_vision.sae import SoftSAE, TopKSAE

    if arch == "topk":
        return TopKSAE(d, latents, k=k)
    return SoftSAE(d, latents, k=k, estimator="lean" if arch == "softsae_lean" else "paper")


def train_rates(
    store_path: Path,
    archs: tuple[str, ...] = ("topk",),
    latents: int = 4096,
    k: int = 32,
    batch_size: int = 4096,
    steps: int = 8,
    repeats: int = 3,
    device: str = "cpu",
    precision: str = "auto",
) -> dict:
    """Tokens/s of train() from the store and from the same rows in memory, per architecture."""
    from softsae_vision.training import TrainConfig, train

    dev = resolve_device(device)
    store = StoreSource(store_path, layer=11, tokens="patch")
    memory_rows = torch.cat([b for _, b in store.iter_eval(1 << 16)])
    memory = ArraySource(memory_rows)
    d = store.d

    def run(arch: str, source, n_steps: int) -> None:
        cfg = TrainConfig(
            steps=n_steps,
            batch_size=batch_size,
            device=str(dev),
            precision=precision,
            norm_sample=4096,
            log_every=10**9,
            hard_frac=0.0,
        )
        train(_make_sae(arch, d, latents, k), source, cfg, progress=False)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    out = {}
    for arch in archs:
        fns = {}
        for name, src in (("store", store), ("memory", memory)):
            for mult in (1, 2):
                fns[f"{name}_{mult}"] = lambda a=arch, s=src, m=mult: run(a, s, m * steps)
        t = time_interleaved(fns, repeats, warmup=1)
        per_step = {n: max(1e-9, (t[f"{n}_2"] - t[f"{n}_1"]) / steps) for n in ("store", "memory")}
        out[arch] = {
            "store_tokens_per_s": round(batch_size / per_step["store"]),
            "memory_tokens_per_s": round(batch_size / per_step["memory"]),
            "ratio_store_to_memory": round(per_step["memory"] / per_step["store"], 3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--grid", type=int, default=14)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--batches", type=int, default=60, help="batches per timed repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--train", action="store_true", help="store -> train vs in memory")
    ap.add_argument("--arch", default="topk", help="with --train: topk,softsae,softsae_lean")
    ap.add_argument("--latents", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=8, help="with --train: N (runs N and 2N)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--dist", default="gaussian", help=f"with --train: some of {','.join(DISTS)}")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        if args.train:
            rates = {}
            for dist in args.dist.split(","):
                write_store(work / dist, args.images, args.d, args.grid, dist=dist)
                rates[dist] = train_rates(
                    work / dist,
                    tuple(args.arch.split(",")),
                    args.latents,
                    32,
                    args.batch_size,
                    args.steps,
                    args.repeats,
                    args.device,
                    args.precision,
                )
                shutil.rmtree(work / dist, ignore_errors=True)
            emit_json(
                {
                    "benchmark": "store_to_train",
                    "device": args.device,
                    "images": args.images,
                    "d": args.d,
                    "latents": args.latents,
                    "batch_size": args.batch_size,
                    "threads": args.threads,
                    "dists": rates,
                    "target_ratio": 0.9,
                }
            )
            return
        write_store(work / "store", args.images, args.d, args.grid)
        source = StoreSource(work / "store", layer=11, tokens="patch")
        starts = itertools.count(0, args.batches)

        dev = resolve_device(args.device)

        def stream() -> None:
            for batch in itertools.islice(
                source.batches(args.batch_size, seed=0, start=next(starts)), args.batches
            ):
                batch = batch.to(dev, non_blocking=True)
                assert batch.dtype == torch.float32
            if dev.type == "cuda":
                torch.cuda.synchronize()

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        seconds = time_interleaved({"stream": stream}, args.repeats, warmup=1)["stream"]
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tokens_per_s = args.batches * args.batch_size / seconds
        store_bytes = sum(f.stat().st_size for f in (work / "store").iterdir())
        emit_json(
            {
                "benchmark": "store_loader",
                "images": args.images,
                "tokens_per_image": 1 + args.grid**2,
                "rows": len(source),
                "d": args.d,
                "dtype": "float16 -> float32",
                "batch_size": args.batch_size,
                "threads": args.threads,
                "store_mb": round(store_bytes / 2**20, 1),
                "buffer_mb": round(
                    source._window_blocks
                    * source._block_images
                    * (1 + args.grid**2)
                    * args.d
                    * 2
                    / 2**20,
                    1,
                ),
                "peak_rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
                "tokens_per_s": round(tokens_per_s),
                "target_tokens_per_s": 50_000,
                "ratio_to_target": round(tokens_per_s / 50_000, 1),
            }
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
