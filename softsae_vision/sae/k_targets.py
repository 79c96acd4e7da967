"""Per-input targets for SoftSAE's k estimator, from the reconstruction itself.

Why a target. SoftSAE's k estimator learns through the soft top-k's gradient in k̂,
∂L/∂k̂ = Σ_i q_i ∂L/∂p_i with q concentrated on the latents at the threshold: for small α it is
the reconstruction gain of the *one* latent at the margin, a noisy, local estimate. Averaged
over many steps the estimator drifts towards the allocation where each input's marginal gain
equals the budget's price (the k hinge): a Lagrangian solution of

    min Σ_b ‖e_b(k_b)‖²  subject to  mean_b k_b = K.

``marginal_gain_targets`` computes that allocation directly, once per step, for the current
encoder and decoder: each input's candidate latents are taken in the encoder's order, the gain
of adding latent j to the first j − 1 (with the encoder's coefficients) is

    Δ_j = ‖e_{j−1}‖² − ‖e_{j−1} − c_j w_j‖² = 2 c_j ⟨e_{j−1}, w_j⟩ − c_j²,

computed for every j at once from the candidates' Gram matrix (so overlapping atoms are not
counted twice), and one price λ for the whole batch keeps the K·B
largest gains (a BatchTopK over gains instead of activations). k*_b, the number of input b's
gains above λ, is the estimator's regression target. The estimator thus learns from the
reconstruction without pushing the encoder (its target is computed under ``no_grad``), and
the encoder trains on the selection as a TopK encoder does.
"""

from __future__ import annotations

import typing

import torch
from torch import Tensor

from softsae_vision.ops import batch_group
from softsae_vision.sae_configs import KCount, KLoss

GAIN_CHUNK_ELEMENTS = 1 << 20
"""Rows are processed in chunks of at most this many (rows · M · d) gathered elements (4 MiB in
fp32): small enough to stay in cache and in memory the allocator reuses. Chunks of 1 << 24
(64 MiB, a fresh mapping each) made the gains 1.7× slower on CPU (B 4096, M 128, d 384), most
of it page faults in the gather."""
GRAM_BLOCK = 8
"""Candidates per block of the blocked Gram product (see ``_chunk_gains``)."""


