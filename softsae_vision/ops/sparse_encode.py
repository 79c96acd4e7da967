"""Encoder gradients through the selected latents only.

A TopK-style SAE keeps K of the F pre-activations z = ReLU((x̃ − b_dec) W_encᵀ + b_enc) of each
input, so the gradient reaching z has K nonzeros per row, yet autograd's backward of the encoder
matmul is two dense products, (B, F)ᵀ(B, d) for W_enc and (B, F)(F, d) for the input: most of
a step's arithmetic, on zeros. :class:`SparseEncoding` computes z once without gradient (for the
selection, the statistics and the AuxK candidates) and hands out its selected entries with a
gradient that flows only through them (:class:`_SelectedPreActs`):

- ∂W_enc[f] = Σ g_bf · (x̃_b − b_dec) over the rows b that selected f: one ``embedding_bag``
  with a bag per latent, over the entries sorted by latent;
- ∂b_enc[f] = Σ_b g_bf (an index-add), and ∂b_dec = −∂b_enc · W_enc (one (F,)·(F, d) product);
- ∂x̃ (only if the input needs a gradient) = Σ_k g_bk W_enc[idx_bk]: an ``embedding_bag``.

O(B·K·d) work in place of O(B·F·d), and no host synchronisation (sorts, searches and bags of
fixed size). ``dense_selected_pre_acts`` is the eager twin: the dense pre-activations with
autograd's own backward, gathered at the same entries.

``SOFTSAE_SPARSE_DECODE`` (read by :func:`sparse_encode_enabled`) switches it with the sparse
decoder: ``0`` dense decoder and encoder gradient, ``decode`` the sparse decoder with the dense
encoder gradient, ``1`` both sparse on every device, unset or ``auto`` the sparse decoder
everywhere and the sparse encoder gradient only on the device types in SPARSE_ENCODE_DEVICES,
where it was measured faster: the CPU (``bench_train_step.py --encoder-grad``, B 4096, d 384,
F 4096, one thread: TopK steps 1.43× faster, BatchTopK 1.37×, Matryoshka 1.17×, SoftSAE's hard
phase 1.11×). No GPU has measured it yet (``bench_gpu.py`` does).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from softsae_vision.ops.sparse_decode import SPARSE_DECODE_ENV, row_offsets

SPARSE_ENCODE_DEVICES: tuple[str, ...] = ("cpu",)
"""Device types where ``auto`` takes the sparse encoder gradient (measured faster there)."""


def sparse_encode_enabled(device: torch.device) -> bool:
    """Whether the encoder's gradient goes through the selected latents on ``device``."""
    value = os.environ.get(SPARSE_DECODE_ENV, "auto").strip().lower()
    if value in ("0", "decode"):
        return False
    if value == "auto":
        return device.type in SPARSE_ENCODE_DEVICES
    return True


class _SelectedPreActs(torch.autograd.Function):
    """z[rows, cols] (N,) of a no-grad z, with the encoder's gradient through those entries."""

    @staticmethod
    def forward(ctx, z_BF, xn_BD, b_dec_D, W_FD, b_enc_F, rows_N, cols_N):  # type: ignore[override]
        vals_N = z_BF[rows_N, cols_N]
        ctx.save_for_backward(xn_BD, b_dec_D, W_FD, rows_N, cols_N, vals_N)
        ctx.n_latents = z_BF.shape[1]
        return vals_N

    @staticmethod
    def backward(ctx, g_N):  # type: ignore[override]
        xn_BD, b_dec_D, W_FD, rows_N, cols_N, vals_N = ctx.saved_tensors
        dtype = vals_N.dtype  # the dtype z was computed in (the autocast one, if any)
        g_N = torch.where(vals_N > 0, g_N, 0).to(dtype)  # ReLU: entries at 0 pass nothing
        need_x, need_b_dec, need_W, need_b_enc = ctx.needs_input_grad[1:5]
        grad_x = grad_b_dec = grad_W = grad_b_enc = None
        if need_b_enc or need_b_dec:
            acc = torch.promote_types(dtype, torch.float32)  # at least fp32 sums
            sum_F = g_N.new_zeros(ctx.n_latents, dtype=acc).index_add(0, cols_N, g_N.to(acc))
            if need_b_enc:
                grad_b_enc = sum_F.to(W_FD.dtype)
            if need_b_dec:
                grad_b_dec = -(sum_F @ W_FD.to(acc)).to(b_dec_D.dtype)
        if need_W:
            # Bags per latent: the entries sorted by latent (int32 sorts far faster on a CPU).
            cols_sorted, order = cols_N.to(torch.int32).sort(stable=True)
            latents_F = torch.arange(ctx.n_latents, device=cols_N.device, dtype=torch.int32)
            starts_F = torch.searchsorted(cols_sorted, latents_F)
            xc_BD = (xn_BD - b_dec_D).to(dtype)
            grad_W = F.embedding_bag(
                rows_N[order], xc_BD, starts_F, per_sample_weights=g_N[order], mode="sum"
            ).to(W_FD.dtype)
        if need_x:
            grad_x = input_grad(rows_N, cols_N, g_N, W_FD.to(dtype), xn_BD.shape[0])
            grad_x = grad_x.to(xn_BD.dtype)
        return None, grad_x, grad_b_dec, grad_W, grad_b_enc, None, None


