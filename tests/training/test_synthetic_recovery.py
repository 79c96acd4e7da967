"""Evidence that SoftSAE works: on data with a known number of active atoms per sample, the
per-sample L0 it chooses tracks that number, its mean L0 is the budget K, and it reconstructs
at least as well as a TopK SAE with the same K."""

import pytest
import torch

from softsae_vision.analysis.stats import correlate
from softsae_vision.data.synthetic import SyntheticSparseData
from softsae_vision.sae import SoftSAE, TopKSAE
from softsae_vision.training import TrainConfig, evaluate, train

K = 6


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rho with average ranks for ties (L0 and atom counts are integers)."""
    return correlate(a.numpy(), b.numpy(), n_boot=0, n_perm=0)["spearman"]["r"]


def test_spearman_helper_matches_definition():
    assert spearman(torch.tensor([1, 2, 3, 4]), torch.tensor([10, 20, 30, 40])) == pytest.approx(1)
    assert spearman(torch.tensor([1, 2, 2, 3]), torch.tensor([3, 2, 2, 1])) == pytest.approx(-1)


@pytest.fixture(scope="module")
def trained():
    gen = SyntheticSparseData(d=64, n_atoms=256, min_active=1, max_active=16)
    x_train, _ = gen.generate(20000, seed=1)
    x_test, n_test = gen.generate(4000, seed=2)
    cfg = TrainConfig(steps=1500, batch_size=256, lr=3e-3, device="cpu", log_every=100)
    soft = SoftSAE(64, 512, k=K)
    train(soft, x_train, cfg, progress=False)
    topk = TopKSAE(64, 512, k=K)
    train(topk, x_train, cfg, progress=False)
    return soft, topk, x_test, n_test


@pytest.mark.slow
def test_softsae_l0_tracks_true_number_of_atoms(trained):
    soft, _, x_test, n_test = trained
    l0 = (soft.encode(x_test) != 0).sum(-1)
    rho = spearman(l0, n_test)
    assert rho >= 0.85, rho
    assert spearman(soft.predict_k(x_test).detach(), n_test) >= 0.85


@pytest.mark.slow
def test_softsae_realised_mean_l0_meets_budget(trained):
    soft, _, x_test, _ = trained
    metrics = evaluate(soft, [x_test], device="cpu")
    assert abs(metrics["l0_mean"] - K) <= 0.05 * K, metrics["l0_mean"]


@pytest.mark.slow
def test_softsae_reconstructs_no_worse_than_topk(trained):
    soft, topk, x_test, _ = trained
    fvu_soft = evaluate(soft, [x_test], device="cpu")["fvu"]
    fvu_topk = evaluate(topk, [x_test], device="cpu")["fvu"]
    assert fvu_soft <= fvu_topk, (fvu_soft, fvu_topk)
