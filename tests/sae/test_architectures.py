import pytest
import torch

from softsae_vision import SoftSAEError
from softsae_vision.ops import soft_topk
from softsae_vision.sae import BatchTopKSAE, MatryoshkaSAE, ReLUSAE, SoftSAE, StepContext, TopKSAE
from softsae_vision.sae.k_targets import marginal_gains, price
from softsae_vision.sae.matryoshka import group_sizes
from softsae_vision.sae.soft import ESTIMATORS, GAIN_FLOOR, PRICE_MOMENTUM

D, F = 16, 64


def test_topk_keeps_exactly_k_positive_latents():
    sae = TopKSAE(D, F, k=5)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive
    codes = sae.encode(torch.randn(20, D))
    assert ((codes != 0).sum(-1) == 5).all()


def test_batchtopk_trains_with_batch_budget_and_infers_with_threshold():
    sae = BatchTopKSAE(D, F, k=3)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)
    xn = torch.randn(10, D)
    out = sae.train_output(xn, StepContext())
    assert (out.codes != 0).sum() == 30  # K·B over the whole batch
    per_row = (out.codes != 0).sum(-1)
    assert per_row.sum() == 30
    kept = out.codes[out.codes != 0]
    assert sae.threshold == pytest.approx(kept.min().item())
    z = sae.pre_acts(xn)
    assert torch.equal(sae.select(z), z * (z > sae.threshold))


def test_batchtopk_threshold_is_an_ema():
    sae = BatchTopKSAE(D, F, k=3, threshold_momentum=0.9)
    sae.update_threshold(torch.tensor(1.0))
    sae.update_threshold(torch.tensor(2.0))
    assert sae.threshold.item() == pytest.approx(1.1)


def test_matryoshka_loss_is_mean_of_prefix_losses():
    sae = MatryoshkaSAE(D, F, k=4, group_fractions=(1 / 8, 1 / 4))
    assert group_sizes(F, (1 / 8, 1 / 4)) == [8, 16, 40] == sae.group_sizes
    xn = torch.randn(12, D)
    out = sae.train_output(xn, StepContext())
    losses = []
    for end in (8, 24, 64):
        x_hat = out.codes[:, :end] @ sae.W_dec[:end] + sae.b_dec
        losses.append((x_hat - xn).pow(2).sum(-1).mean())
    assert out.recon_loss.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)
    assert torch.allclose(out.x_hat, out.codes @ sae.W_dec + sae.b_dec, atol=1e-5)


def test_matryoshka_rejects_fractions_leaving_no_rest():
    with pytest.raises(SoftSAEError, match="fractions"):
        MatryoshkaSAE(D, F, k=4, group_fractions=(0.5, 0.5))


def test_relu_adds_weighted_l1():
    sae = ReLUSAE(D, F, l1_coeff=0.5)
    xn = torch.randn(6, D)
    out = sae.train_output(xn, StepContext())
    assert out.extra_losses["l1"].item() == pytest.approx(0.5 * out.codes.sum(-1).mean().item())


