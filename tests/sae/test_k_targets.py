"""The estimator's targets: marginal gains equal a step-by-step reconstruction, and the batch
allocation spends the budget where the gains are largest."""

import pytest
import torch

from softsae_vision.sae import k_targets
from softsae_vision.sae.k_targets import (
    K_LOSSES,
    activation_allocation,
    allocate,
    allocation_regret,
    best_prefix,
    count_above,
    estimator_loss,
    marginal_gains,
)


def _unit_rows(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    w = torch.randn(n, d, generator=gen)
    return w / w.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("M", [8, 13, 20])  # one block of GRAM_BLOCK, a padded one, several
@pytest.mark.parametrize("chunk_elements", [1 << 20, 1])  # one chunk, a chunk per row
@pytest.mark.parametrize("shared_top", [False, True])
def test_marginal_gains_match_greedy_reconstruction(monkeypatch, M, chunk_elements, shared_top):
    monkeypatch.setattr(k_targets, "GAIN_CHUNK_ELEMENTS", chunk_elements)
    gen = torch.Generator().manual_seed(0)
    B, F, d = 6, 40, 16
    z_BF = torch.relu(torch.randn(B, F, generator=gen))
    W_FD = _unit_rows(F, d, gen)
    r_BD = torch.randn(B, d, generator=gen)
    top = z_BF.topk(M + 5, dim=1, sorted=True) if shared_top else None
    gains_BM = marginal_gains(z_BF, r_BD, W_FD, M, top=top)
    assert gains_BM.shape == (B, M)
    c_BM, idx_BM = z_BF.topk(M, dim=1)
    for b in range(B):
        e = r_BD[b].clone()
        for j in range(M):
            new = e - c_BM[b, j] * W_FD[idx_BM[b, j]]
            expected = (e.square().sum() - new.square().sum()) if c_BM[b, j] > 0 else 0.0
            assert torch.isclose(gains_BM[b, j], torch.as_tensor(expected), atol=1e-4)
            e = new


def test_allocation_follows_the_information_in_each_row():
    # Row b is the sum of b + 1 orthogonal atoms: the best allocation of a mean budget of
    # (1 + ... + B) / B gives row b exactly b + 1 latents.
    B, d = 5, 16
    W_FD = torch.eye(d)
    z_BF = torch.zeros(B, d)
    for b in range(B):
        z_BF[b, : b + 1] = 1.0 + 0.1 * torch.arange(b + 1)
    r_BD = z_BF.clone()
    mean_k = sum(range(1, B + 1)) / B
    k_star = allocate(marginal_gains(z_BF, r_BD, W_FD, d), mean_k)
    assert k_star.tolist() == [1, 2, 3, 4, 5]
    assert activation_allocation(z_BF, mean_k).tolist() == [1, 2, 3, 4, 5]


def test_allocation_ignores_latents_that_do_not_help():
    # A latent whose atom points away from the residual has a negative gain: never chosen.
    W_FD = torch.eye(4)
    z_BF = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    r_BD = torch.tensor([[1.0, -1.0, 0.0, 0.0]])
    k_star = allocate(marginal_gains(z_BF, r_BD, W_FD, 4), mean_k=2.0)
    assert k_star.tolist() == [1]


def _staircase() -> tuple[torch.Tensor, float]:
    """Gains of 5 rows, row b with b + 1 gains well above the price and the rest below it."""
    B, d = 5, 16
    W_FD = torch.eye(d)
    z_BF = torch.zeros(B, d)
    for b in range(B):
        z_BF[b, : b + 1] = 1.0 + 0.1 * torch.arange(b + 1)
    return marginal_gains(z_BF, z_BF.clone(), W_FD, 8), sum(range(1, B + 1)) / B


def test_regret_is_zero_at_the_best_count_and_grows_away_from_it():
    gains_BM, mean_k = _staircase()
    lam = torch.tensor(0.5)  # strictly between the useful gains (≥ 1) and the useless ones (0)
    best_B = (gains_BM > lam).sum(1).float()
    assert torch.allclose(allocation_regret(best_B, gains_BM, lam), torch.zeros(5))
    for delta in (-1.0, 1.0, 2.5):
        k_B = (best_B + delta).clamp(0, 8)
        moved = k_B != best_B
        assert (allocation_regret(k_B, gains_BM, lam)[moved] > 0).all()


def test_regret_gradient_points_towards_the_best_count():
    gains_BM, _ = _staircase()
    lam = torch.tensor(0.5)
    best_B = (gains_BM > lam).sum(1).float()
    k_B = torch.tensor([3.5, 3.5, 0.5, 0.5, 0.5], requires_grad=True)
    allocation_regret(k_B, gains_BM, lam).sum().backward()
    assert k_B.grad is not None
    # gradient descent moves k towards k*: down where k > k*, up where k < k*
    assert torch.equal(torch.sign(-k_B.grad), torch.sign(best_B - k_B.detach()))


@pytest.mark.parametrize("kind", K_LOSSES)
def test_every_estimator_loss_is_smallest_at_the_allocation(kind):
    gains_BM, mean_k = _staircase()
    best_B = allocate(gains_BM, mean_k)
    energy_B = torch.linspace(1.0, 3.0, 5)

    def loss(k_B: torch.Tensor) -> float:
        return float(estimator_loss(kind, k_B.log(), gains_BM, mean_k, energy_B))

    at_best = loss(best_B)
    assert loss((best_B - 0.5).clamp(0.5, 8)) >= at_best  # the last kept gain may equal λ
    for delta in (0.7, 2.0):
        assert loss((best_B + delta).clamp(0.5, 8)) > at_best


def test_the_best_prefix_counts_the_leading_latents_worth_their_price():
    lam = torch.tensor(1.0)
    gains_BM = torch.tensor(
        [
            [5.0, 0.5, 4.0, 0.0],  # a near-repeat in second place: keep it to reach the third
            [5.0, 0.2, 0.2, 1.5],  # the third's net gain does not pay for the two before it
            [0.5, 0.4, 0.0, 0.0],  # nothing is worth its price
            [3.0, 0.0, 0.0, 0.0],  # trailing zeros (latents that are off) do not extend it
        ]
    )
    assert torch.equal(best_prefix(gains_BM, lam), torch.tensor([3.0, 1.0, 0.0, 1.0]))
    assert torch.equal(count_above(gains_BM, lam), torch.tensor([2.0, 2.0, 0.0, 1.0]))
    assert torch.equal(best_prefix(gains_BM, torch.tensor(-2.0))[3], torch.tensor(1.0))


def test_the_best_prefix_is_where_the_allocation_regret_is_zero():
    gen = torch.Generator().manual_seed(3)
    gains_BM = torch.randn(64, 12, generator=gen).abs() * torch.rand(64, 1, generator=gen)
    lam = gains_BM.flatten().kthvalue(400).values
    k_B = best_prefix(gains_BM, lam)
    assert k_B.unique().numel() > 3, "the rows must need different counts"
    regret_at = torch.stack(
        [allocation_regret(torch.full((64,), float(k)), gains_BM, lam) for k in range(13)], 1
    )
    torch.testing.assert_close(regret_at.gather(1, k_B.long()[:, None]).squeeze(1), torch.zeros(64))
    assert (regret_at >= -1e-6).all()


@pytest.mark.parametrize("kind", ["log", "linear", "weighted"])
def test_the_prefix_count_is_the_estimators_target_when_asked(kind):
    gen = torch.Generator().manual_seed(4)
    gains_BM = torch.randn(32, 10, generator=gen).abs() * torch.rand(32, 1, generator=gen)
    gains_BM[:, 0] += 10.0  # every row keeps at least one latent: the losses agree on k* ≥ 1
    energy_B = torch.ones(32)
    mean_k = 3.0
    target_B = allocate(gains_BM, mean_k, count="prefix")
    assert not torch.equal(target_B, allocate(gains_BM, mean_k))

    def loss(k_B: torch.Tensor) -> float:
        return float(estimator_loss(kind, k_B.log(), gains_BM, mean_k, energy_B, count="prefix"))

    assert loss(target_B) == pytest.approx(0.0, abs=1e-12)
    assert loss(target_B + 1) > 0


def test_a_softsae_counts_its_targets_as_configured(tmp_path):
    from softsae_vision.errors import SoftSAEError
    from softsae_vision.sae import SoftSAE, load_sae

    sae = SoftSAE(8, 32, k=3, k_count="prefix", seed=0)
    xn_BD = torch.randn(64, 8, generator=torch.Generator().manual_seed(5))
    z_BF = sae.pre_acts(xn_BD)
    gains_BM = sae.gains_and_energy(xn_BD, z_BF)[0]
    assert torch.equal(sae.k_targets(xn_BD, z_BF, 3.0), allocate(gains_BM, 3.0, count="prefix"))
    assert load_sae(sae.save(tmp_path / "sae")).k_count == "prefix"
    with pytest.raises(SoftSAEError, match="k_count"):
        SoftSAE(8, 32, k=3, k_count="middle")  # pyright: ignore[reportArgumentType]
