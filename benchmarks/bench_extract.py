"""Extraction throughput against a bare forward and against decoding alone, measured side by side.

    python benchmarks/bench_extract.py [--model timm/vit_small_patch16_224 --images 96 --device cpu]
    torchrun --nproc-per-node 2 benchmarks/bench_extract.py ...     # N processes, one store

Images: JPEGs cut from the photographs bundled in ``assets/images`` (random crops of 300-512 px
sides, flips), so decoding costs what real photos cost. Three phases, timed interleaved
(medians), each over the whole image set (every process its share, wall time between barriers):

- "decode": the extraction's own loader (worker processes, JPEG draft mode), no model;
- "bare": the backbone's ``forward_features`` at the same precision and batch size over batches
  already decoded and preprocessed in memory;
- "extract": the whole ``extract`` call: listing, decoding, forward, conversion, writing shards
  and finalising the store.

The targets: extract >= 0.8 x min(bare, decode) (on CPU >= 0.9 x bare, where the forward is the
bottleneck). Also reports the store's bytes per stored token.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import emit_json, time_interleaved
from PIL import Image

from softsae_vision.backbones import load_backbone
from softsae_vision.data.distributed import Ranks
from softsae_vision.data.extract import extract, resolve_precision
from softsae_vision.data.extract_loop import autocast
from softsae_vision.data.gpu_decode import finish_batch
from softsae_vision.data.images import default_workers, image_loader, list_images, load_image
from softsae_vision.data.shard_writer import rank_share

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "images"


def write_photos(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` JPEG crops (300-512 px sides, random flips) of the bundled photographs."""
    rng = np.random.default_rng(seed)
    bases = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(ASSETS.glob("*.jpg"))]
    for i in range(n):
        base = bases[i % len(bases)]
        h, w = base.shape[:2]
        ch, cw = int(rng.integers(min(300, h), h + 1)), int(rng.integers(min(300, w), w + 1))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = base[top : top + ch, left : left + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"photo_{i:04d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="timm/vit_small_patch16_224")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--layers", default="-1")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--decode", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=None, help="shared scratch folder (default: a temp dir)")
    args = ap.parse_args()

    ranks = Ranks.current()
    device = args.device
    if device == "cuda" and ranks.world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    backbone = load_backbone(args.model, pretrained=False, device=device)
    precision = resolve_precision(args.precision, backbone.device)
    layers = args.layers.split(",")
    workers = default_workers() if args.workers is None else args.workers
    scratch = tempfile.mkdtemp(prefix="bench_extract_") if ranks.main and not args.work else None
    work = Path(args.work or ranks.gather(scratch)[0])  # one folder shared by every process
    images = work / "images"
    if ranks.main:
        images.mkdir(parents=True, exist_ok=True)
        write_photos(images, args.images)
    ranks.barrier()
    try:
        paths = list_images(images)
        begin, end = rank_share(len(paths), args.batch_size, ranks.rank, ranks.world)
        mine = paths[begin:end]
        batches = [
            torch.stack([backbone.preprocess(load_image(p)) for p in mine[i : i + args.batch_size]])
            for i in range(0, len(mine), args.batch_size)
        ]
        sync = torch.cuda.synchronize if backbone.device.type == "cuda" else lambda: None

        def together(fn):
            def run() -> None:
                ranks.barrier()
                fn()
                sync()
                ranks.barrier()

            return run

        def decode() -> None:
            loader = image_loader(
                mine,
                backbone.preprocess,
                args.batch_size,
                workers,
                draft_size=backbone.preprocess.resize_size,
                encoded_jpegs=args.decode == "gpu",
            )
            for batch in loader:
                if args.decode == "gpu":
                    finish_batch(batch, backbone.preprocess, backbone.device)

        def bare() -> None:
            with torch.inference_mode(), autocast(backbone, precision):
                for x in batches:
                    backbone.model.forward_features(x.to(backbone.device))

        runs = iter(range(10_000))

        def run_extract() -> None:
            out = work / f"store_{next(runs)}"
            extract(
                backbone,
                images,
                out,
                layers=layers,
                batch_size=args.batch_size,
                workers=workers,
                progress=False,
                precision=precision,
                decode=args.decode,
            )
            ranks.barrier()
            if ranks.main:
                shutil.rmtree(out)

        seconds = time_interleaved(
            {"decode": together(decode), "bare": together(bare), "extract": together(run_extract)},
            args.repeats,
            warmup=1,
        )
        final = extract(
            backbone,
            images,
            work / "final",
            layers=layers,
            batch_size=args.batch_size,
            workers=workers,
            progress=False,
            precision=precision,
        ).store
        if not ranks.main:
            return
        n_tokens = sum(int(np.prod(final.activations(x).shape[:2])) for x in final.layers)
        store_bytes = sum(f.stat().st_size for f in final.path.rglob("*") if f.is_file())
        rate = {k: len(paths) / v for k, v in seconds.items()}
        emit_json(
            {
                "benchmark": "extract",
                "model": args.model,
                "device": str(backbone.device),
                "processes": ranks.world,
                "precision": precision,
                "decode": args.decode,
                "image_size": list(backbone.preprocess.crop_size),
                "images": len(paths),
                "batch_size": args.batch_size,
                "layers": final.layers,
                "torch_threads": torch.get_num_threads(),
                "workers_per_process": workers,
                "cpu_cores": os.cpu_count(),
                "decode_images_per_s": round(rate["decode"], 2),
                "bare_images_per_s": round(rate["bare"], 2),
                "extract_images_per_s": round(rate["extract"], 2),
                "ratio_extract_to_bare": round(rate["extract"] / rate["bare"], 3),
                "ratio_extract_to_min_bare_decode": round(
                    rate["extract"] / min(rate["bare"], rate["decode"]), 3
                ),
                "target_ratio": 0.8 if backbone.device.type == "cuda" else 0.9,
                "store_bytes_per_token": round(store_bytes / n_tokens, 2),
            }
        )
    finally:
        ranks.barrier()
        if ranks.main and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