class TestSoftSAE:
    def test_k_hat_range_and_start(self):
        sae = SoftSAE(D, F, k=4)
        assert sae.k_max == 16
        k = sae.predict_k(torch.randn(50, D))
        assert k.dtype == torch.float32 and (k >= 1).all() and (k <= 16).all()
        assert k.mean().item() == pytest.approx(8.0, rel=0.1)  # σ ≈ 1/2 at start

    def test_hard_selection_keeps_floor_k_hat(self):
        sae = SoftSAE(D, F, k=4)
        x = torch.randn(30, D)
        out = sae(x)
        z = sae.pre_acts(sae.normalize(x))
        expected = torch.minimum(out.k_hat.floor(), (z > 0).sum(-1).float())
        assert torch.equal((out.codes != 0).sum(-1).float(), expected)

    def test_k_hat_stays_fp32_under_bf16_autocast(self):
        sae = SoftSAE(D, F, k=4)
        x = torch.randn(7, D)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            k = sae.predict_k(x)
        assert k.dtype == torch.float32
        assert torch.allclose(k, sae.predict_k(x))

    @pytest.mark.parametrize("estimator", ESTIMATORS)
    def test_soft_phase_trains_estimator_and_hard_phase_freezes_it(self, estimator):
        sae = SoftSAE(D, F, k=4, estimator=estimator, estimator_hidden=8)
        xn = torch.randn(10, D)
        out = sae.train_output(xn, StepContext(phase="soft", alpha=1e-2, k_target=4.0))
        loss = (out.x_hat - xn).pow(2).sum() + out.extra_losses["k"]
        loss.backward()
        assert sae.k_estimator[2].weight.grad.abs().sum() > 0
        sae.zero_grad(set_to_none=True)
        out = sae.train_output(xn, StepContext(phase="hard"))
        (out.x_hat - xn).pow(2).sum().backward()
        assert sae.k_estimator[2].weight.grad is None
        assert sae.W_enc.grad.abs().sum() > 0

    def test_priced_estimator_tracks_the_batch_price_and_reads_gains_against_it(self):
        torch.manual_seed(0)
        sae = SoftSAE(D, F, k=1, k_max=16, estimator="priced", estimator_hidden=8, seed=0)
        assert float(sae.gain_price) == 0.0
        xn1, xn2 = torch.randn(40, D), 3 * torch.randn(40, D)
        ctx = StepContext(phase="soft", alpha=1e-2, k_target=1.0)

        def batch_price(xn):
            gains_BM, _ = sae.gains_and_energy(xn)
            return price(gains_BM, 1.0).clamp_min(GAIN_FLOOR)  # random weights: may be < 0

        lam1 = batch_price(xn1)
        assert lam1 > 10 * GAIN_FLOOR
        sae.train_output(xn1, ctx)
        torch.testing.assert_close(sae.gain_price, lam1)  # the first batch sets it
        lam2 = batch_price(xn2)
        sae.train_output(xn2, ctx)
        expected = PRICE_MOMENTUM * lam1 + (1 - PRICE_MOMENTUM) * lam2
        torch.testing.assert_close(sae.gain_price, expected)
        # the features: gains as shares of energy, asinh(gain / λ̄), log energy
        seen = []
        sae.k_estimator[0].register_forward_hook(lambda m, args, out: seen.append(args[0]))
        sae.predict_k_normalized(xn1)
        gains_BM = marginal_gains(sae.pre_acts(xn1), xn1 - sae.b_dec, sae.W_dec, 16)
        energy_B1 = (xn1 - sae.b_dec).square().sum(1, keepdim=True)
        h = seen[0]
        assert h.shape == (40, 2 * 16 + 1)
        torch.testing.assert_close(h[:, :16], gains_BM / energy_B1)
        torch.testing.assert_close(h[:, 16:32], torch.asinh(gains_BM / sae.gain_price))
        assert float(sae.gain_price) > 0
        torch.testing.assert_close(h[:, 32], energy_B1[:, 0].log())

    def test_soft_codes_are_latents_times_weights_summing_to_k(self):
        """soft_phase_k "estimated": each row's soft weights sum to its k̂ (the paper's)."""
        sae = SoftSAE(D, F, k=4, soft_phase_k="estimated")
        with torch.no_grad():
            sae.b_enc.fill_(5.0)  # all latents positive so Σ(codes / z) = Σ p = k̂
        xn = torch.randn(5, D)
        out = sae.train_output(xn, StepContext(phase="soft", alpha=0.1, k_target=4.0))
        weights = out.codes / sae.pre_acts(xn)
        assert torch.allclose(weights.sum(-1), out.k_hat, rtol=1e-4)
        assert not torch.allclose(out.k_hat, torch.full_like(out.k_hat, 4.0), rtol=1e-2)

    def test_budget_soft_phase_reconstructs_at_the_budget_while_k_hat_learns(self):
        """soft_phase_k "budget": every row's weights sum to the step's budget, and the
        estimator still gets its loss (a gradient) from the allocation target."""
        sae = SoftSAE(D, F, k=4, soft_phase_k="budget")
        with torch.no_grad():
            sae.b_enc.fill_(5.0)
        xn = torch.randn(5, D)
        out = sae.train_output(xn, StepContext(phase="soft", alpha=0.1, k_target=6.0))
        weights = out.codes / sae.pre_acts(xn)
        torch.testing.assert_close(weights.sum(-1), torch.full((5,), 6.0), rtol=1e-4, atol=0)
        out.extra_losses["k"].backward()
        assert sae.k_estimator[0].weight.grad.abs().sum() > 0
        assert sae.W_enc.grad is None  # the estimator's loss does not push the encoder

    def test_defaults_train_both_reconstructions_and_the_estimator_in_the_hard_phase(self):
        sae = SoftSAE(D, F, k=4)
        assert (sae.soft_phase_k, sae.hard_phase_estimator) == ("ramp", "trained")
        out = sae.train_output(torch.randn(5, D), StepContext(phase="soft", k_target=4.0))
        assert out.recon_loss is not None and "k" in out.extra_losses

    def test_at_least_soft_phase_keeps_the_larger_of_k_hat_and_the_budget(self):
        sae = SoftSAE(D, F, k=4, soft_phase_k="at_least")
        with torch.no_grad():
            sae.b_enc.fill_(5.0)  # all latents positive so Σ(codes / z) = Σ p
        xn = torch.randn(6, D)
        for budget in (2.0, 12.0):  # below and above every row's k̂ (about k_max / 2 = 8)
            ctx = StepContext(phase="soft", alpha=0.1, k_target=budget)
            out = sae.train_output(xn, ctx)
            weights = out.codes / sae.pre_acts(xn)
            expected = torch.maximum(out.k_hat, torch.full_like(out.k_hat, budget))
            torch.testing.assert_close(weights.sum(-1), expected, rtol=1e-4, atol=0)

    def test_both_soft_phase_losses_average_the_two_reconstructions(self):
        sae = SoftSAE(D, F, k=4, soft_phase_k="both")
        xn = torch.randn(7, D)
        ctx = StepContext(phase="soft", alpha=0.1, k_target=4.0)
        out = sae.train_output(xn, ctx)
        k_hat = out.k_hat
        budget = sae._soft_codes(out.pre_acts, torch.full_like(k_hat, 4.0), 0.1)[1]
        estimated = sae._soft_codes(out.pre_acts, k_hat, 0.1)[1]
        expected = (
            (budget - xn).square().sum(-1).mean() + (estimated - xn).square().sum(-1).mean()
        ) / 2
        torch.testing.assert_close(out.recon_loss, expected)

    def test_ramp_soft_phase_moves_the_loss_from_the_budget_to_k_hat(self):
        """ "ramp": at the soft phase's start the loss is the top-K reconstruction's alone, at
        its end the top-k̂ one's, halfway it is "both"'s average; the codes are top-k̂ throughout."""
        xn = torch.randn(7, D)
        ramp = SoftSAE(D, F, k=4, soft_phase_k="ramp", seed=3)
        for other_mode, progress in (("budget", 0.0), ("estimated", 1.0), ("both", 0.5)):
            other = SoftSAE(D, F, k=4, soft_phase_k=other_mode, seed=3)
            ctx = StepContext(phase="soft", alpha=0.1, k_target=4.0, soft_progress=progress)
            out, ref = ramp.train_output(xn, ctx), other.train_output(xn, ctx)
            ref_loss = ref.recon_loss
            if ref_loss is None:
                ref_loss = (ref.x_hat - xn).square().sum(-1).mean()
            torch.testing.assert_close(out.recon_loss, ref_loss)
            estimated = ramp._soft_codes(out.pre_acts, out.k_hat, 0.1)[0].dense()
            torch.testing.assert_close(out.codes, estimated)

    @pytest.mark.parametrize("mode", ["trained", "frozen"])
    def test_hard_phase_estimator_keeps_learning_unless_frozen(self, mode):
        sae = SoftSAE(D, F, k=4, hard_phase_estimator=mode)
        xn = torch.randn(9, D)
        out = sae.train_output(xn, StepContext(phase="hard", alpha=0.1, k_target=4.0))
        assert ("k" in out.extra_losses) == (mode == "trained")
        with torch.no_grad():  # the hard selection keeps each row's top-⌊k̂⌋ either way
            expected_k = sae.predict_k_normalized(xn).floor()
        positive = (sae.pre_acts(xn) > 0).sum(-1)
        torch.testing.assert_close(
            (out.codes != 0).sum(-1).float(), torch.minimum(expected_k, positive.float())
        )
        if mode == "trained":
            out.extra_losses["k"].backward()
            assert sae.k_estimator[0].weight.grad.abs().sum() > 0

    def test_soft_signal_needs_the_papers_soft_and_hard_phase(self):
        sae = SoftSAE(D, F, k=4, k_signal="soft")
        assert (sae.soft_phase_k, sae.hard_phase_estimator) == ("estimated", "frozen")
        with pytest.raises(SoftSAEError, match="soft_phase_k"):
            SoftSAE(D, F, k=4, k_signal="soft", soft_phase_k="budget")
        with pytest.raises(SoftSAEError, match="soft_phase_k"):
            SoftSAE(D, F, k=4, k_signal="soft", hard_phase_estimator="trained")
        with pytest.raises(SoftSAEError, match="soft_phase_k must be one of"):
            SoftSAE(D, F, k=4, soft_phase_k="everything")

    @pytest.mark.parametrize("selection_grad", [False, True])
    def test_soft_codes_and_gradients_equal_the_dense_product(self, selection_grad):
        """The candidate-only soft codes are z ⊙ soft_topk(z, k̂, α), bit for bit."""
        sae = SoftSAE(D, 256, k=4, selection_grad=selection_grad, k_signal="soft")
        xn = torch.randn(64, D)
        ctx = StepContext(phase="soft", alpha=1e-3, k_target=4.0)
        grads = []
        for dense in (False, True):
            sae.zero_grad(set_to_none=True)
            if dense:
                z = sae.pre_acts(xn)
                k_hat = sae.predict_k_normalized(xn, z)
                codes = z * soft_topk(z if selection_grad else z.detach(), k_hat, ctx.alpha)
            else:
                codes = sae.train_output(xn, ctx).codes
            codes.pow(2).sum().backward()
            with_grad = [p.grad.clone() for p in sae.parameters() if p.grad is not None]
            grads.append([codes.detach(), *with_grad])
        assert len(grads[0]) == len(grads[1]) >= 4  # codes, W_enc, b_enc and the estimator
        for sparse, dense in zip(*grads, strict=True):
            # float32 sums in another order where the encoder's gradient is sparse (the CPU)
            torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-4)
        assert torch.equal(grads[0][0], grads[1][0])

    def test_k_loss_is_one_sided_soft_hinge_on_batch_mean(self):
        sae = SoftSAE(D, F, k=4, k_loss_beta=5.0, k_signal="soft")
        xn = torch.randn(10, D)
        mean_k = sae.predict_k_normalized(xn).mean()
        for target in (1.0, 30.0):
            out = sae.train_output(xn, StepContext(phase="soft", alpha=1e-2, k_target=target))
            expected = torch.nn.functional.softplus(mean_k - target, beta=5.0)
            assert out.extra_losses["k"].item() == pytest.approx(expected.item(), rel=1e-5)
        assert out.extra_losses["k"].item() < 1e-3  # far below the budget: nearly free

    @pytest.mark.parametrize("k_signal", ["gain", "batch"])
    def test_target_signal_trains_the_estimator_without_moving_the_sae(self, k_signal):
        """With a target signal the k loss reaches the estimator only, and the codes select
        with k̂ detached (the encoder learns as a TopK encoder does)."""
        sae = SoftSAE(D, F, k=4, k_signal=k_signal)
        xn = torch.randn(32, D)
        out = sae.train_output(xn, StepContext(phase="soft", alpha=1e-3, k_target=4.0))
        out.extra_losses["k"].backward()
        estimator = {id(p) for p in sae.k_estimator.parameters()}
        for p in sae.parameters():
            moved = p.grad is not None and bool(p.grad.abs().sum() > 0)
            assert moved == (id(p) in estimator), p.shape
        sae.zero_grad(set_to_none=True)
        out = sae.train_output(xn, StepContext(phase="soft", alpha=1e-3, k_target=4.0))
        (out.x_hat - xn).pow(2).sum().backward()
        assert all(p.grad is None for p in sae.k_estimator.parameters())
        assert sae.W_enc.grad.abs().sum() > 0

    def test_k_loss_is_zero_when_k_hat_equals_the_target(self):
        sae = SoftSAE(D, F, k=4, k_signal="gain")
        xn = torch.randn(16, D)
        z = sae.pre_acts(xn)
        target = sae.k_targets(xn, z, 4.0).clamp_min(1.0)
        logit = torch.logit(target / sae.k_max)
        with torch.no_grad():  # make the estimator output exactly those logits
            sae.k_estimator[2].weight.zero_()
        sae.k_logits = lambda xn_BD, z_BF=None, gains=None: logit  # type: ignore[method-assign]
        out = sae.train_output(xn, StepContext(phase="soft", alpha=1e-3, k_target=4.0))
        assert out.extra_losses["k"].item() == pytest.approx(0.0, abs=1e-8)

    def test_calibration_hits_the_realised_l0_target(self):
        sae = SoftSAE(D, F, k=4)
        with torch.no_grad():
            sae.b_enc.fill_(1.0)
        xn = [torch.randn(200, D), torch.randn(100, D)]
        sae.calibrate_k(xn, 6.0)
        codes = torch.cat(
            [sae.hard_select(sae.pre_acts(x), sae.predict_k_normalized(x)) for x in xn]
        )
        assert (codes != 0).sum(-1).float().mean().item() == pytest.approx(6.0, abs=0.05)

    def test_invalid_settings(self):
        with pytest.raises(SoftSAEError, match="k_max"):
            SoftSAE(D, F, k=4, k_max=3)
        with pytest.raises(SoftSAEError, match="k_max"):
            SoftSAE(D, F, k=4, k_max=F)
        with pytest.raises(SoftSAEError, match="estimator"):
            SoftSAE(D, F, k=4, estimator="huge")


