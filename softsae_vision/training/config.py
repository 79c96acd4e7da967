"""Training settings: one frozen dataclass, one docstring per field.

Schedule lengths are fractions of ``steps`` so any ``--steps`` gives the same shape of run. The
reference recipe (CLIP, 40k steps) corresponds to warmup 0.0475, k annealing 0.04, α annealing
0.025 and a hard phase of 0.15.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from softsae_vision.errors import SoftSAEError

KAnnealFrom = Literal["k_max", "d"]
Precision = Literal["auto", "fp32", "tf32", "bf16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    """Number of optimiser steps."""

    batch_size: int = 4096
    """Activation vectors per step."""

    lr: float = 6e-4
    """Peak Adam learning rate (reference: 6e-4 at batch 8192)."""

    warmup_frac: float = 0.05
    """Fraction of steps of linear learning-rate warm-up from 0."""

    lr_decay_frac: float = 0.2
    """Fraction of steps, at the end, over which the learning rate decays linearly to 0."""

    k_anneal_frac: float = 0.05
    """Fraction of steps over which SoftSAE's mean-k target falls linearly to K."""

    k_anneal_from: KAnnealFrom = "k_max"
    """Where the k target starts: "k_max" or "d" (the reference starts at d)."""

    alpha: float = 1e-4
    """Soft top-k temperature α at the end of annealing, in units of the (normalised) latents."""

    alpha_start: float | None = None
    """If set, α falls linearly from this value to ``alpha`` over ``alpha_anneal_frac``."""

    alpha_anneal_frac: float = 0.025
    """Fraction of steps of α annealing (used only with ``alpha_start``)."""

    hard_frac: float = 0.15
    """Final fraction of steps that trains with hard top-⌊k̂⌋ (SoftSAE; whether its k estimator
    still learns there is its ``hard_phase_estimator``)."""

    calibrate_k: bool = True
    """Fit SoftSAE's k offset when the hard phase starts so realised mean L0 equals K."""

    aux_coeff: float = 1 / 32
    """Weight of the AuxK dead-latent loss (0 disables it)."""

    k_aux: int | None = None
    """Dead latents used by AuxK per input (default d/2)."""

    dead_threshold: int | None = None
    """Inputs without firing after which a latent counts as dead (default: 10M, or a tenth of
    the run's inputs when that is fewer, but at least one batch)."""

    grad_clip: float = 1.0
    """Maximum global gradient norm."""

    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam β1, β2."""

    norm_sample: int = 16384
    """Rows drawn to fit the input normalisation and initialise b_dec (geometric median)."""

    seed: int = 0
    """Seed for initialisation and data order (0 to 2³²−1); equal seeds give equal runs."""

    log_every: int = 10
    """Steps between lines of metrics.jsonl."""

    checkpoint_every: int = 250
    """Steps between resumable checkpoints (Ctrl-C also writes one)."""

    device: str = "auto"
    """"auto", "cpu", "cuda" or "cuda:N"."""

    precision: Precision = "auto"
    """"fp32", "tf32" (CUDA matmuls), "bf16" (autocast; fp32 weights and Adam state) or
    "auto": bf16 on CUDA, fp32 elsewhere. config.json records the resolved value."""

    prefetch: int = 2
    """Batches read ahead by a background thread (0 reads in the training loop)."""

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "alpha": self.alpha > 0,
            "grad_clip": self.grad_clip > 0,
            "log_every": self.log_every >= 1,
            "checkpoint_every": self.checkpoint_every >= 1,
        }
        for frac in ("warmup_frac", "lr_decay_frac", "k_anneal_frac", "hard_frac"):
            checks[frac] = 0 <= getattr(self, frac) <= 1
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise SoftSAEError(f"invalid training setting(s): {', '.join(bad)}")
        if self.precision not in PRECISIONS:
            raise SoftSAEError(
                f"precision must be one of auto, fp32, tf32, bf16; got {self.precision!r}"
            )
        if self.prefetch < 0:
            raise SoftSAEError(f"prefetch must be ≥ 0, got {self.prefetch}")
        if self.k_anneal_from not in ("k_max", "d"):
            raise SoftSAEError("k_anneal_from must be 'k_max' or 'd'")

    def resolve_dead_threshold(self) -> int:
        """Dead-latent window in inputs: 10M (the usual TopK setting), shortened for short runs."""
        if self.dead_threshold is not None:
            return self.dead_threshold
        return int(min(10_000_000, max(self.batch_size, self.steps * self.batch_size // 10)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        if "adam_betas" in kwargs:
            kwargs["adam_betas"] = tuple(kwargs["adam_betas"])
        return cls(**kwargs)
