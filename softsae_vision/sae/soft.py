"""SoftSAE: a TopK SAE whose k is predicted per input (Stępień et al., 2026, arXiv 2605.06610).

A small "k estimator" MLP predicts k̂(x) ∈ [1, k_max]. In the paper's soft training phase the
latents are weighted by the LapSum soft top-k p = soft_topk(z, k̂, α), which sums to k̂; only the
batch mean of the allocation is budgeted at K, so single inputs may use few or many latents. In
the hard phase and at inference each row keeps its top-⌊k̂⌋ latents.

What the soft phase reconstructs with (``soft_phase_k``). By default ("ramp") the loss mixes
two reconstructions of every input, from its top-K as in a TopK SAE and from its top-k̂, the
top-k̂ one's weight rising from 0 to 1 over the soft phase; the hard phase (the last 15 %) then
trains at each input's top-⌊k̂⌋. Training the dictionary at the allocated counts from the start
("estimated", the paper's) starves atoms: the allocation, optimal for the dictionary of the
moment, gives the latents of rarely-large atoms no inputs to learn from, and they die. On the
science suite's dense-dictionary regime (1024 atoms in d 64) SoftSAE trained that way recovers
40 % of the true atoms (cosine > 0.9), BatchTopK (the same kind of allocation, on activations)
0 %, TopK 94 %; its held-out FVU is 0.302 against TopK's 0.222. Training at the budget alone
("budget") keeps the atoms but never fits the dictionary to the counts inference uses before
the hard phase (ViT-width regime FVU 0.293, bundled photos 0.035; TopK 0.301 and 0.033). The
ramp trains at the budget while k̂ is still learning and at the per-input counts by the end,
with no jump into the hard phase; see docs/choosing_k.md for its numbers against "both" (the
two losses averaged throughout, the previous default) and the others, and docs/science.md.

Whether k̂ keeps learning in the hard phase (``hard_phase_estimator``): with a target signal
it does ("trained"), since the dictionary keeps moving and a frozen estimator reads gains it
was not trained on; the paper's estimator learns only through the soft top-k, so it is frozen.

How k̂ learns (``k_signal``):
- ``"gain"`` (default): k̂ is regressed (in log space) on k*, the best allocation of the batch's
  budget by marginal reconstruction gain (see ``k_targets.py``). In the paper, k̂ learns from
  ∂L/∂k̂ through the soft top-k, which is the gain of the one latent at the threshold: the same
  quantity, measured noisily. The target signal teaches the estimator without pushing the
  encoder, and the encoder trains on the selection as a TopK encoder does.
- ``"soft"``: the paper's signal — k̂ learns through ∂p/∂k̂, with a one-sided soft hinge on the
  batch mean of k̂ (``k_loss_coeff``, ``k_loss_beta``).
- ``"batch"``: k̂ regressed on BatchTopK's allocation of the activations (a simpler target).
The science suite (``benchmarks/science.py``, results in docs/science.md) compares them on nine
synthetic regimes and two photo sets; "gain" tracks the true number of active atoms best.

Differences from the reference code, each deliberate:
- ``k_max`` is an explicit, saved hyperparameter (default 4·K). The reference silently used twice
  its construction k (1024 for every K); pass ``k_max=2 * d`` to reproduce that.
- k̂ is computed in fp32 even under autocast (the reference quantised it under bf16).
- ``k_calibration`` (a saved buffer, a logit offset) is fitted by the trainer when the hard phase
  starts so that the *realised* mean L0 — min(⌊k̂⌋, #positive latents), what users see — equals
  K. Without it the budget binds the mean of k̂ before flooring and capping, which is not the L0
  that inference delivers.
- The soft top-k weights are computed from detached latents (``selection_grad=False``): with α far
  below the latents' scale, ∂p/∂z is a spike at the threshold that swamps the other gradients.
"""

from __future__ import annotations

