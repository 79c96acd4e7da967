"""One SoftSAE training step against one TopK step at the same (d, F, B).

    python benchmarks/bench_train_step.py [--d 512 --latents 4096 --batch 2048 --k 32]

Times full optimiser steps (forward, losses, backward, decoder projection, clipping, Adam,
renormalisation) through the real Trainer, interleaved and median of repeats, for TopK,
SoftSAE with the paper's k estimator and SoftSAE with the lean one, all in the soft phase
(the expensive one: soft top-k plus the estimator's backward). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import math

import torch
from _common import emit_json, time_interleaved

from softsae_vision.data.synthetic import SyntheticSparseData
from softsae_vision.sae import SoftSAE, TopKSAE
from softsae_vision.training import TrainConfig
from softsae_vision.training.trainer import Trainer


def make_trainer(sae, x_ND: torch.Tensor, alpha: float, steps: int) -> Trainer:
    cfg = TrainConfig(
        steps=10**6,
        batch_size=len(x_ND),
        hard_frac=0.0,
        k_anneal_frac=0.0,
        alpha=alpha,
        device="cpu",
    )
    sae.fit_normalization(x_ND)
    if isinstance(sae, SoftSAE):  # start at mean k̂ ≈ K, so both select as many latents
        sae.k_calibration.fill_(math.log(sae.k / (sae.k_max - sae.k)))
    trainer = Trainer(sae, cfg, torch.device("cpu"))
    for _ in range(steps):  # leave initialisation behind: realistic latent statistics
        trainer.train_step(x_ND)
    return trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--latents", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=1e-4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warm-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = SyntheticSparseData(d=args.d, n_atoms=4 * args.d, min_active=4, max_active=64)
    x_ND, _ = gen.generate(args.batch, seed=1)
    trainers = {
        "topk": make_trainer(
            TopKSAE(args.d, args.latents, k=args.k), x_ND, args.alpha, args.warm_steps
        ),
        "softsae_paper": make_trainer(
            SoftSAE(args.d, args.latents, k=args.k), x_ND, args.alpha, args.warm_steps
        ),
        "softsae_lean": make_trainer(
            SoftSAE(args.d, args.latents, k=args.k, estimator="lean"),
            x_ND,
            args.alpha,
            args.warm_steps,
        ),
    }
    times = time_interleaved(
        {name: (lambda t=t: t.train_step(x_ND)) for name, t in trainers.items()},
        repeats=args.repeats,
        warmup=1,
    )
    emit_json(
        {
            "benchmark": "train_step",
            "settings": {**vars(args), "torch_threads": torch.get_num_threads()},
            "ms": {name: round(1000 * t, 2) for name, t in times.items()},
            "ratio_softsae_paper_over_topk": round(times["softsae_paper"] / times["topk"], 3),
            "ratio_softsae_lean_over_topk": round(times["softsae_lean"] / times["topk"], 3),
            "targets": {"paper": 1.6, "lean": 1.25},
        }
    )


if __name__ == "__main__":
    main()
