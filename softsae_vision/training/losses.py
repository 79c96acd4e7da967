"""Loss terms shared by every architecture."""

from __future__ import annotations

import torch
from torch import Tensor


def squared_error(x_hat_BD: Tensor, x_BD: Tensor) -> Tensor:
    """Mean over the batch of ‖x − x̂‖² (normalised space, so it reads like an FVU)."""
    return (x_hat_BD - x_BD).pow(2).sum(-1).mean()


def auxk_loss(
    residual_BD: Tensor, pre_acts_BF: Tensor, dead_F: Tensor, W_dec_FD: Tensor, k_aux: int
) -> Tensor:
    """AuxK: reconstruct the (detached) residual from the top-k_aux dead latents.

    Normalised by the residual's variance so its scale does not shrink as training improves
    the main reconstruction (Gao et al., 2024). Zero when no latent is dead.
    """
    n_dead = int(dead_F.sum())
    if n_dead == 0:
        return pre_acts_BF.new_zeros(())
    dead_z_BF = pre_acts_BF * dead_F
    values, idx = dead_z_BF.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    aux_codes_BF = torch.zeros_like(dead_z_BF).scatter(-1, idx, values)
    recon_BD = aux_codes_BF @ W_dec_FD
    residual_BD = residual_BD.detach()
    variance = (residual_BD - residual_BD.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return (recon_BD - residual_BD).pow(2).sum(-1).mean() / variance