import math
import typing

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops import (
    SelectedCodes,
    batch_group,
    hard_topk_entries,
    hard_topk_sparse,
    soft_topk_codes,
)
from softsae_vision.ops.lapsum_topk import RowTop, debug_checks, plan_width
from softsae_vision.ops.sparse_decode import decode_selected, sparse_decode_enabled
from softsae_vision.ops.sparse_encode import SparseEncoding
from softsae_vision.sae.base import BaseSAE, SAEOutput, StepContext, TrainOutput, register_sae
from softsae_vision.sae.k_targets import (
    K_COUNTS,
    K_LOSSES,
    activation_allocation,
    allocate,
    estimator_loss,
    marginal_gains,
    price,
)
from softsae_vision.sae.topk import check_k
from softsae_vision.sae_configs import (
    Estimator,
    HardPhaseEstimator,
    KCount,
    KLoss,
    KSignal,
    SoftPhaseK,
    SoftSAEConfig,
)

ESTIMATORS: tuple[Estimator, ...] = typing.get_args(Estimator)
K_SIGNALS: tuple[KSignal, ...] = typing.get_args(KSignal)
SOFT_PHASE_KS: tuple[SoftPhaseK, ...] = typing.get_args(SoftPhaseK)
HARD_PHASE_ESTIMATORS: tuple[HardPhaseEstimator, ...] = typing.get_args(HardPhaseEstimator)
LEAN_HIDDEN = 64
GAIN_FLOOR = 1e-6
"""Gains below this (in units of the normalised input's energy, E‖x̃‖² = 1) read as this."""
ESTIMATOR_STEP_ANCHOR = 512 * 8.0
"""h·√d of the largest estimator trained at the full learning rate (512 hidden, d 64)."""
PRICE_MOMENTUM = 0.9
"""Weight of the running price λ̄ against each new batch's price (the "priced" estimator)."""
TARGET_ROWS = 512
"""Rows per step for which the k target is computed (bounds its (rows, k_max, d) gather)."""


