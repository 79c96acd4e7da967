"""Decoding through the selected latents only: x̂ = Σ_j c_j W_dec[j] over the kept j.

An SAE's codes have a few nonzeros per row, so the decoder product codes @ W_dec and its two
gradient products are mostly multiplications by zero. ``sparse_decode`` gathers the selected
rows of W_dec and sums them, weighted (``torch.nn.functional.embedding_bag`` in "sum" mode,
whose backward scatters into W_dec's rows with an index-add and gives the codes' gradient as
one dot product per selected latent): O(B·K·d) work instead of O(B·F·d). ``dense_decode`` is
its eager twin (scatter into a dense (B, F) and one matmul); ``SOFTSAE_SPARSE_DECODE=0`` makes
every SAE use the twin.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops.selected_codes import SelectedCodes

SPARSE_DECODE_ENV = "SOFTSAE_SPARSE_DECODE"


def sparse_decode_enabled() -> bool:
    """Whether the SAEs decode through the selected latents (``SOFTSAE_SPARSE_DECODE=0``: no)."""
    return os.environ.get(SPARSE_DECODE_ENV, "1").strip() != "0"


def _compute_dtype(W_FD: Tensor) -> torch.dtype:
    """W's dtype, or the autocast dtype inside an autocast region (embedding_bag has no policy)."""
    kind = W_FD.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return W_FD.dtype


def row_offsets(rows_N: Tensor, n_rows: int) -> Tensor:
    """Where each of rows 0..n_rows−1 starts among entries whose ``rows_N`` are ascending
    (n_rows,): the ``offsets`` of :func:`sparse_decode` for entries listed one by one."""
    return torch.searchsorted(rows_N, torch.arange(n_rows, device=rows_N.device))


def sparse_decode(
    idx_BK: Tensor, vals_BK: Tensor, W_FD: Tensor, offsets_B: Tensor | None = None
) -> Tensor:
    """Σ_k vals[b, k] · W[idx[b, k]] (B, d), differentiable in vals and W (not in idx).

    With ``offsets_B`` idx and vals are flat (N,) and row b takes entries
    [offsets[b], offsets[b + 1]) (variable counts per row, as BatchTopK selects).
    """
    dtype = _compute_dtype(W_FD)
    return F.embedding_bag(
        idx_BK, W_FD.to(dtype), offsets_B, per_sample_weights=vals_BK.to(dtype), mode="sum"
    )


def dense_decode(idx_BK: Tensor, vals_BK: Tensor, W_FD: Tensor) -> Tensor:
    """The eager twin of :func:`sparse_decode`: scatter into a dense (B, F), then one matmul."""
    dtype = _compute_dtype(W_FD)
    codes_BF = vals_BK.new_zeros((vals_BK.shape[0], W_FD.shape[0]), dtype=dtype)
    return codes_BF.scatter_add(1, idx_BK, vals_BK.to(dtype)) @ W_FD.to(dtype)


def decode_rows(
    rows_R: Tensor | None, idx_RK: Tensor, vals_RK: Tensor, W_FD: Tensor, n_rows: int
) -> Tensor:
    """(n_rows, d): the selected latents of rows ``rows_R`` (None: all) decoded, 0 elsewhere."""
    part_RD = sparse_decode(idx_RK, vals_RK, W_FD)
    if rows_R is None:
        return part_RD
    return part_RD.new_zeros((n_rows, part_RD.shape[1])).index_add(0, rows_R, part_RD)


def decode_selected(codes: SelectedCodes, W_FD: Tensor) -> Tensor:
    """codes.dense() @ W (B, d), through the candidate groups, the flat groups and the dense
    remainder."""
    B = codes.shape[0]
    out_BD = None
    for rows_R, idx_RK, vals_RK in codes.groups:
        part_BD = decode_rows(rows_R, idx_RK, vals_RK, W_FD, B)
        out_BD = part_BD if out_BD is None else out_BD + part_BD
    for rows_N, cols_N, vals_N in codes.flat:  # rows ascending: one bag per row
        part_BD = sparse_decode(cols_N, vals_N, W_FD, row_offsets(rows_N, B))
        out_BD = part_BD if out_BD is None else out_BD + part_BD
    if codes.rest is not None:
        dtype = _compute_dtype(W_FD)
        rest_BD = codes.rest.to(dtype) @ W_FD.to(dtype)
        out_BD = rest_BD if out_BD is None else out_BD + rest_BD
    if out_BD is None:
        raise SoftSAEError("SelectedCodes holds nothing")
    return out_BD
