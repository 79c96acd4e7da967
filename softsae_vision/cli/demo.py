"""``softsae demo``: the whole pipeline in one command."""

from __future__ import annotations

import argparse


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="run the whole pipeline on the bundled photographs",
        description="Extract patch tokens from a small ViT over the bundled photographs, train a "
        "SoftSAE and a TopK SAE with the same mean L0, and write HTML reports.",
    )
    p.add_argument("--out", default="softsae_demo", help="output directory")
    p.add_argument(
        "--model", default=None, help="backbone (default: DINOv2 ViT-S/14 with registers)"
    )
    p.add_argument("--offline", action="store_true", help="do not try to download weights")
    p.add_argument("--images", default=None, help="image folder (default: the bundled photos)")
    p.add_argument("--steps", type=int, default=None, help="training steps per SAE (default: 600)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="instead: synthetic activations with a known number of active atoms per input",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=run)


def _run_synthetic(args: argparse.Namespace) -> int:
    from softsae_vision.demo.synthetic import run_synthetic_demo

    summary = run_synthetic_demo(
        args.out, steps=args.steps or 1200, device=args.device, progress=not args.no_progress
    )
    for name in ("softsae", "topk"):
        m = summary[name]
        rho = m["spearman_l0_vs_true_atoms"]
        print(
            f"{name:8s} FVU {m['fvu']:.3f}  mean L0 {m['l0_mean']:.2f} (K = {summary['k']})  "
            f"Spearman(L0, true atoms) {rho['r']:.3f} [{rho['ci_low']:.3f}, {rho['ci_high']:.3f}]"
        )
    print(f"runs and summary.json written to {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.synthetic:
        return _run_synthetic(args)
    import dataclasses
    import time

    from softsae_vision.demo.images import DemoSettings, run_image_demo, verdict

    settings = DemoSettings()
    if args.model:
        settings = dataclasses.replace(settings, model=args.model)
    if args.steps:
        settings = dataclasses.replace(settings, steps=args.steps)
    start = time.perf_counter()
    result = run_image_demo(
        args.out,
        settings,
        images=args.images,
        offline=args.offline,
        device=args.device,
        progress=not args.no_progress,
    )
    if not result.pretrained:
        print("note: pretrained weights were not available; the backbone has random weights")
    for name in ("softsae", "topk"):
        m = result.summary[name]
        print(
            f"{name:8s} FVU {m['fvu']:.4f}  mean L0 {m['l0_mean']:.2f} (K = {result.summary['k']})"
            f"  dead latents {100 * m['dead_frac']:.0f}%"
        )
    print("\n".join(verdict(result.summary["comparison"])))
    print(f"done in {time.perf_counter() - start:.0f} s")
    print(f"report (SoftSAE and TopK side by side): {result.report}")
    return 0
