"""One SoftSAE training step against one TopK step at the same (d, F, B).

    python benchmarks/bench_train_step.py [--d 512 --latents 4096 --batch 2048 --k 32]
        [--device cpu|cuda] [--precision auto|fp32|tf32|bf16] [--k-signal gain|soft|batch]
        [--encoder-grad]

Times full optimiser steps (forward, losses, backward, decoder projection, clipping, Adam,
renormalisation) through the real Trainer, interleaved and median of repeats, for TopK and
SoftSAE with the priced (default; also with its soft phase reconstructing at the budget only
and at k̂ only), paper and lean k estimators, all in the soft phase
(the expensive one: soft top-k plus the estimator's backward). On CUDA each timed step ends
with a synchronisation. Prints one JSON object.

``--dead-frac`` (default 0.1) holds that share of every SAE's latents dead, past the trainer's
dead-latent window, so every timed step includes AuxK, as a run's steps do after its first 10M
inputs; ``--k-spread`` (default 1) gives the SoftSAEs' k̂ a trained estimator's spread.

``--encoder-grad`` also times, in the same interleaved rounds, the steps whose encoder
gradient can go through the selected latents only (TopK, BatchTopK, Matryoshka, SoftSAE's hard
phase) with ``SOFTSAE_SPARSE_DECODE=1`` (sparse decoder and encoder gradient) against
``decode`` (sparse decoder, dense encoder gradient), and reports dense / sparse per
architecture (above 1: the sparse gradient is faster).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

import torch
from _common import emit_json, time_interleaved

from softsae_vision.data.synthetic import SyntheticSparseData
from softsae_vision.devices import resolve_device
from softsae_vision.ops.sparse_decode import SPARSE_DECODE_ENV
from softsae_vision.sae import BatchTopKSAE, MatryoshkaSAE, SoftSAE, TopKSAE
from softsae_vision.training import TrainConfig
from softsae_vision.training.trainer import Trainer


def spread_k_hat(sae: SoftSAE, x_ND: torch.Tensor, spread: float) -> None:
    """Give k̂ a trained estimator's spread: the estimator's output layer scaled so its logits
    have standard deviation ``spread`` over x, the calibration set so the mean k̂ is K.

    With spread 1 and k_max = 4·K, k̂ spans about 0.2·K to 3.5·K, as on the science suite's
    regimes. The soft top-k's candidate width follows the batch's largest k̂, so an untrained
    estimator (every k̂ about K) understates the cost of a soft-phase step.
    """
    with torch.no_grad():
        logits_N = sae.k_logits(sae.normalize(x_ND.to(sae.W_dec.device)))
        scale = spread / float(logits_N.std().clamp_min(1e-12))
        last = sae.k_estimator[-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale)
        logits_N = logits_N * scale
        lo, hi = -40.0, 40.0  # the mean k̂ rises with the offset: bisect for mean k̂ = K
        for _ in range(60):
            mid = (lo + hi) / 2
            if float(sae.k_from_logits(logits_N, mid).mean()) > sae.k:
                hi = mid
            else:
                lo = mid
        sae.k_calibration.fill_((lo + hi) / 2)


def k_hat_quantiles(sae: SoftSAE, x_ND: torch.Tensor) -> dict[str, float]:
    """k̂'s 10th, 50th and 90th percentiles and maximum over x, rounded."""
    with torch.no_grad():
        k_N = sae.predict_k_normalized(sae.normalize(x_ND.to(sae.W_dec.device))).float().cpu()
    qs = torch.quantile(k_N, torch.tensor([0.1, 0.5, 0.9]))
    return {"p10": round(float(qs[0]), 1), "p50": round(float(qs[1]), 1),
            "p90": round(float(qs[2]), 1), "max": round(float(k_N.max()), 1)}  # fmt: skip


