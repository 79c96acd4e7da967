"""Soft top-k (LapSum) forward+backward against hard top-k, on SAE-like latents.

    python benchmarks/bench_soft_topk.py [--batch 1024 --features 16384 --alpha 1e-3]

Measures in one process, interleaved, medians: hard_topk fwd+bwd, soft_topk fwd+bwd, a full
row sort (for scale) and soft_topk with the fast candidate path off (the full-sort path).
k per row uniform in [k_lo, k_hi]. Latent distributions (--dist):

- loguniform: ReLU(N(0, σ_f²)), per-feature σ_f log-uniform in [0.02, 0.6] (~half zeros)
- equal: |N(0, 0.2²)|, every feature on the same scale (no zeros)
- heavy: |Student-t(2)| · 0.05 (heavy tails, no zeros)
- zeros: loguniform with 80 % of the entries set to exact zeros

``--all`` runs every distribution with k in 8-64 and 64-128 and prints one JSON object.
``--planner fixed`` times the fixed-shape plan (the one used off the CPU) instead.
"""

from __future__ import annotations

import argparse
import math
import os

import torch
from _common import emit_json, time_interleaved

from softsae_vision.devices import resolve_device
from softsae_vision.ops import hard_topk, soft_topk
from softsae_vision.ops._soft_topk_plan import FAST_ENV, PATH_ENV, plan_rows

DISTS = ("loguniform", "equal", "heavy", "zeros")
K_RANGES = ((8.0, 64.0), (64.0, 128.0))


def make_latents(batch: int, features: int, seed: int, dist: str = "loguniform") -> torch.Tensor:
    """SAE-like latents (B, F), float32, from one of DISTS."""
    g = torch.Generator().manual_seed(seed)
    if dist == "equal":
        return torch.randn(batch, features, generator=g).abs_().mul_(0.2)
    if dist == "heavy":
        t = torch.distributions.StudentT(2.0).sample((batch, features))
        return t.abs_().mul_(0.05)
    log_sigma_F = torch.empty(features).uniform_(math.log(0.02), math.log(0.6), generator=g)
    pre_BF = torch.relu(torch.randn(batch, features, generator=g) * log_sigma_F.exp())
    if dist == "zeros":
        pre_BF[torch.rand(batch, features, generator=g) < 0.8] = 0.0
    return pre_BF