@register_sae("softsae")
class SoftSAE(BaseSAE):
    """Dynamic top-k SAE with a learned per-input k̂.

    Five k estimators:
    - ``"paper"``: MLP(x̃ − b_dec) with d → h → 1, h = n_latents by default and the
      first layer initialised as a copy of W_enc (as in the paper). Costs about one more
      encoder matmul.
    - ``"lean"``: MLP over the encoder's own (detached) pre-activations, F → h → 1 with
      h = 64 by default. The encoder already computed them, so it costs ~h/d of an encoder
      matmul, and it reads the same sparse features the SAE uses.
    - ``"gains"``: a small MLP (M + 1 → h → 1, h = 64) over the SAE's own marginal-gain
      profile: the gain Δ_j of each of the M = ⌈k_max⌉ candidates in the encoder's order as a
      share of the row's energy, and the log of that energy. k* is a function of those gains and
      the batch's price, so it predicts k* far better than the paper's estimator on synthetic
      data (and keeps FVU below TopK's where the allocation is spread widely), but on
      photographs of wide dynamic range it tracks image complexity worse.
    - ``"loggains"``: the same MLP over the log of each candidate's absolute gain (counting
      gains above a price is then linear in its input) and the log energy.
    - ``"priced"`` (default): the same MLP over both scales at once: each gain as a share of
      the row's energy, each gain against the budget's price λ̄ as asinh(Δ_j / λ̄), and the log
      energy.
      λ̄ (the ``gain_price`` buffer) is a running mean of the batch prices k* is allocated at,
      so the features say directly how many candidates are worth their cost (k* counts the
      gains above λ), at any energy scale; asinh keeps them bounded and signed. The gains cost
      one (M, d) gather and a blocked Gram product per input (``k_targets.py``).
    The science suite (docs/science.md) compares them on every regime and photo set.
    """

    config_class = SoftSAEConfig
    k_calibration: Tensor  # () buffer: the k̂ logit offset fitted by ``calibrate``
    gain_price: Tensor  # () buffer of the "priced" estimator: the running price λ̄
    k_loss: KLoss
    predicts_k = True
    calibrates_k = True
    # Runs saved before these hyperparameters existed were trained with these values.
    legacy_hparams = {
        "k_signal": "soft",
        "estimator_lr_scale": 1.0,
        "estimator": "paper",
        "soft_phase_k": "estimated",
        "hard_phase_estimator": "frozen",
    }

    def __init__(
        self,
        d_in: int,
        n_latents: int,
        k: float = 32,
        k_max: float | None = None,
        estimator: Estimator = "priced",
        estimator_hidden: int | None = None,
        k_loss_coeff: float = 1.0,
        k_loss_beta: float = 5.0,
        selection_grad: bool = False,
        k_signal: KSignal = "gain",
        k_loss: KLoss = "log",
        k_count: KCount = "above",
        estimator_lr_scale: float | None = None,
        soft_phase_k: SoftPhaseK | None = None,
        hard_phase_estimator: HardPhaseEstimator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(d_in, n_latents, seed)
        check_k(k, n_latents)
        self.k = float(k)
        self.k_max = float(k_max) if k_max is not None else min(4.0 * self.k, n_latents - 1.0)
        if not self.k < self.k_max < n_latents:
            raise SoftSAEError(
                f"k_max must satisfy k ({self.k}) < k_max < n_latents ({n_latents}), "
                f"got {self.k_max}"
            )
        if estimator not in ESTIMATORS:
            raise SoftSAEError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        default_hidden = n_latents if estimator == "paper" else LEAN_HIDDEN
        hidden = int(estimator_hidden or default_hidden)
        if hidden < 1:
            raise SoftSAEError(f"estimator_hidden must be positive, got {estimator_hidden}")
        self.estimator, self.estimator_hidden = estimator, hidden
        self.k_loss_coeff = float(k_loss_coeff)
        self.k_loss_beta = float(k_loss_beta)
        self.selection_grad = bool(selection_grad)
        if k_signal not in K_SIGNALS:
            raise SoftSAEError(f"k_signal must be one of {K_SIGNALS}, got {k_signal!r}")
        self.k_signal = k_signal
        if k_loss not in K_LOSSES:
            raise SoftSAEError(f"k_loss must be one of {K_LOSSES}, got {k_loss!r}")
        self.k_loss = k_loss
        if k_count not in K_COUNTS:
            raise SoftSAEError(f"k_count must be one of {K_COUNTS}, got {k_count!r}")
        self.k_count: KCount = k_count
        learns_through_codes = k_signal == "soft"
        soft_phase_k = soft_phase_k or ("estimated" if learns_through_codes else "ramp")
        if soft_phase_k not in SOFT_PHASE_KS:
            raise SoftSAEError(f"soft_phase_k must be one of {SOFT_PHASE_KS}, got {soft_phase_k!r}")
        hard_phase_estimator = hard_phase_estimator or (
            "frozen" if learns_through_codes else "trained"
        )
        if hard_phase_estimator not in HARD_PHASE_ESTIMATORS:
            raise SoftSAEError(
                f"hard_phase_estimator must be one of {HARD_PHASE_ESTIMATORS}, "
                f"got {hard_phase_estimator!r}"
            )
        if learns_through_codes and (soft_phase_k, hard_phase_estimator) != (
            "estimated",
            "frozen",
        ):
            raise SoftSAEError(
                'k_signal "soft" teaches k̂ only through the soft phase\'s top-k̂ codes: it needs '
                'soft_phase_k "estimated" and hard_phase_estimator "frozen"'
            )
        self.soft_phase_k: SoftPhaseK = soft_phase_k
        self.hard_phase_estimator: HardPhaseEstimator = hard_phase_estimator
        d_est = {
            "paper": d_in,
            "lean": n_latents,
            "gains": self.candidate_width + 1,
            "loggains": self.candidate_width + 1,
            "priced": 2 * self.candidate_width + 1,
        }[estimator]
        if estimator_lr_scale is None:
            estimator_lr_scale = min(1.0, ESTIMATOR_STEP_ANCHOR / (hidden * math.sqrt(d_est)))
        if not estimator_lr_scale > 0:
            raise SoftSAEError(f"estimator_lr_scale must be > 0, got {estimator_lr_scale}")
        self.estimator_lr_scale = float(estimator_lr_scale)
        with torch.random.fork_rng(devices=[]):  # the seed, not the global generator, decides
            torch.manual_seed((0 if seed is None else seed) + 1)
            first, last = nn.Linear(d_est, hidden), nn.Linear(hidden, 1)
            self.k_estimator = nn.Sequential(first, nn.ReLU(), last)
        with torch.no_grad():
            if estimator == "paper":
                # Hidden units start as the SAE's own pre-activations (a copy of W_enc).
                rows = torch.arange(hidden) % n_latents
                first.weight.copy_(self.W_enc[rows])
                first.bias.zero_()
            # A tiny output layer makes σ ≈ 1/2, so k̂ ≈ k_max / 2 at the start.
            last.weight.mul_(1e-2)
            last.bias.zero_()
        self.register_buffer("k_calibration", torch.zeros(()))
        if estimator == "priced":  # 0 until the first training step sets it
            self.register_buffer("gain_price", torch.zeros(()))

    @property
    def target_l0(self) -> float:
        return self.k

    @property
    def k_ceiling(self) -> float:
        return self.k_max

    @property
    def candidate_width(self) -> int:
        """M = ⌈k_max⌉ (at most n_latents): the candidates whose marginal gains are computed."""
        return int(min(self.n_latents, math.ceil(self.k_max)))

    def param_groups(self) -> list[dict]:
        """The k estimator learns at ``estimator_lr_scale`` times the SAE's learning rate.

        An Adam step moves every weight by about the learning rate, so the estimator's output
        logit by about lr·h·√d (h hidden units over d inputs of unit total norm): a wide
        estimator on a wide input swings k̂ far in one step, and its error is mostly shared by
        the batch, so Adam moves it coherently and k̂ oscillates (d 768, h 1536 at the SAE's
        rate: batch-mean k̂ 22 → 3 within 20 steps, and a loss spike of 8.8×). The default scale
        min(1, ESTIMATOR_STEP_ANCHOR / (h·√d)) keeps that step the same at every size; the full
        rate is kept up to the size where it was stable in the science suite (h 512, d 64).
        """
        estimator = list(self.k_estimator.parameters())
        ids = {id(p) for p in estimator}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest}, {"params": estimator, "lr_scale": self.estimator_lr_scale}]

    # ------------------------------------------------------------------ k estimator
    def k_logits(
        self,
        xn_BD: Tensor,
        z_BF: Tensor | None = None,
        gains: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Estimator output before the sigmoid (B,), fp32, without calibration.

        ``gains``: the rows' (gains (B, M), energy (B, 1)) when already computed (training).
        """
        with torch.autocast(xn_BD.device.type, enabled=False):
            if self.estimator == "paper":
                # The estimator's gradient also reaches b_dec here, as in the paper. Detaching
                # b_dec would save a (B, d, h) matmul but made k-recovery seed-fragile
                # (Spearman 0.68-0.88 instead of 0.90-0.92 over three seeds).
                # With a target signal the estimator must not move the SAE: b_dec detached.
                b_dec = self.b_dec if self.k_signal == "soft" else self.b_dec.detach()
                h = (xn_BD - b_dec).float()
            elif self.estimator == "gains":
                gains_BM, energy_B1 = gains or self.gains_and_energy(xn_BD, z_BF)
                h = torch.cat([gains_BM / energy_B1, energy_B1.log()], dim=1)
            elif self.estimator == "loggains":
                gains_BM, energy_B1 = gains or self.gains_and_energy(xn_BD, z_BF)
                h = torch.cat([gains_BM.clamp_min(GAIN_FLOOR).log(), energy_B1.log()], dim=1)
            elif self.estimator == "priced":
                gains_BM, energy_B1 = gains or self.gains_and_energy(xn_BD, z_BF)
                priced_BM = torch.asinh(gains_BM / self.gain_price.clamp_min(GAIN_FLOOR))
                h = torch.cat([gains_BM / energy_B1, priced_BM, energy_B1.log()], dim=1)
            else:
                h = (z_BF if z_BF is not None else self.pre_acts(xn_BD)).detach().float()
            return self.k_estimator(h).squeeze(-1)

    @torch.no_grad()
    def gains_and_energy(
        self, xn_BD: Tensor, z_BF: Tensor | None = None, top: RowTop | None = None
    ) -> tuple[Tensor, Tensor]:
        """Marginal gains (B, M) of the M = ⌈k_max⌉ candidates in the encoder's order, and each
        row's energy ‖x̃ − b_dec‖² (B, 1): the "gains" estimator reads the gains as a share of
        the energy, and the log of the energy (the allocation compares absolute gains).

        ``top``: the rows' largest latents, sorted, at least M wide (see ``_row_top``).
        """
        z_BF = self.pre_acts(xn_BD) if z_BF is None else z_BF.detach()
        resid_BD = (xn_BD - self.b_dec).float()
        gains_BM = marginal_gains(z_BF, resid_BD, self.W_dec, self.candidate_width, top)
        return gains_BM, resid_BD.square().sum(1, keepdim=True).clamp_min(1e-12)

    def k_from_logits(self, logits_B: Tensor, offset: Tensor | float | None = None) -> Tensor:
        """k̂ = clamp(k_max · σ(logits + offset), 1, k_max); offset defaults to the calibration."""
        offset = self.k_calibration if offset is None else offset
        return (self.k_max * torch.sigmoid(logits_B + offset)).clamp(1.0, self.k_max)

    def predict_k_normalized(self, xn_BD: Tensor, z_BF: Tensor | None = None) -> Tensor:
        return self.k_from_logits(self.k_logits(xn_BD, z_BF))

    def predict_k(self, x_BD: Tensor) -> Tensor:
        """Real-valued predicted k̂ (B,) for raw activations; the hard selection keeps ⌊k̂⌋."""
        return self.predict_k_normalized(self.normalize(x_BD.to(self.W_enc.dtype)))

    # ------------------------------------------------------------------ selection
    def hard_select_sparse(self, z_BF: Tensor, k_hat_B: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(codes (B, F), idx, values (B, ⌊k_max⌋)): each row's top-⌊k̂⌋, fixed width, no sync."""
        k_B = k_hat_B.detach().floor().long()
        return hard_topk_sparse(z_BF, k_B, k_max=int(self.k_max), validate=debug_checks())

    def hard_select_entries(self, z_BF: Tensor, k_hat_B: Tensor) -> tuple[Tensor, Tensor]:
        """(idx, values (B, ⌊k_max⌋)) of :meth:`hard_select_sparse`, without the dense codes."""
        k_B = k_hat_B.detach().floor().long()
        return hard_topk_entries(z_BF, k_B, k_max=int(self.k_max), validate=debug_checks())

    def hard_select(self, z_BF: Tensor, k_hat_B: Tensor) -> Tensor:
        return self.hard_select_sparse(z_BF, k_hat_B)[0]

    def _k_hat_for(self, z_BF: Tensor, k_hat_B: Tensor | None) -> Tensor:
        """``k_hat_B``, or k̂ from the latents alone (which only the lean estimator reads)."""
        if k_hat_B is not None:
            return k_hat_B
        if self.estimator != "lean":
            raise SoftSAEError(
                f"this SoftSAE's k estimator ({self.estimator!r}) reads the input, not only the "
                "latents: call encode(x), or pass k_hat_B (e.g. predict_k(x)) to select"
            )
        return self.k_from_logits(self.k_logits(z_BF, z_BF))  # lean: reads z only

    def select(self, z_BF: Tensor, k_hat_B: Tensor | None = None) -> Tensor:
        """Each row's top-⌊k̂⌋ latents (B, F); k̂ from the latents unless given."""
        return self.hard_select(z_BF, self._k_hat_for(z_BF, k_hat_B))

    def select_sparse(
        self, z_BF: Tensor, k_hat_B: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.hard_select_sparse(z_BF, self._k_hat_for(z_BF, k_hat_B))

    def encode_normalized(self, xn_BD: Tensor) -> Tensor:
        z_BF = self.pre_acts(xn_BD)
        return self.hard_select(z_BF, self.predict_k_normalized(xn_BD, z_BF))

    def forward(self, x_BD: Tensor) -> SAEOutput:
        xn_BD = self.normalize(x_BD.to(self.W_enc.dtype))
        z_BF = self.pre_acts(xn_BD)
        k_hat_B = self.predict_k_normalized(xn_BD, z_BF)
        codes_BF, idx_BK, vals_BK = self.hard_select_sparse(z_BF, k_hat_B)
        x_hat_BD = self.denormalize(self.decode_sparse_normalized(idx_BK, vals_BK))
        return SAEOutput(x_hat_BD, codes_BF, k_hat_B)

    def train_output(self, xn_BD: Tensor, ctx: StepContext) -> TrainOutput:
        # the encoder's gradient through the kept latents (hard) or the candidates (soft) only;
        # with the selection gradient every latent has one
        sparse = ctx.phase == "hard" or not self.selection_grad
        enc = self.sparse_encoding(xn_BD) if sparse else None
        z_BF = self.pre_acts(xn_BD) if enc is None else enc.z_BF
        if ctx.phase == "hard":
            extra: dict[str, Tensor] = {}
            if self.hard_phase_estimator == "trained":  # k̂ keeps following its target
                k_loss, logits_B = self._estimator_target_loss(xn_BD, z_BF.detach(), ctx)
                extra["k"] = self.k_loss_coeff * k_loss
                k_hat_B = self.k_from_logits(logits_B.detach())
            else:
                with torch.no_grad():
                    k_hat_B = self.predict_k_normalized(xn_BD, z_BF)
            idx_BK, vals_BK = self.hard_select_entries(z_BF, k_hat_B)
            if enc is not None:  # the encoder's gradient through the kept latents only
                vals_BK = enc.kept(idx_BK, vals_BK)
            x_hat_BD = self.decode_sparse_normalized(idx_BK, vals_BK)
            selected = SelectedCodes.from_rows(idx_BK, vals_BK, self.n_latents)
            return TrainOutput(
                x_hat_BD, selected, z_BF, extra_losses=extra, k_hat=k_hat_B, encoding=enc
            )
        if self.k_signal != "soft":
            return self._train_output_target(xn_BD, z_BF, ctx, enc)
        k_hat_B = self.predict_k_normalized(xn_BD, z_BF)
        # By default the weights see the latents detached: with α far below the latents' scale,
        # ∂p/∂z is a spike of height ~1/α at the threshold that swamps (and, through gradient
        # clipping, shrinks) every other gradient. k̂ still learns through ∂p/∂k̂.
        selected, x_hat_BD = self._soft_codes(z_BF, k_hat_B, ctx.alpha, encoding=enc)
        excess = batch_group.mean(k_hat_B) - ctx.k_target  # the global batch's, under DDP
        k_loss = F.softplus(excess, beta=self.k_loss_beta)
        return TrainOutput(
            x_hat_BD,
            selected,
            z_BF,
            extra_losses={"k": self.k_loss_coeff * k_loss},
            k_hat=k_hat_B.detach(),
            encoding=enc,
        )

    @torch.no_grad()
    def _row_top(self, z_BF: Tensor) -> RowTop:
        """Each row's largest latents, sorted, as wide as the soft top-k's plan and the marginal
        gains take them: one ``topk`` a step, shared by the gains and both soft top-k's."""
        width = max(self.candidate_width, plan_width(self.k_max, z_BF.shape[1], z_BF.device))
        return z_BF.detach().topk(min(width, z_BF.shape[1]), dim=1, sorted=True)

    def _soft_codes(
        self,
        z_BF: Tensor,
        k_hat_B: Tensor,
        alpha: float,
        top: RowTop | None = None,
        encoding: SparseEncoding | None = None,
    ) -> tuple[SelectedCodes, Tensor]:
        """Soft-phase codes z ⊙ soft_topk(z, k̂, α) in sparse form and their decoding (B, d).

        ``top``, ``encoding``: see :func:`~softsae_vision.ops.soft_topk_codes`."""
        selected = soft_topk_codes(
            z_BF,
            k_hat_B,
            alpha,
            self.selection_grad,
            k_max=self.k_max,
            validate=debug_checks(),
            top=top,
            encoding=encoding,
        )
        if sparse_decode_enabled():  # through each row's candidates (and any dense remainder)
            return selected, decode_selected(selected, self.W_dec) + self.b_dec
        return selected, self.decode_normalized(selected.dense())

    def k_targets(
        self, xn_BD: Tensor, z_BF: Tensor, mean_k: float, rows: int | None = None
    ) -> Tensor:
        """Per-input target k* (B,) with batch mean about ``mean_k`` (see ``k_targets.py``).

        ``rows``: the batch's size when these are one rank's rows of a data-parallel batch.
        """
        if self.k_signal == "batch":
            return activation_allocation(z_BF, mean_k, rows)
        return allocate(self.gains_and_energy(xn_BD, z_BF)[0], mean_k, rows, self.k_count)

    def _train_output_target(
        self, xn_BD: Tensor, z_BF: Tensor, ctx: StepContext, enc: SparseEncoding | None = None
    ) -> TrainOutput:
        """Soft phase with the estimator trained on per-input targets.

        The estimator learns k*, the batch's best allocation of the mean budget
        ``ctx.k_target`` by marginal reconstruction gain (``_estimator_target_loss``). The
        reconstruction keeps, per ``soft_phase_k``, each input's top-K ("budget": the encoder
        and decoder train as a TopK SAE's), its top-k̂ with k̂ detached ("estimated"), its
        top-max(k̂, K) ("at_least"), or both reconstructions with the mean of their losses
        ("both") or with the top-k̂ loss weighted by the share of the soft phase done ("ramp");
        with both, the codes, the AuxK residual and the dead-latent counts are the top-k̂ ones.
        """
        top = self._row_top(z_BF)
        k_loss, logits_B = self._estimator_target_loss(xn_BD, z_BF, ctx, top)
        k_hat_B = self.k_from_logits(logits_B.detach())
        budget_B = torch.full_like(k_hat_B, ctx.k_target)
        recon_loss = None
        soft_k_B = k_hat_B  # "estimated", "both" and "ramp"
        if self.soft_phase_k == "budget":
            soft_k_B = budget_B
        elif self.soft_phase_k == "at_least":
            soft_k_B = torch.maximum(k_hat_B, budget_B)
        selected, x_hat_BD = self._soft_codes(z_BF, soft_k_B, ctx.alpha, top, enc)
        if self.soft_phase_k in ("both", "ramp"):
            x_hat_budget_BD = self._soft_codes(z_BF, budget_B, ctx.alpha, top, enc)[1]
            w = 0.5 if self.soft_phase_k == "both" else ctx.soft_progress
            recon_loss = (
                w * (x_hat_BD.float() - xn_BD).square().sum(-1).mean()
                + (1 - w) * (x_hat_budget_BD.float() - xn_BD).square().sum(-1).mean()
            )
        return TrainOutput(
            x_hat_BD,
            selected,
            z_BF,
            recon_loss=recon_loss,
            extra_losses={"k": self.k_loss_coeff * k_loss},
            k_hat=k_hat_B,
            encoding=enc,
        )

    def _estimator_target_loss(
        self, xn_BD: Tensor, z_BF: Tensor, ctx: StepContext, top: RowTop | None = None
    ) -> tuple[Tensor, Tensor]:
        """(the estimator's loss against its target (0-d), its logits (B,)).

        The target is k*, the batch's best allocation of the mean budget ``ctx.k_target`` by
        marginal reconstruction gain (``k_signal`` "gain"), or BatchTopK's allocation of the
        activations ("batch"); ``k_loss`` scores log k̂ against it (see
        ``k_targets.estimator_loss``). The target is computed under ``no_grad`` from the
        batch's first ``TARGET_ROWS`` rows: the estimator learns without pushing the SAE.
        ``top``: the rows' largest latents when the caller has them (``_row_top``).
        """
        # the batch's first TARGET_ROWS rows (under DDP: the global batch's, rank 0's first)
        rows, rows_all = batch_group.prefix_rows(len(xn_BD), TARGET_ROWS)
        # the gain-reading estimators read every row's gains: computed once, reused for the target
        reads_gains = self.estimator in ("gains", "loggains", "priced")
        gains = self.gains_and_energy(xn_BD, z_BF, top) if reads_gains else None
        lam = None
        if gains is not None and self.k_signal != "batch":
            lam = price(gains[0][:rows], ctx.k_target, rows_all)
            if self.estimator == "priced":
                self._track_price(lam)
        logits_B = self.k_logits(xn_BD, z_BF, gains)
        # log k̂ before clamping to [1, k_max], so rows below 1 still learn
        log_k_R = math.log(self.k_max) + F.logsigmoid(logits_B[:rows] + self.k_calibration)
        if self.k_signal == "batch":
            target_R = activation_allocation(z_BF[:rows].detach(), ctx.k_target, rows_all)
            k_loss = batch_group.mean((log_k_R - target_R.clamp_min(1.0).log()).square(), rows_all)
        else:
            if gains is None:
                top_R = None if top is None else (top[0][:rows], top[1][:rows])
                gains = self.gains_and_energy(xn_BD[:rows], z_BF[:rows], top_R)
            gains_RM, energy_R = gains[0][:rows], gains[1][:rows, 0]
            k_loss = estimator_loss(
                self.k_loss, log_k_R, gains_RM, ctx.k_target, energy_R, rows_all, lam, self.k_count
            )
        return k_loss, logits_B

    @torch.no_grad()
    def _track_price(self, lam: Tensor) -> None:
        """Move ``gain_price`` λ̄ towards this batch's price (the first batch sets it), no sync.

        A price at or below 0 (an untrained SAE whose budget exceeds its useful latents) counts
        as ``GAIN_FLOOR``, so λ̄ stays a positive scale for the features.
        """
        lam = lam.clamp_min(GAIN_FLOOR)
        tracked = PRICE_MOMENTUM * self.gain_price + (1 - PRICE_MOMENTUM) * lam
        self.gain_price.copy_(torch.where(self.gain_price > 0, tracked, lam))

    @torch.no_grad()
    def calibrate(self, xn_batches: list[Tensor]) -> float:
        """Fit the k̂ logit offset so the mean realised L0 equals K (see :meth:`calibrate_k`)."""
        return self.calibrate_k(xn_batches, self.k)

    @torch.no_grad()
    def calibrate_k(self, xn_batches: list[Tensor], target_l0: float) -> float:
        """Set the logit offset so the mean realised L0 over ``xn_batches`` equals ``target_l0``.

        Realised L0 is monotone in the offset, so a bisection finds it. Returns the offset.
        """
        zs = [self.pre_acts(xn) for xn in xn_batches]
        logits = [self.k_logits(xn, z) for xn, z in zip(xn_batches, zs, strict=True)]
        n_pos = [(z > 0).sum(-1) for z in zs]

        def mean_l0(offset: float) -> float:
            total = sum(
                torch.minimum(
                    self.k_from_logits(lg, offset).floor(),
                    npos.to(lg.dtype),
                ).sum()
                for lg, npos in zip(logits, n_pos, strict=True)
            )
            return float(total) / sum(len(lg) for lg in logits)

        lo, hi = -30.0, 30.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if mean_l0(mid) < target_l0 else (lo, mid)
        self.k_calibration.fill_((lo + hi) / 2)
        return float(self.k_calibration)
