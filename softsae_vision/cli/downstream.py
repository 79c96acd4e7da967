"""``softsae downstream RUN --model MODEL --images DIR``: the SAE spliced into the backbone."""

from __future__ import annotations

import argparse
import json


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="splice the SAE into the backbone: zero-shot accuracy, KL, loss recovered",
        description=(
            "Replace the activations of the token types the SAE was trained on, at its layer, "
            "by their reconstruction inside the model's forward pass, and compare with the "
            "unmodified model and with mean-ablation of those tokens. open_clip models: "
            "zero-shot accuracy and loss over the prompts 'a photo of a {class}.' and the "
            "fraction of loss recovered; every model: KL divergence from the original class "
            "distribution and top-1 agreement. Images are labelled by sub-folder (one folder "
            "per class) or by --classes."
        ),
    )
    p.add_argument("run_dir", metavar="RUN", help="SAE run directory (or its sae.safetensors)")
    p.add_argument("--model", required=True, help="backbone: timm/<name> or open_clip/<arch>:<tag>")
    p.add_argument("--images", required=True, metavar="DIR", help="image folder")
    p.add_argument(
        "--classes",
        default=None,
        metavar="FILE",
        help="CSV of path,label (paths relative to DIR; default: class folders)",
    )
    p.add_argument("--layer", default=None, help="block index or 'embed' (default: the run's)")
    p.add_argument(
        "--tokens",
        default=None,
        choices=("patch", "cls", "register", "all"),
        help="token types to replace (default: those the run was trained on)",
    )
    p.add_argument("--no-pretrained", action="store_true", help="random backbone weights")
    p.add_argument(
        "--checkpoint", default=None, metavar="FILE", help="local backbone weights (default: none)"
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input resolution, as given to `softsae extract` (default: the model's)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="also write the results as JSON to this file (default: print only)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(run=run)


def format_result(result: dict) -> str:
    """A small table: one row per mode, then the recovered fractions."""
    cols = [c for c in ("accuracy", "loss", "kl", "top1_agreement") if c in result["sae"]]
    lines = [
        f"{result['model']} ({result['weights']}), layer {result['layer']}, {result['tokens']} "
        f"tokens, {result['n_images']} images, {result['n_classes']} classes",
        f"{'':14s}" + "".join(f"{c:>16s}" for c in cols),
    ]
    for mode in ("orig", "sae", "mean_ablation"):
        lines.append(f"{mode:14s}" + "".join(f"{result[mode][c]:16.5g}" for c in cols))
    for key in ("loss_recovered", "kl_recovered"):
        if key in result:
            lines.append(f"{key:14s} {result[key]:.5g}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:

    # RUN and --images were checked by the CLI before any heavy import (cli.check_paths).
    from softsae_vision.analysis.downstream import run_downstream, write_downstream
    from softsae_vision.devices import resolve_device

    result = run_downstream(
        args.run_dir,
        args.model,
        args.images,
        classes=args.classes,
        layer=args.layer,
        tokens=args.tokens,
        pretrained=not args.no_pretrained,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
        device=str(resolve_device(args.device)),
        image_size=args.image_size,
    )
    if args.out:
        write_downstream(result, args.out)
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0
