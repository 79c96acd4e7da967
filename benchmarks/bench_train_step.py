"""One SoftSAE training step against one TopK step at the same (d, F, B).

    python benchmarks/bench_train_step.py [--d 512 --latents 4096 --batch 2048 --k 32]
        [--device cpu|cuda] [--precision auto|fp32|tf32|bf16]

Times full optimiser steps (forward, losses, backward, decoder projection, clipping, Adam,
renormalisation) through the real Trainer, interleaved and median of repeats, for TopK,
SoftSAE with the paper's k estimator and SoftSAE with the lean one, all in the soft phase
(the expensive one: soft top-k plus the estimator's backward). On CUDA each timed step ends
with a synchronisation. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import math

import torch
from _common import emit_json, time_interleaved

from softsae_vision.data.synthetic import SyntheticSparseData
from softsae_vision.devices import resolve_device
from softsae_vision.sae import SoftSAE, TopKSAE
from softsae_vision.training import TrainConfig
from softsae_vision.training.trainer import Trainer


def make_trainer(sae, x_ND, alpha: float, steps: int, device, precision: str) -> Trainer:
    cfg = TrainConfig(
        steps=10**6,
        batch_size=len(x_ND),
        hard_frac=0.0,
        k_anneal_frac=0.0,
        alpha=alpha,
        device=str(device),
        precision=precision,
    )
    sae.fit_normalization(x_ND[:16384].cpu())
    if isinstance(sae, SoftSAE):  # start at mean k̂ ≈ K, so both select as many latents
        sae.k_calibration.fill_(math.log(sae.k / (sae.k_max - sae.k)))
    trainer = Trainer(sae, cfg, device)
    for _ in range(steps):  # leave initialisation behind: realistic latent statistics
        trainer.train_step(x_ND)
    return trainer


def step_times(
    d: int,
    latents: int,
    batch: int,
    k: int = 32,
    alpha: float = 1e-4,
    repeats: int = 7,
    warm_steps: int = 5,
    device: str = "cpu",
    precision: str = "auto",
) -> dict:
    """Median ms per step of TopK, SoftSAE (paper) and SoftSAE (lean), and their ratios."""
    dev = resolve_device(device)
    gen = SyntheticSparseData(d=d, n_atoms=4 * d, min_active=4, max_active=64)
    x_ND = gen.generate(batch, seed=1)[0].to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    saes = {
        "topk": TopKSAE(d, latents, k=k),
        "softsae_paper": SoftSAE(d, latents, k=k),
        "softsae_lean": SoftSAE(d, latents, k=k, estimator="lean"),
    }
    trainers = {
        name: make_trainer(sae, x_ND, alpha, warm_steps, dev, precision)
        for name, sae in saes.items()
    }

    def timed(t: Trainer):
        return lambda: (t.train_step(x_ND), sync())

    times = time_interleaved(
        {name: timed(t) for name, t in trainers.items()}, repeats=repeats, warmup=1
    )
    return {
        "shape": {"d": d, "latents": latents, "batch": batch, "k": k},
        "precision": trainers["topk"].precision,
        "ms": {name: round(1000 * t, 2) for name, t in times.items()},
        "ratio_softsae_paper_over_topk": round(times["softsae_paper"] / times["topk"], 3),
        "ratio_softsae_lean_over_topk": round(times["softsae_lean"] / times["topk"], 3),
    }


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
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "tf32", "bf16"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = step_times(
        args.d,
        args.latents,
        args.batch,
        args.k,
        args.alpha,
        args.repeats,
        args.warm_steps,
        args.device,
        args.precision,
    )
    emit_json(
        {
            "benchmark": "train_step",
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
            **result,
            "targets": {"paper": 1.6, "lean": 1.25},
        }
    )


if __name__ == "__main__":
    main()