ARCH_MAKERS = {
    "topk": lambda: TopKSAE(D, 256, k=5),
    "batchtopk": lambda: BatchTopKSAE(D, 256, k=5),
    "matryoshka": lambda: MatryoshkaSAE(D, 256, k=5),
    "softsae_soft": lambda: SoftSAE(D, 256, k=5),
    "softsae_hard": lambda: SoftSAE(D, 256, k=5, estimator="lean"),
    "softsae_priced": lambda: SoftSAE(D, 256, k=5, estimator="priced"),
}


def _step(name: str, sae, xn):
    phase = "hard" if name == "softsae_hard" else "soft"
    out = sae.train_output(xn, StepContext(phase=phase, alpha=1e-3, k_target=5.0))
    loss = out.recon_loss if out.recon_loss is not None else (out.x_hat - xn).pow(2).sum()
    return out, loss + sum(out.extra_losses.values())


@pytest.mark.parametrize("name", list(ARCH_MAKERS))
@pytest.mark.parametrize("planner", ["adaptive", "fixed"])
def test_sparse_decoding_equals_the_dense_twin(name, planner, monkeypatch):
    """Gathering through the selected latents gives the dense decoder's output and gradients."""
    monkeypatch.setenv("SOFTSAE_SOFT_TOPK_PATH", planner)
    xn = torch.randn(48, D, generator=torch.Generator().manual_seed(2))
    results = []
    for sparse in ("1", "0"):
        monkeypatch.setenv("SOFTSAE_SPARSE_DECODE", sparse)
        torch.manual_seed(0)
        sae = ARCH_MAKERS[name]()
        out, loss = _step(name, sae, xn)
        loss.backward()
        grads = {n: p.grad for n, p in sae.named_parameters() if p.grad is not None}
        results.append((out.x_hat.detach(), out.codes.detach(), grads, sae.state_dict()))
    (xs, cs, gs, ss), (xd, cd, gd, sd) = results
    torch.testing.assert_close(xs, xd, atol=1e-5, rtol=1e-5)
    assert torch.equal(cs, cd)
    assert gs.keys() == gd.keys() and {"W_dec", "W_enc"} <= gs.keys()
    for n in gs:
        torch.testing.assert_close(gs[n], gd[n], atol=1e-5, rtol=1e-4)
    for n in ss:  # buffers such as BatchTopK's threshold too
        torch.testing.assert_close(ss[n], sd[n])


