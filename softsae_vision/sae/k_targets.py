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

computed for every j at once from the running reconstruction of the earlier candidates (so
overlapping atoms are not counted twice), and one price λ for the whole batch keeps the K·B
largest gains (a BatchTopK over gains instead of activations). k*_b, the number of input b's
gains above λ, is the estimator's regression target. The estimator thus learns from the
reconstruction without pushing the encoder (its target is computed under ``no_grad``), and
the encoder trains on the selection as a TopK encoder does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from softsae_vision.ops import batch_group


@torch.no_grad()
def marginal_gains(z_BF: Tensor, resid_BD: Tensor, W_dec_FD: Tensor, width: int) -> Tensor:
    """Gains (B, M) of adding each of the M = ``width`` largest latents in turn, in order.

    ``resid_BD`` is what the latents must explain (x̃ − b_dec). Entries of latents that are
    zero are 0.
    """
    width = max(1, min(width, z_BF.shape[1]))
    c_BM, idx_BM = z_BF.float().topk(width, dim=1, sorted=True)
    w_BMD = W_dec_FD.float()[idx_BM]  # (B, M, d)
    proj_BM = torch.einsum("bd,bmd->bm", resid_BD.float(), w_BMD)
    # ⟨e_{j−1}, w_j⟩ = ⟨r, w_j⟩ − ⟨Σ_{i<j} c_i w_i, w_j⟩: the reconstruction of the first j − 1
    # latents is an exclusive running sum along the candidates, O(M·d) per row (not a Gram matrix)
    parts_BMD = c_BM[:, :, None] * w_BMD
    before_BMD = parts_BMD.cumsum(dim=1) - parts_BMD
    earlier_BM = (before_BMD * w_BMD).sum(-1)
    gain_BM = 2 * c_BM * (proj_BM - earlier_BM) - c_BM.square()
    return torch.where(c_BM > 0, gain_BM, torch.zeros_like(gain_BM))


@torch.no_grad()
def allocate(gain_BM: Tensor, mean_k: float, rows: int | None = None) -> Tensor:
    """k*_b = number of row b's gains among the round(mean_k·B) largest of the batch (B,).

    ``rows``: B, when these are one rank's rows of a data-parallel batch (default: len).
    """
    B, M = gain_BM.shape
    B = batch_group.global_rows(B) if rows is None else rows
    n_keep = int(min(B * M, max(1, round(mean_k * B))))
    flat = gain_BM.flatten()
    price = batch_group.kth_largest(flat, n_keep)  # over every rank's rows
    chosen_BM = (gain_BM >= price) & (gain_BM > 0)
    return chosen_BM.sum(1).float()


@torch.no_grad()
def activation_allocation(z_BF: Tensor, mean_k: float, rows: int | None = None) -> Tensor:
    """k*_b from BatchTopK's rule on the activations themselves (a simpler target) (B,)."""
    B, F = z_BF.shape
    B = batch_group.global_rows(B) if rows is None else rows
    n_keep = int(min(B * F, max(1, round(mean_k * B))))
    price = batch_group.kth_largest(z_BF.flatten(), n_keep)  # over every rank's rows
    return ((z_BF >= price) & (z_BF > 0)).sum(1).float()