def input_grad(rows_N: Tensor, cols_N: Tensor, g_N: Tensor, W_FD: Tensor, n_rows: int) -> Tensor:
    """Σ g_n W[cols_n] into row rows_n (n_rows, d); ``rows_N`` sorted ascending."""
    starts_B = row_offsets(rows_N, n_rows)
    return F.embedding_bag(cols_N, W_FD, starts_B, per_sample_weights=g_N, mode="sum")


def row_major(idx_BK: Tensor) -> tuple[Tensor, Tensor]:
    """(rows (B·K,), cols (B·K,)) of a per-row index (B, K), rows ascending."""
    B, K = idx_BK.shape
    rows_N = torch.arange(B, device=idx_BK.device).repeat_interleave(K)
    return rows_N, idx_BK.reshape(-1)


class SparseEncoding:
    """Pre-activations of a batch, computed once without gradient, read with a sparse one.

    ``z_BF`` is detached; :meth:`gather` / :meth:`gather_flat` return selected entries whose
    gradient reaches W_enc, b_enc and b_dec (and x̃, if it asks) through those entries only.
    """

    def __init__(self, xn_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, b_dec_D: Tensor):
        self.xn_BD, self.W_enc_FD, self.b_enc_F, self.b_dec_D = xn_BD, W_enc_FD, b_enc_F, b_dec_D
        with torch.no_grad():
            self.z_BF = dense_pre_acts(xn_BD, W_enc_FD, b_enc_F, b_dec_D)
        self._dense_BF: Tensor | None = None

    def gather_flat(self, rows_N: Tensor, cols_N: Tensor) -> Tensor:
        """z[rows, cols] (N,) with the sparse encoder gradient; ``rows`` sorted ascending."""
        return _SelectedPreActs.apply(
            self.z_BF, self.xn_BD, self.b_dec_D, self.W_enc_FD, self.b_enc_F, rows_N, cols_N
        )

    def gather(self, idx_BK: Tensor) -> Tensor:
        """z.gather(1, idx) (B, K) with the sparse encoder gradient."""
        rows_N, cols_N = row_major(idx_BK)
        return self.gather_flat(rows_N, cols_N).view(idx_BK.shape)

    def kept_flat(self, rows_N: Tensor, cols_N: Tensor, vals_N: Tensor) -> Tensor:
        """A selection's kept values ``vals`` (N,) re-read with the sparse encoder gradient.

        Entries the selection zeroed stay 0 (a row with fewer positive latents than its slots,
        a data-parallel rank's entry outside the global batch's top): re-reading them would
        bring back values the selection dropped. ``rows`` sorted ascending.
        """
        return torch.where(vals_N != 0, self.gather_flat(rows_N, cols_N), 0)

    def kept(self, idx_BK: Tensor, vals_BK: Tensor) -> Tensor:
        """:meth:`kept_flat` for a per-row selection: (B, K) indices and kept values."""
        rows_N, cols_N = row_major(idx_BK)
        return self.kept_flat(rows_N, cols_N, vals_BK.reshape(-1)).view(idx_BK.shape)

    def dense(self) -> Tensor:
        """z (B, F) recomputed once with autograd's dense gradient: for the rows a selection
        cannot serve through its chosen entries (the soft top-k's densely served rows)."""
        if self._dense_BF is None:
            self._dense_BF = dense_pre_acts(self.xn_BD, self.W_enc_FD, self.b_enc_F, self.b_dec_D)
        return self._dense_BF


def dense_selected_pre_acts(
    xn_BD: Tensor,
    W_enc_FD: Tensor,
    b_enc_F: Tensor,
    b_dec_D: Tensor,
    rows_N: Tensor,
    cols_N: Tensor,
) -> Tensor:
    """The eager twin of :meth:`SparseEncoding.gather_flat`: dense z, autograd's backward."""
    return dense_pre_acts(xn_BD, W_enc_FD, b_enc_F, b_dec_D)[rows_N, cols_N]


def dense_pre_acts(xn_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, b_dec_D: Tensor) -> Tensor:
    """z = ReLU((x̃ − b_dec) W_encᵀ + b_enc) (B, F): the pre-activations of every SAE
    (``BaseSAE.pre_acts``), and of the encoding's dense twin."""
    return torch.relu(torch.addmm(b_enc_F, xn_BD - b_dec_D, W_enc_FD.t()))
