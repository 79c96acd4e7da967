"""Loss terms shared by every architecture."""

from __future__ import annotations

from torch import Tensor

from softsae_vision.ops import batch_group
from softsae_vision.ops.sparse_decode import sparse_decode
from softsae_vision.ops.sparse_encode import SparseEncoding


def squared_error(x_hat_BD: Tensor, x_BD: Tensor) -> Tensor:
    """Mean over the batch of ‖x − x̂‖² (normalised space, so it reads like an FVU)."""
    return (x_hat_BD - x_BD).pow(2).sum(-1).mean()


def auxk_loss(
    residual_BD: Tensor,
    pre_acts_BF: Tensor,
    dead_F: Tensor,
    W_dec_FD: Tensor,
    k_aux: int,
    encoding: SparseEncoding | None = None,
) -> Tensor:
    """AuxK: reconstruct the (detached) residual from the top-k_aux dead latents.

    Normalised by the residual's variance so its scale does not shrink as training improves
    the main reconstruction (Gao et al., 2024). Zero when no latent is dead. With an
    ``encoding`` (``pre_acts`` is then its detached z) the encoder's gradient goes through the
    k_aux chosen latents only.
    """
    # Fixed width and a factor for "no dead latent", so nothing is read back to the host:
    # past the dead latents the top-k_aux picks zeros, which add nothing to the codes.
    dead_z_BF = pre_acts_BF * dead_F
    values, idx = dead_z_BF.topk(min(k_aux, dead_z_BF.shape[-1]), dim=-1, sorted=False)
    if encoding is not None:  # pre_acts is detached: the same values, a sparse encoder gradient
        values = encoding.gather(idx) * dead_F[idx]
    recon_BD = sparse_decode(idx, values, W_dec_FD)  # gathers k_aux decoder rows per input
    residual_BD = residual_BD.detach()
    centred_BD = residual_BD - batch_group.mean(residual_BD)  # the global batch's, under DDP
    variance = batch_group.mean(centred_BD.pow(2).sum(-1)).clamp_min(1e-12)
    loss = (recon_BD - residual_BD).pow(2).sum(-1).mean() / variance
    return loss * dead_F.any()