def measure(args, dist: str, k_lo: float, k_hi: float, device: torch.device) -> dict:
    """Times and ratios for one distribution and k range."""
    torch.manual_seed(args.seed)
    x_BF = make_latents(args.batch, args.features, args.seed, dist).to(device)
    x_BF.requires_grad_(True)
    g = torch.Generator().manual_seed(args.seed + 1)
    k_B = torch.empty(args.batch).uniform_(k_lo, k_hi, generator=g).to(device)
    k_B.requires_grad_(True)
    k_int_B = k_B.detach().floor().long()
    grad_out_BF = torch.randn(args.batch, args.features, generator=g).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def hard() -> None:
        out = hard_topk(x_BF, k_int_B, k_max=int(k_hi), validate=False)
        torch.autograd.grad(out, [x_BF], grad_out_BF)
        sync()

    def soft() -> None:
        p = soft_topk(x_BF, k_B, args.alpha, k_max=k_hi, validate=False)
        torch.autograd.grad(p, [x_BF, k_B], grad_out_BF)
        sync()

    def sort_only() -> None:
        torch.sort(x_BF.detach(), dim=1, descending=True)
        sync()

    t = time_interleaved(
        {"hard": hard, "soft": soft, "sort": sort_only}, repeats=args.repeats, warmup=1
    )
    return {
        "dist": dist,
        "k_range": [k_lo, k_hi],
        "zero_fraction": round(float((x_BF == 0).float().mean()), 3),
        "ms": {name: round(sec * 1e3, 2) for name, sec in t.items()},
        "soft/hard": round(t["soft"] / t["hard"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--features", type=int, default=16384)
    ap.add_argument("--alpha", type=float, default=1e-3)
    ap.add_argument("--k-lo", type=float, default=8.0)
    ap.add_argument("--k-hi", type=float, default=64.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--dist", default="loguniform", choices=DISTS)
    ap.add_argument("--planner", default="auto", choices=("auto", "adaptive", "fixed"))
    ap.add_argument("--all", action="store_true", help="every distribution and k range")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ[PATH_ENV] = args.planner
    device = resolve_device(args.device)
    if args.all or device.type != "cpu":
        cases = [measure(args, d, lo, hi, device) for d in DISTS for lo, hi in K_RANGES]
        if not args.all:
            cases = [c for c in cases if c["dist"] == args.dist]
        emit_json(
            {
                "benchmark": "soft_topk",
                "device": str(device),
                "planner": args.planner,
                "batch": args.batch,
                "features": args.features,
                "alpha": args.alpha,
                "threads": torch.get_num_threads(),
                "repeats": args.repeats,
                "cases": cases,
                "worst_soft/hard": max(c["soft/hard"] for c in cases),
                "target": 2.0,
            }
        )
        return

    x_BF = make_latents(args.batch, args.features, args.seed, args.dist).requires_grad_(True)
    g = torch.Generator().manual_seed(args.seed + 1)
    k_B = torch.empty(args.batch).uniform_(args.k_lo, args.k_hi, generator=g)
    k_B.requires_grad_(True)
    k_int_B = k_B.detach().floor().long()
    grad_out_BF = torch.randn(args.batch, args.features, generator=g)

    def hard() -> None:
        torch.autograd.grad(hard_topk(x_BF, k_int_B), [x_BF], grad_out_BF)

    def soft() -> None:
        torch.autograd.grad(soft_topk(x_BF, k_B, args.alpha), [x_BF, k_B], grad_out_BF)

    def sort_only() -> None:
        torch.sort(x_BF.detach(), dim=1, descending=True)

    def soft_full() -> None:
        old = os.environ.get(FAST_ENV)
        os.environ[FAST_ENV] = "0"
        try:
            soft()
        finally:
            if old is None:
                del os.environ[FAST_ENV]
            else:
                os.environ[FAST_ENV] = old

    t = time_interleaved(
        {"hard": hard, "soft": soft, "sort": sort_only, "soft_full": soft_full},
        repeats=args.repeats,
        warmup=1,
    )
    plan = plan_rows(x_BF.detach(), k_B.detach().double(), args.alpha, fast=True)
    first = plan.sparse[0] if plan.sparse and plan.sparse[0].rows is None else None
    emit_json(
        {
            "benchmark": "soft_topk",
            "batch": args.batch,
            "features": args.features,
            "alpha": args.alpha,
            "k_range": [args.k_lo, args.k_hi],
            "dtype": "float32",
            "device": "cpu",
            "dist": args.dist,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "zero_fraction": float((x_BF == 0).float().mean()),
            "first_candidates": first.idx.shape[1] if first is not None else 0,
            "rows": {
                "sparse_first": int(torch.isfinite(first.t).any(1).sum()) if first else 0,
                "sparse_widened": sum(s.rows.numel() for s in plan.sparse if s.rows is not None),
                "dense_folded": sum(d.u.numel() for d in plan.dense if d.via == "folded"),
                "dense_sorted": sum(d.u.numel() for d in plan.dense if d.via == "sorted"),
            },
            "ms": {name: round(sec * 1e3, 2) for name, sec in t.items()},
            "ratio": {
                "soft/hard": round(t["soft"] / t["hard"], 3),
                "sort/hard": round(t["sort"] / t["hard"], 3),
                "soft_full/hard": round(t["soft_full"] / t["hard"], 3),
            },
        }
    )


if __name__ == "__main__":
    main()
