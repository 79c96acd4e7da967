"""``softsae extract MODEL IMAGES --out STORE``: backbone activations of images into a store."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter


def _csv(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="run a backbone over images and store token activations",
        description=(
            "Run a ViT backbone over a folder of images (recursive) or a text file of image "
            "paths and write CLS, register and patch token activations of the chosen layers to "
            "an activation store. Re-running the same command resumes an interrupted run. "
            "Under `torchrun --nproc-per-node N -m softsae_vision.cli extract ...` each process "
            "extracts its share of the images into the same store."
        ),
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="timm/<model>[.<tag>] or open_clip/<arch>[:<tag>], e.g. timm/vit_small_patch16_224",
    )
    p.add_argument("images", metavar="IMAGES", help="image folder or text file of image paths")
    p.add_argument("--out", required=True, metavar="STORE", help="store folder to create/resume")
    p.add_argument(
        "--layers",
        type=_csv,
        default=["-1"],
        help="comma-separated block indices (negative count from the end) and/or 'embed', "
        "e.g. -1,6 (default: -1)",
    )
    p.add_argument(
        "--tokens",
        type=_csv,
        default=None,
        help="token types to keep: any of cls,register,patch (default: all the model has)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--dtype",
        default="float16",
        choices=("float16", "float32"),
        help="precision of the stored activations (float16 halves the disk space)",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=("fp32", "bf16", "fp16"),
        help="forward-pass precision (autocast); default bf16 on CUDA, fp32 on CPU",
    )
    p.add_argument(
        "--decode",
        default="cpu",
        choices=("cpu", "gpu"),
        help="where JPEGs are decoded: cpu (worker processes) or gpu (nvJPEG on the model's "
        "CUDA device, resized there; values differ slightly from cpu)",
    )
    p.add_argument(
        "--shard-mb",
        type=int,
        default=2048,
        help="upper bound on one shard file of a layer, in MiB (default 2048)",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="image decoding processes (default: all cores)"
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size in pixels (default: the model's own)",
    )
    p.add_argument("--no-pretrained", action="store_true", help="random (seeded) weights")
    p.add_argument(
        "--checkpoint",
        metavar="FILE",
        default=None,
        help="local weights file (default: none; the pretrained weights)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softsae_vision.backbones import load_backbone
    from softsae_vision.data.extract import check_arguments, extract
    from softsae_vision.data.images import list_images
    from softsae_vision.errors import SoftSAEError

    # Fail on bad settings or a bad IMAGES before spending seconds on the model, and before
    # any store folder exists (a half-made store would make the corrected re-run refuse).
    if args.shard_mb < 1:
        raise SoftSAEError(f"--shard-mb must be at least 1, got {args.shard_mb}")
    check_arguments(
        batch_size=args.batch_size,
        dtype=args.dtype,
        workers=args.workers,
        precision=args.precision,
        shard_bytes=args.shard_mb << 20,
    )
    if args.image_size is not None and args.image_size < 1:
        raise SoftSAEError(
            f"--image-size must be a positive number of pixels, got {args.image_size}"
        )
    list_images(args.images)
    device = args.device
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and device in ("auto", "cuda"):  # torchrun: one GPU per process
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(local_rank) % torch.cuda.device_count()}"
    backbone = load_backbone(
        args.model,
        pretrained=not args.no_pretrained,
        checkpoint=args.checkpoint,
        device=device,
        image_size=args.image_size,
    )
    result = extract(
        backbone,
        args.images,
        args.out,
        layers=args.layers,
        tokens=args.tokens,
        batch_size=args.batch_size,
        dtype=args.dtype,
        workers=args.workers,
        progress=not args.no_progress,
        precision=args.precision,
        shard_bytes=args.shard_mb << 20,
        decode=args.decode,
    )
    store = result.store
    assert store is not None, "extract() without max_chunks runs to the end"
    if os.environ.get("RANK", "0") != "0":
        return 0 if store.n_images else 2  # rank 0 reports
    skipped = [r for r in store.images if not r.ok]
    tokens = store.activations(store.layers[0]).shape[1]
    print(
        f"{args.out}: {store.n_images} images, layers {', '.join(map(str, store.layers))}, "
        f"{tokens} tokens each, {store.meta['dtype']}"
        + (" (already complete)" if result.resumed and result.n_processed == 0 else "")
    )
    if skipped:
        reasons = Counter(r.status.split(":")[0] for r in skipped)
        summary = ", ".join(f"{n} {why}" for why, n in reasons.most_common())
        print(
            f"skipped {len(skipped)} files ({summary}); see {args.out}/images.jsonl",
            file=sys.stderr,
        )
    if store.n_images == 0:
        raise SoftSAEError(f"no readable images in {args.images}; see {args.out}/images.jsonl")
    return 0
