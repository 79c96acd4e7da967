"""``softsae demo``: the whole pipeline in one command."""

from __future__ import annotations

import argparse
import json


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="run the whole pipeline on bundled data")
    p.add_argument("--out", default="softsae_demo", help="output directory")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="use synthetic activations with a known number of active atoms per input",
    )
    p.add_argument("--steps", type=int, default=1200, help="training steps per SAE")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softsae_vision.demo.synthetic import run_synthetic_demo
    from softsae_vision.errors import SoftSAEError

    if not args.synthetic:
        raise SoftSAEError("the image demo is not available yet; run `softsae demo --synthetic`")

    summary = run_synthetic_demo(args.out, steps=args.steps, device=args.device)
    for name in ("softsae", "topk"):
        m = summary[name]
        rho = m["spearman_l0_vs_true_atoms"]
        print(
            f"{name:8s} FVU {m['fvu']:.3f}  mean L0 {m['l0_mean']:.2f} (K = {summary['k']})  "
            f"Spearman(L0, true atoms) {rho['r']:.3f} [{rho['ci_low']:.3f}, {rho['ci_high']:.3f}]"
        )
    print(f"runs and summary written to {args.out}/ (summary.json)")
    print(
        json.dumps({"softsae_fvu": summary["softsae"]["fvu"], "topk_fvu": summary["topk"]["fvu"]})
    )
    return 0