@pytest.mark.parametrize("estimator", ["priced", "lean"])  # gains of every row / target rows
@pytest.mark.parametrize("planner", ["adaptive", "fixed"])
def test_soft_step_with_one_shared_topk_equals_one_topk_per_use(estimator, planner, monkeypatch):
    """The soft phase takes each row's top latents once, for the marginal gains and both soft
    top-k's; without the shared top each computes its own: same loss, codes and gradients."""
    monkeypatch.setenv("SOFTSAE_SOFT_TOPK_PATH", planner)
    xn = torch.randn(48, D, generator=torch.Generator().manual_seed(2))
    results = []
    for shared in (True, False):
        if not shared:
            monkeypatch.setattr(SoftSAE, "_row_top", lambda self, z_BF: None)
        sae = SoftSAE(D, 256, k=5, estimator=estimator, seed=0)
        out, loss = _step("softsae_soft", sae, xn)
        loss.backward()
        grads = {n: p.grad for n, p in sae.named_parameters() if p.grad is not None}
        results.append((loss.detach(), out.codes.detach(), grads))
    (ls, cs, gs), (lo, co, go) = results
    torch.testing.assert_close(ls, lo, atol=1e-6, rtol=1e-6)
    assert torch.equal(cs, co)
    assert gs.keys() == go.keys() and "k_estimator.0.weight" in gs
    for n in gs:
        torch.testing.assert_close(gs[n], go[n], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", list(ARCH_MAKERS))
def test_training_forward_and_backward_read_nothing_back(name, monkeypatch):
    """No .item(), bool(tensor), nonzero or boolean-mask indexing in a step's model math."""
    from tests._sync_probe import HostReads

    monkeypatch.setenv("SOFTSAE_SOFT_TOPK_PATH", "fixed")
    sae = ARCH_MAKERS[name]()
    xn = torch.randn(32, D)
    _step(name, sae, xn)  # BatchTopK: the threshold is set on the first step
    with HostReads() as probe:
        out, loss = _step(name, sae, xn)
        loss.backward()
    assert probe.found == []


def test_inference_forward_uses_the_sparse_decoder(monkeypatch):
    sae = SoftSAE(D, F, k=4)
    x = torch.randn(9, D)
    out = sae(x)
    torch.testing.assert_close(out.x_hat, sae.decode(out.codes), atol=1e-5, rtol=1e-5)
    topk = TopKSAE(D, F, k=4)
    torch.testing.assert_close(topk(x).x_hat, topk.decode(topk.encode(x)), atol=1e-5, rtol=1e-5)