@torch.no_grad()
def marginal_gains(
    z_BF: Tensor,
    resid_BD: Tensor,
    W_dec_FD: Tensor,
    width: int,
    top: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Gains (B, M) of adding each of the M = ``width`` largest latents in turn, in order.

    ``resid_BD`` is what the latents must explain (x̃ − b_dec). Entries of latents that are
    zero are 0. ``top``: each row's largest latents (values (B, N), indices (B, N)), sorted
    descending, N ≥ M, when the caller already has them (else one ``topk`` here). Rows go in
    chunks so the (rows, M, d) gather stays bounded.
    """
    width = max(1, min(width, z_BF.shape[1]))
    if top is None:
        top = z_BF.float().topk(width, dim=1, sorted=True)
    c_BM, idx_BM = top[0][:, :width].float(), top[1][:, :width]
    W_FD, resid_BD = W_dec_FD.float(), resid_BD.float()
    rows = max(1, GAIN_CHUNK_ELEMENTS // (width * W_dec_FD.shape[1]))
    return torch.cat(
        [
            _chunk_gains(c_BM[i : i + rows], idx_BM[i : i + rows], resid_BD[i : i + rows], W_FD)
            for i in range(0, max(1, z_BF.shape[0]), rows)
        ]
    )


def _chunk_gains(c_BM: Tensor, idx_BM: Tensor, resid_BD: Tensor, W_FD: Tensor) -> Tensor:
    """Δ_j = 2 c_j ⟨e_{j−1}, w_j⟩ − c_j² for candidates (values c, columns idx) in order.

    ⟨e_{j−1}, w_j⟩ = ⟨r − s_b, w_j⟩ − Σ_{i<j in block b} c_i ⟨w_i, w_j⟩, with the candidates cut
    into blocks of GRAM_BLOCK and s_b = Σ c_i w_i over the blocks before j's: batched matmuls
    of O(M·d·GRAM_BLOCK) work per row, where the whole candidates' Gram matrix is O(M²·d)
    (2.2× slower at M 128) and a running sum of the reconstruction makes several passes over
    (B, M, d) (two to three times slower).
    """
    B, M = c_BM.shape
    m = min(GRAM_BLOCK, M)
    pad = -M % m  # padded candidates have c = 0: they add nothing, and their gains are cut
    c_BM = torch.nn.functional.pad(c_BM, (0, pad))
    idx_BM = torch.nn.functional.pad(idx_BM, (0, pad))
    n_blocks = (M + pad) // m
    # index_select, not W[idx]: the same rows, 1.7× faster on CPU (advanced indexing is slow)
    w_XmD = W_FD.index_select(0, idx_BM.flatten()).view(B * n_blocks, m, -1)  # X = B·blocks
    c_Xm1 = c_BM.view(B * n_blocks, m, 1)
    block_sum_BND = torch.bmm(c_Xm1.transpose(1, 2), w_XmD).view(B, n_blocks, -1)
    before_BND = block_sum_BND.cumsum(1) - block_sum_BND  # s_b
    e_XD1 = (resid_BD[:, None, :] - before_BND).view(B * n_blocks, -1, 1)
    proj_BM = torch.bmm(w_XmD, e_XD1).view(B, -1)
    gram_Xmm = torch.bmm(w_XmD, w_XmD.transpose(1, 2)).tril_(-1)
    within_BM = torch.bmm(gram_Xmm, c_Xm1).view(B, -1)
    c_BM = c_BM[:, :M]
    gain_BM = 2 * c_BM * (proj_BM - within_BM)[:, :M] - c_BM.square()
    return torch.where(c_BM > 0, gain_BM, torch.zeros_like(gain_BM))


@torch.no_grad()
def price(gain_BM: Tensor, mean_k: float, rows: int | None = None) -> Tensor:
    """λ: the smallest of the round(mean_k·B) largest gains of the batch (a 0-d tensor).

    ``rows``: B, when these are one rank's rows of a data-parallel batch (default: len); the
    price is then taken over every rank's rows.
    """
    B, M = gain_BM.shape
    B = batch_group.global_rows(B) if rows is None else rows
    n_keep = int(min(B * M, max(1, round(mean_k * B))))
    return batch_group.kth_largest(gain_BM.flatten(), n_keep)


@torch.no_grad()
def count_above(gain_BM: Tensor, price_: Tensor) -> Tensor:
    """Each row's number of positive gains at or above the price λ (B,), float."""
    return ((gain_BM >= price_) & (gain_BM > 0)).sum(1).float()


@torch.no_grad()
def best_prefix(gain_BM: Tensor, price_: Tensor) -> Tensor:
    """Each row's best number of leading candidates at the price λ (B,), float.

    Inference keeps a prefix of each row's latents in the encoder's order (its top-⌊k̂⌋), and
    Σ_{j ≤ k} (Δ_j − λ) is what keeping k of them gains net of their budget cost: the k that
    maximises it (0 when no prefix gains) is the minimiser of ``allocation_regret``. It differs
    from ``count_above`` where the gains are not decreasing (a latent that nearly repeats an
    earlier one gains little, the next one more). A price ≤ 0 counts as 0.
    """
    net_BM = (gain_BM - price_.clamp_min(0)).cumsum(1)
    best = net_BM.max(1)  # the first maximal position: trailing zero gains do not extend it
    return torch.where(best.values > 0, best.indices + 1, 0).float()


K_COUNTS: tuple[KCount, ...] = typing.get_args(KCount)
"""How an input's latents are counted at the batch's price (see ``count_at``)."""


def count_at(gain_BM: Tensor, price_: Tensor, count: KCount = "above") -> Tensor:
    """k*_b (B,) at the price λ: ``count_above`` ("above") or ``best_prefix`` ("prefix")."""
    return best_prefix(gain_BM, price_) if count == "prefix" else count_above(gain_BM, price_)


@torch.no_grad()
def allocate(
    gain_BM: Tensor, mean_k: float, rows: int | None = None, count: KCount = "above"
) -> Tensor:
    """k*_b (B,): row b's count (``count_at``) at the price that keeps the round(mean_k·B)
    largest gains of the batch (by default the number of its gains among them)."""
    return count_at(gain_BM, price(gain_BM, mean_k, rows), count)


def allocation_regret(k_B: Tensor, gain_BM: Tensor, price_: Tensor) -> Tensor:
    """Per-row regret (B,) of keeping k_B latents instead of the best count, at price λ.

    R_b(k) = −Σ_{j ≤ k} (Δ_bj − λ), linear between integers, is what row b's reconstruction
    error plus its budget cost λ·k changes by; its minimum over k is at k*_b. The regret
    R_b(k_b) − min_k R_b(k) ≥ 0 weighs a wrong count by the error it costs, so rows whose
    reconstruction carries much of the batch's energy count for more. Differentiable in k_B.
    """
    B, M = gain_BM.shape
    net_BM = (gain_BM - price_).detach()
    cum_BM1 = torch.cat([net_BM.new_zeros(B, 1), net_BM.cumsum(1)], dim=1)  # (B, M + 1)
    k_B = k_B.clamp(0.0, float(M))
    whole_B = k_B.detach().floor().long().clamp(max=M - 1)
    frac_B = k_B - whole_B
    value_B = cum_BM1.gather(1, whole_B[:, None]).squeeze(1) + frac_B * net_BM.gather(
        1, whole_B[:, None]
    ).squeeze(1)
    return cum_BM1.max(1).values - value_B


@torch.no_grad()
def activation_allocation(z_BF: Tensor, mean_k: float, rows: int | None = None) -> Tensor:
    """k*_b from BatchTopK's rule on the activations themselves (a simpler target) (B,)."""
    B, F = z_BF.shape
    B = batch_group.global_rows(B) if rows is None else rows
    n_keep = int(min(B * F, max(1, round(mean_k * B))))
    price = batch_group.kth_largest(z_BF.flatten(), n_keep)  # over every rank's rows
    return ((z_BF >= price) & (z_BF > 0)).sum(1).float()


K_LOSSES: tuple[KLoss, ...] = typing.get_args(KLoss)
"""How the estimator's prediction is scored against the allocation (see ``estimator_loss``)."""


def estimator_loss(
    kind: KLoss,
    log_k_R: Tensor,
    gain_RM: Tensor,
    mean_k: float,
    energy_R: Tensor,
    rows: int | None = None,
    price_: Tensor | None = None,
    count: KCount = "above",
) -> Tensor:
    """The k estimator's loss for predictions log k̂ ``log_k_R`` (differentiable) (0-d).

    - ``"log"``: (log k̂ − log k*)², every row alike (the default: it tracks the number of
      active atoms best across the suite);
    - ``"linear"``: ((k̂ − k*)/K)², unbiased in k itself, so the budget's mean holds without a
      Jensen gap;
    - ``"weighted"``: the log loss weighted by each row's share of the batch's energy
      ``energy_R`` (‖x̃ − b_dec‖²), the rows that dominate pooled FVU;
    - ``"regret"``: the reconstruction error a wrong count costs (``allocation_regret``, in
      units of the batch's mean energy), i.e. FVU itself;
    - ``"log+regret"``: their sum.

    ``rows``: the batch's size when these are one rank's rows of a data-parallel batch (the
    price and the mean are then the global batch's; the energy normalisation stays per rank).
    ``price_``: the batch's price λ when the caller already has it (``price`` of these gains).
    ``count``: how k* counts a row's latents at λ (``count_at``).
    """
    lam = price(gain_RM, mean_k, rows) if price_ is None else price_
    target_R = count_at(gain_RM, lam, count)
    mean_energy = energy_R.mean().clamp_min(1e-12)

    def log_err() -> Tensor:
        return (log_k_R - target_R.clamp_min(1.0).log()).square()

    def regret() -> Tensor:
        return allocation_regret(log_k_R.exp(), gain_RM, lam) / mean_energy

    per_row = {  # each kind computes only its own terms (the default "log" is on the hot path)
        "log": log_err,
        "linear": lambda: ((log_k_R.exp() - target_R) / mean_k).square(),
        "weighted": lambda: log_err() * energy_R / mean_energy,
        "regret": regret,
        "log+regret": lambda: log_err() + regret(),
    }[kind]()
    return batch_group.mean(per_row, rows)
