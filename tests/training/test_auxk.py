"""AuxK's two ways of finding the dead latents give one loss and one gradient."""

import pytest
import torch

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops.sparse_encode import SparseEncoding
from softsae_vision.sae import TopKSAE
from softsae_vision.training import TrainConfig
from softsae_vision.training.losses import (
    AUXK_PATH_ENV,
    COMPACT_DEAD_PER_AUX,
    auxk_loss,
    auxk_path,
    compact_serves,
)
from softsae_vision.training.trainer import Trainer

B, F, D, K_AUX = 32, 48, 8, 5


def _params(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    xn = torch.randn(B, D, generator=gen, dtype=torch.float64)
    W_enc = torch.randn(F, D, generator=gen, dtype=torch.float64).requires_grad_()
    b_enc = (0.1 * torch.randn(F, generator=gen, dtype=torch.float64)).requires_grad_()
    b_dec = (0.1 * torch.randn(D, generator=gen, dtype=torch.float64)).requires_grad_()
    W_dec = torch.randn(F, D, generator=gen, dtype=torch.float64).requires_grad_()
    return xn, W_enc, b_enc, b_dec, W_dec


def _loss_and_grads(path: str, dead_F: torch.Tensor, sparse: bool, monkeypatch, k_aux=K_AUX):
    monkeypatch.setenv(AUXK_PATH_ENV, path)
    xn, W_enc, b_enc, b_dec, W_dec = _params()
    residual = torch.randn(B, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    if sparse:
        enc = SparseEncoding(xn, W_enc, b_enc, b_dec)
        loss = auxk_loss(residual, enc.z_BF, dead_F, W_dec, k_aux, enc)
    else:
        z = torch.relu(torch.addmm(b_enc, xn - b_dec, W_enc.T))
        loss = auxk_loss(residual, z, dead_F, W_dec, k_aux)
    params = (W_enc, b_enc, b_dec, W_dec)
    if not loss.requires_grad:  # no dead latent: a constant 0
        return loss.detach(), *(torch.zeros_like(p) for p in params)
    return loss.detach(), *torch.autograd.grad(
        loss, params, allow_unused=True, materialize_grads=True
    )


# none, ≤ k_aux, > k_aux, most of F; and, with k_aux 2, more than the compact path serves
@pytest.mark.parametrize("n_dead, k_aux", [(0, 5), (3, 5), (5, 5), (17, 5), (40, 5), (40, 2)])
@pytest.mark.parametrize("sparse", [True, False])
def test_the_compact_path_equals_the_fixed_one(n_dead, k_aux, sparse, monkeypatch):
    dead_F = torch.zeros(F, dtype=torch.bool)
    dead_F[torch.randperm(F, generator=torch.Generator().manual_seed(n_dead))[:n_dead]] = True
    fixed = _loss_and_grads("fixed", dead_F, sparse, monkeypatch, k_aux)
    compact = _loss_and_grads("compact", dead_F, sparse, monkeypatch, k_aux)
    for a, b in zip(fixed, compact, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    if n_dead:
        assert fixed[0] > 0
        W_enc_grad, W_dec_grad = compact[1], compact[4]
        assert W_dec_grad[dead_F].abs().sum() > 0 and W_dec_grad[~dead_F].abs().sum() == 0
        assert W_enc_grad[dead_F].abs().sum() > 0 and W_enc_grad[~dead_F].abs().sum() == 0
    else:
        assert fixed[0] == 0


def test_the_compact_path_serves_up_to_a_multiple_of_k_aux_dead_latents():
    """The crossover is counted in k_aux (bench_auxk.py), not as a share of the latents."""
    assert compact_serves(COMPACT_DEAD_PER_AUX * 5, 5)
    assert not compact_serves(COMPACT_DEAD_PER_AUX * 5 + 1, 5)
    assert compact_serves(1536, 384)  # d 768, F 1536: every latent dead, still the faster path
    assert not compact_serves(4915, 192)  # d 384, F 16384, 30 % dead: the fixed path is faster


def test_the_path_follows_the_device_unless_asked(monkeypatch):
    monkeypatch.delenv(AUXK_PATH_ENV, raising=False)
    assert auxk_path(torch.device("cpu")) == "compact"
    assert auxk_path(torch.device("cuda")) == "fixed"  # sync-free: no host read of the count
    monkeypatch.setenv(AUXK_PATH_ENV, "fixed")
    assert auxk_path(torch.device("cpu")) == "fixed"
    monkeypatch.setenv(AUXK_PATH_ENV, "sometimes")
    with pytest.raises(SoftSAEError, match=AUXK_PATH_ENV):
        auxk_path(torch.device("cpu"))


def test_a_step_with_auxk_makes_no_pass_over_the_dense_latents(monkeypatch):
    """On the CPU defaults AuxK reads the dead latents' columns only: a TopK step with AuxK on
    computes no (B, F) tensor beyond the pre-activations."""
    from tests.ops.test_selected_codes import DenseOps

    monkeypatch.delenv(AUXK_PATH_ENV, raising=False)
    monkeypatch.setenv("SOFTSAE_SPARSE_DECODE", "auto")
    rows, latents = 32, 96
    x_BD = torch.randn(rows, D)
    sae = TopKSAE(D, latents, k=2)
    sae.fit_normalization(x_BD)
    cfg = TrainConfig(steps=100, batch_size=rows, hard_frac=0.0, dead_threshold=rows)
    trainer = Trainer(sae, cfg, torch.device("cpu"))
    for _ in range(3):  # a latent silent for one batch is dead: AuxK is on from here
        trainer.train_step(x_BD)
    assert 0 < float(trainer.train_step(x_BD)["dead_frac"]) <= 0.5
    with DenseOps((rows, latents)) as seen:
        metrics = trainer.train_step(x_BD, stats=True)
    assert metrics["aux"] > 0
    assert seen.ops == ["aten.addmm.default", "aten.relu.default"]
