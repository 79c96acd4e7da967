import pytest

from softsae_vision import SoftSAEError
from softsae_vision.training import TrainConfig
from softsae_vision.training import schedules as S


def test_lr_warms_up_holds_and_decays_to_zero():
    cfg = TrainConfig(steps=100, warmup_frac=0.1, lr_decay_frac=0.2)
    f = [S.lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0
    assert all(v == 1.0 for v in f[10:80])
    assert all(a > b for a, b in zip(f[80:], f[81:], strict=False))
    assert f[99] == pytest.approx(0.05)


def test_phase_boundary_and_k_annealing():
    cfg = TrainConfig(steps=100, hard_frac=0.15, k_anneal_frac=0.1)
    assert S.phase(84, cfg) == "soft" and S.phase(85, cfg) == "hard"
    assert S.k_target(0, cfg, 8, 32) == 32
    assert S.k_target(5, cfg, 8, 32) == pytest.approx(20)
    assert S.k_target(50, cfg, 8, 32) == 8


def test_soft_progress_rises_over_the_soft_phase_and_stays_at_one_in_the_hard_phase():
    cfg = TrainConfig(steps=100, hard_frac=0.2)
    assert S.soft_progress(0, cfg) == 0.0
    assert S.soft_progress(40, cfg) == pytest.approx(0.5)
    assert S.soft_progress(79, cfg) < 1.0
    assert S.soft_progress(80, cfg) == S.soft_progress(99, cfg) == 1.0


def test_alpha_fixed_or_annealed():
    assert S.alpha(7, TrainConfig(steps=100, alpha=1e-3)) == 1e-3
    cfg = TrainConfig(steps=100, alpha=1e-4, alpha_start=1.0, alpha_anneal_frac=0.1)
    assert S.alpha(0, cfg) == 1.0
    assert S.alpha(5, cfg) == pytest.approx(0.50005)
    assert S.alpha(99, cfg) == 1e-4


def test_invalid_config_is_rejected():
    with pytest.raises(SoftSAEError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(SoftSAEError, match="hard_frac"):
        TrainConfig(hard_frac=1.5)


def test_config_round_trips_through_dict():
    cfg = TrainConfig(steps=7, alpha_start=0.5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
