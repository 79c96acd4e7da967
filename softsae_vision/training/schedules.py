"""Pure functions of the step: learning rate, k target, α and training phase."""

from __future__ import annotations

from softsae_vision.training.config import TrainConfig


def _ramp(step: int, start: int, length: int) -> float:
    """0 before ``start``, rising linearly to 1 over ``length`` steps."""
    if length <= 0:
        return 1.0 if step >= start else 0.0
    return min(1.0, max(0.0, (step - start) / length))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, constant, then linear decay to 0 at the last step."""
    warmup = round(cfg.warmup_frac * cfg.steps)
    decay = round(cfg.lr_decay_frac * cfg.steps)
    rise = _ramp(step + 1, 0, warmup)
    fall = 1.0 - _ramp(step, cfg.steps - decay, decay)
    return rise * fall


def hard_phase_start(cfg: TrainConfig) -> int:
    return cfg.steps - round(cfg.hard_frac * cfg.steps)


def phase(step: int, cfg: TrainConfig) -> str:
    """ "soft" (soft top-k, estimator trains) or "hard" (hard top-⌊k̂⌋, estimator frozen)."""
    return "hard" if step >= hard_phase_start(cfg) else "soft"


def soft_progress(step: int, cfg: TrainConfig) -> float:
    """Share of the soft phase done at ``step``: 0 at the first step, 1 from the hard phase on."""
    return _ramp(step, 0, hard_phase_start(cfg))


def k_target(step: int, cfg: TrainConfig, k: float, k_start: float) -> float:
    """Mean-k budget: falls linearly from ``k_start`` to ``k`` over the annealing steps."""
    t = _ramp(step, 0, round(cfg.k_anneal_frac * cfg.steps))
    return k_start * (1 - t) + k * t


def alpha(step: int, cfg: TrainConfig) -> float:
    """Soft top-k temperature: fixed, or linear from ``alpha_start`` to ``alpha``."""
    if cfg.alpha_start is None:
        return cfg.alpha
    t = _ramp(step, 0, round(cfg.alpha_anneal_frac * cfg.steps))
    return cfg.alpha_start * (1 - t) + cfg.alpha * t
