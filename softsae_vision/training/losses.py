"""Loss terms shared by every architecture."""

from __future__ import annotations

import torch
from torch import Tensor

from softsae_vision.devices import device_switch
from softsae_vision.ops import batch_group
from softsae_vision.ops.sparse_decode import sparse_decode
from softsae_vision.ops.sparse_encode import SparseEncoding


def squared_error(x_hat_BD: Tensor, x_BD: Tensor) -> Tensor:
    """Mean over the batch of ‖x − x̂‖² (normalised space, so it reads like an FVU)."""
    return (x_hat_BD - x_BD).pow(2).sum(-1).mean()


AUXK_PATH_ENV = "SOFTSAE_AUXK_PATH"
COMPACT_DEAD_PER_AUX = 12
"""The compact AuxK serves batches with at most this many dead latents per k_aux.

Its cost grows with the dead latents' columns (N·d per input: a recomputed encoder slice and
one (B, N) × (N, d) product), the fixed path's mostly with the k_aux decoder rows it gathers
per input (k_aux·d, plus a pass over the F latents): so the crossover is a number of dead
latents in units of k_aux, not a share of F. ``benchmarks/bench_auxk.py`` (one thread, seven
shapes from B 256, d 64, F 512 to B 4096, d 384, F 16384, k_aux = d/2) puts it between 11 and
21·k_aux where there is one; at 12·k_aux the rule picks the faster path, or one within 3 %
of it, at every share measured except the smallest shape's 80 % (5.6 against 3.8 ms). The
share rule it replaces (compact up to half of F dead) was 1.2-1.8× slower at F 16384, d 384,
30-50 % dead, and 2.2× slower at F 1536, d 768, 80 % dead."""


def auxk_path(device: torch.device) -> str:
    """ "fixed" (no host sync, a (B, F) pass) or "compact" (the dead latents' columns only).

    ``SOFTSAE_AUXK_PATH`` = auto (default: compact on CPU, fixed elsewhere), fixed or compact.
    Both compute the same loss; the compact path reads the number of dead latents back to the
    host, which costs nothing on a CPU and stalls a GPU.
    """
    return device_switch(AUXK_PATH_ENV, "compact", "fixed", device)


def compact_serves(n_dead: int, k_aux: int) -> bool:
    """Whether the compact path serves ``n_dead`` dead latents (see COMPACT_DEAD_PER_AUX)."""
    return n_dead <= COMPACT_DEAD_PER_AUX * k_aux


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
    k_aux chosen latents only. ``auxk_path`` picks how the dead latents are found.
    """
    recon_BD = None
    if auxk_path(dead_F.device) == "compact":
        dead_N = dead_F.nonzero().squeeze(1)  # a host read
        if len(dead_N) == 0:
            return residual_BD.new_zeros(())
        if compact_serves(len(dead_N), k_aux):
            recon_BD = _dead_recon_compact(pre_acts_BF, dead_N, W_dec_FD, k_aux, encoding)
    if recon_BD is None:
        recon_BD = _dead_recon_fixed(pre_acts_BF, dead_F, W_dec_FD, k_aux, encoding)
    residual_BD = residual_BD.detach()
    centred_BD = residual_BD - batch_group.mean(residual_BD)  # the global batch's, under DDP
    variance = batch_group.mean(centred_BD.pow(2).sum(-1)).clamp_min(1e-12)
    loss = (recon_BD - residual_BD).pow(2).sum(-1).mean() / variance
    return loss * dead_F.any()


def _dead_recon_fixed(
    pre_acts_BF: Tensor,
    dead_F: Tensor,
    W_dec_FD: Tensor,
    k_aux: int,
    encoding: SparseEncoding | None,
) -> Tensor:
    """The top-k_aux dead latents' reconstruction (B, d), fixed shapes and no host read: past
    the dead latents the top-k_aux picks zeros, which add nothing to the codes."""
    dead_z_BF = pre_acts_BF * dead_F
    values, idx = dead_z_BF.topk(min(k_aux, dead_z_BF.shape[-1]), dim=-1, sorted=False)
    if encoding is not None:  # pre_acts is detached: the same values, a sparse encoder gradient
        values = encoding.gather(idx) * dead_F[idx]
    return sparse_decode(idx, values, W_dec_FD)  # gathers k_aux decoder rows per input


def _dead_recon_compact(
    pre_acts_BF: Tensor,
    dead_N: Tensor,
    W_dec_FD: Tensor,
    k_aux: int,
    encoding: SparseEncoding | None,
) -> Tensor:
    """The same reconstruction from the N dead latents' columns only: their pre-activations
    (B, N) recomputed with autograd from the encoding's inputs (or read from ``pre_acts``), all
    but each row's top-k_aux masked when N > k_aux, and one (B, N) × (N, d) product. Dense
    products over a few columns beat gathering k_aux decoder rows per input."""
    if encoding is None:
        z_BN = pre_acts_BF.index_select(1, dead_N)
    else:
        xc_BD = encoding.xn_BD - encoding.b_dec_D
        W_ND = encoding.W_enc_FD.index_select(0, dead_N)
        z_BN = torch.relu(torch.addmm(encoding.b_enc_F[dead_N], xc_BD, W_ND.t()))
    if len(dead_N) > k_aux:
        top_BK = z_BN.detach().topk(k_aux, dim=1, sorted=False).indices
        z_BN = z_BN * torch.zeros_like(z_BN).scatter_(1, top_BK, 1.0)
    return z_BN @ W_dec_FD.index_select(0, dead_N).to(z_BN.dtype)