def make_trainer(
    sae,
    x_ND,
    alpha: float,
    steps: int,
    device,
    precision: str,
    hard: bool = False,
    k_spread: float = 0.0,
    dead_frac: float = 0.0,
) -> Trainer:
    cfg = TrainConfig(
        steps=10**6,
        batch_size=len(x_ND),
        hard_frac=1.0 if hard else 0.0,
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
    if isinstance(sae, SoftSAE) and k_spread > 0:
        spread_k_hat(sae, x_ND, k_spread)
    if dead_frac > 0:
        make_dead(trainer, dead_frac)
    return trainer


def make_dead(trainer: Trainer, share: float) -> None:
    """Put ``trainer`` past its dead-latent window with ``share`` of the latents dead, as a run
    is after its first 10M inputs: AuxK is then on in every step. The chosen latents' encoder
    biases are pushed far down so that they stay dead while the step is timed."""
    sae = trainer.sae
    gen = torch.Generator().manual_seed(0)
    dead_F = torch.randperm(sae.n_latents, generator=gen)[: round(share * sae.n_latents)]
    dead_F = dead_F.to(sae.b_enc.device)
    with torch.no_grad():
        sae.b_enc[dead_F] -= 1e3
    trainer.since_fired_F[dead_F] = trainer.dead_threshold
    trainer.inputs_seen = max(trainer.inputs_seen, trainer.dead_threshold)


def _with_env(value: str | None, fn: Callable[[], object]) -> Callable[[], object]:
    """fn run with SOFTSAE_SPARSE_DECODE set to ``value`` (None: left as it is)."""
    if value is None:
        return fn

    def run() -> object:
        old = os.environ.get(SPARSE_DECODE_ENV)
        os.environ[SPARSE_DECODE_ENV] = value
        try:
            return fn()
        finally:
            if old is None:
                os.environ.pop(SPARSE_DECODE_ENV, None)
            else:
                os.environ[SPARSE_DECODE_ENV] = old

    return run


ENCODER_GRAD_ARCHS = ("topk", "batchtopk", "matryoshka", "softsae_hard")
"""The steps whose encoder gradient can go through the selected latents only."""


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
    k_signal: str = "gain",
    encoder_grad: bool = False,
    k_spread: float = 1.0,
    dead_frac: float = 0.1,
) -> dict:
    """Median ms per step of TopK and SoftSAE with the priced (default), paper and lean
    estimators, and their ratios.

    With ``encoder_grad`` also each of ENCODER_GRAD_ARCHS with the dense and the sparse
    encoder gradient, timed in the same rounds.
    """
    dev = resolve_device(device)
    gen = SyntheticSparseData(d=d, n_atoms=4 * d, min_active=4, max_active=64)
    x_ND = gen.generate(batch, seed=1)[0].to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    makers: dict[str, Callable[[], object]] = {
        "topk": lambda: TopKSAE(d, latents, k=k),
        "softsae_priced": lambda: SoftSAE(d, latents, k=k, k_signal=k_signal),  # the default
        # the default's soft phase reconstructs twice (top-K and top-k̂); each alone. These two
        # always learn k̂ from the gain target (k_signal "soft" allows only the top-k̂ soft phase)
        "softsae_priced_budget": lambda: SoftSAE(d, latents, k=k, soft_phase_k="budget"),
        "softsae_priced_estimated": lambda: SoftSAE(d, latents, k=k, soft_phase_k="estimated"),
        "softsae_paper": lambda: SoftSAE(d, latents, k=k, estimator="paper", k_signal=k_signal),
        "softsae_lean": lambda: SoftSAE(d, latents, k=k, estimator="lean", k_signal=k_signal),
    }
    runs: dict[str, tuple[Callable[[], object], bool, str | None]] = {
        name: (make, False, None) for name, make in makers.items()
    }
    if encoder_grad:
        extra: dict[str, Callable[[], object]] = {
            "topk": makers["topk"],
            "batchtopk": lambda: BatchTopKSAE(d, latents, k=k),
            "matryoshka": lambda: MatryoshkaSAE(d, latents, k=k),
            "softsae_hard": lambda: SoftSAE(d, latents, k=k, estimator="lean"),
        }
        for name, make in extra.items():
            for mode, env in (("dense", "decode"), ("sparse", "1")):
                runs[f"{name}/{mode}_encoder_grad"] = (make, name == "softsae_hard", env)
    trainers = {}
    for name, (make, hard, env) in runs.items():
        build = lambda m=make, h=hard: make_trainer(  # noqa: E731
            m(), x_ND, alpha, warm_steps, dev, precision, h, k_spread, dead_frac
        )
        trainers[name] = (_with_env(env, build)(), env)

    def timed(t: Trainer, env: str | None):
        return _with_env(env, lambda: (t.train_step(x_ND), sync()))

    times = time_interleaved(
        {name: timed(t, env) for name, (t, env) in trainers.items()}, repeats=repeats, warmup=1
    )
    result = {
        "shape": {"d": d, "latents": latents, "batch": batch, "k": k},
        "precision": trainers["topk"][0].precision,
        "k_signal": k_signal,
        "sparse_decode_env": os.environ.get(SPARSE_DECODE_ENV, "auto"),
        "k_spread": k_spread,
        "dead_frac": dead_frac,
        "k_hat_priced": k_hat_quantiles(trainers["softsae_priced"][0].sae, x_ND),
        "ms": {name: round(1000 * t, 2) for name, t in times.items()},
        "ratio_softsae_priced_over_topk": round(times["softsae_priced"] / times["topk"], 3),
        "ratio_softsae_paper_over_topk": round(times["softsae_paper"] / times["topk"], 3),
        "ratio_softsae_lean_over_topk": round(times["softsae_lean"] / times["topk"], 3),
        "ratio_softsae_priced_budget_over_topk": round(
            times["softsae_priced_budget"] / times["topk"], 3
        ),
        "ratio_softsae_priced_estimated_over_topk": round(
            times["softsae_priced_estimated"] / times["topk"], 3
        ),
    }
    if encoder_grad:
        result["encoder_grad_dense_over_sparse"] = {
            name: round(
                times[f"{name}/dense_encoder_grad"] / times[f"{name}/sparse_encoder_grad"], 3
            )
            for name in ENCODER_GRAD_ARCHS
        }
    return result


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
    ap.add_argument("--k-signal", default="gain", choices=("gain", "soft", "batch"))
    ap.add_argument(
        "--encoder-grad", action="store_true", help="also dense vs sparse encoder gradient"
    )
    ap.add_argument(
        "--k-spread",
        type=float,
        default=1.0,
        help="standard deviation of the SoftSAEs' k̂ logits (mean k̂ kept at K; 1: k̂ from about "
        "0.2·K to 3.5·K, as trained; 0: every k̂ about K, as an untrained estimator)",
    )
    ap.add_argument(
        "--dead-frac",
        type=float,
        default=0.1,
        help="share of the latents held dead, AuxK on in every step as after a run's first 10M "
        "inputs (0: AuxK off, as in a run's first 10M inputs and in rows before this flag)",
    )
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
        args.k_signal,
        args.encoder_grad,
        args.k_spread,
        args.dead_frac,
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
