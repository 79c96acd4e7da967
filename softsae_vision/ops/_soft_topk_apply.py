"""Soft top-k output and gradients from a plan (see _soft_topk_plan.py)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import torch
from torch import Tensor

from softsae_vision.ops._lapsum import implicit_backward, implicit_grad_k, laplace_cdf
from softsae_vision.ops._row_blocks import by_row_blocks, compute_dtype, row_chunks
from softsae_vision.ops._soft_topk_plan import DenseRows, FixedRows, Plan


def _dense_chunks(
    x_BF: Tensor, plan: Plan, alpha: float, cd: torch.dtype
) -> Iterator[tuple[slice | Tensor, Tensor]]:
    """(rows: a slice or row ids, t = (x − b)/α (C, F) in dtype cd), chunk by chunk.

    t = ((x − ref) − u·α)/α with ref an entry of the row (exact in x's dtype) near b, so
    the subtraction loses nothing where it matters, in float32 too.
    """
    if not plan.dense:
        return
    if len(plan.dense) == 1:
        group = plan.dense[0]
    else:  # one group: fewer, fuller chunks
        every = torch.arange(x_BF.shape[0], device=x_BF.device)
        group = DenseRows(
            torch.cat([every if g.rows is None else g.rows for g in plan.dense]),
            torch.cat([g.ref for g in plan.dense]),
            torch.cat([g.u for g in plan.dense]),
            "merged",
        )
    ref_R = group.ref.to(cd)
    shift_R = (group.u * alpha).to(cd)
    for sl in row_chunks(group.u.numel(), x_BF.shape[1]):
        rows = sl if group.rows is None else group.rows[sl]
        t_CF = (x_BF[rows].to(cd) - ref_R[sl, None]).sub_(shift_R[sl, None]).div_(alpha)
        yield rows, t_CF


def _put_rows(dst: Tensor, rows: slice | Tensor, src: Tensor) -> None:
    if isinstance(rows, slice):
        dst[rows] = src
    else:
        dst.index_copy_(0, rows, src)


def candidate_weights(t_RN: Tensor, out_dtype: torch.dtype) -> Tensor:
    """Φ(t) (R, N) rounded once to out_dtype: the weights of a sparse group's candidates."""
    (p_RN,) = by_row_blocks(lambda t: (laplace_cdf(t).to(out_dtype),), t_RN)
    return p_RN


def candidate_grads(
    t_RN: Tensor, g_RN: Tensor, alpha: float, need_x: bool
) -> tuple[Tensor | None, Tensor]:
    """(∂L/∂r (R, N) float64 or None when not needed, ∂L/∂k (R,) float64) for candidates."""
    if need_x:
        gx_RN, gk_R = by_row_blocks(partial(implicit_backward, alpha=alpha), t_RN, g_RN)
        return gx_RN, gk_R
    return None, by_row_blocks(implicit_grad_k, t_RN, g_RN)[0]


def _fixed_dense_t(x_BF: Tensor, fx: FixedRows, alpha: float, cd: torch.dtype, sl: slice):
    """t = (x − b)/α (C, F) in dtype cd for rows sl of a fixed plan (as _dense_chunks)."""
    ref_C1 = fx.ref[sl, None].to(cd)
    shift_C1 = (fx.u[sl, None] * alpha).to(cd)
    return (x_BF[sl].to(cd) - ref_C1).sub_(shift_C1).div_(alpha)


def _fixed_forward(x_BF: Tensor, fx: FixedRows, alpha: float, out_dtype: torch.dtype) -> Tensor:
    """p (B, F): dense rows computed whole (masked), then every row's candidates scattered."""
    p_BF = torch.empty(x_BF.shape, dtype=out_dtype, device=x_BF.device)
    for sl in row_chunks(x_BF.shape[0], x_BF.shape[1]):
        p_CF = laplace_cdf(_fixed_dense_t(x_BF, fx, alpha, torch.float64, sl)).to(out_dtype)
        p_BF[sl] = torch.where(fx.dense[sl, None], p_CF, 0.0)
    if fx.idx.shape[1]:
        cand_BN = torch.where(
            fx.dense[:, None], p_BF.gather(1, fx.idx), candidate_weights(fx.t, out_dtype)
        )
        p_BF.scatter_(1, fx.idx, cand_BN)
    return p_BF


def _fixed_backward(
    x_BF: Tensor, fx: FixedRows, alpha: float, grad_p_BF: Tensor, need_x: bool
) -> tuple[Tensor | None, Tensor]:
    """(∂L/∂x (B, F) or None, ∂L/∂k (B,) float64) for a fixed plan: masks, no host branch."""
    cd = compute_dtype(x_BF.dtype)
    grad_x_BF = torch.empty_like(x_BF) if need_x else None
    gk_dense_B = torch.empty(x_BF.shape[0], dtype=torch.float64, device=x_BF.device)
    for sl in row_chunks(x_BF.shape[0], x_BF.shape[1]):
        t_CF = _fixed_dense_t(x_BF, fx, alpha, cd, sl)
        g_CF = grad_p_BF[sl].to(cd)
        dense_C1 = fx.dense[sl, None]
        if grad_x_BF is not None:
            gx_CF, gk_C = implicit_backward(t_CF, g_CF, alpha)
            grad_x_BF[sl] = torch.where(dense_C1, gx_CF.to(x_BF.dtype), 0.0)
        else:
            (gk_C,) = implicit_grad_k(t_CF, g_CF)
        gk_dense_B[sl] = gk_C.double()
    if not fx.idx.shape[1]:  # the dense rows alone: the others are constant 0
        return grad_x_BF, torch.where(fx.dense, gk_dense_B, 0.0)
    g_BN = grad_p_BF.gather(1, fx.idx).double()
    gx_BN, gk_B = candidate_grads(fx.t, g_BN, alpha, need_x)
    grad_k_B = torch.where(fx.dense, gk_dense_B, gk_B)
    if grad_x_BF is not None and gx_BN is not None:
        keep_BN = grad_x_BF.gather(1, fx.idx)
        grad_x_BF.scatter_(1, fx.idx, torch.where(fx.dense[:, None], keep_BN, gx_BN.to(x_BF.dtype)))
    return grad_x_BF, grad_k_B


def forward_output(x_BF: Tensor, plan: Plan, alpha: float, out_dtype: torch.dtype) -> Tensor:
    """p (B, F) in out_dtype: candidates scattered into zeros, dense rows computed whole."""
    if plan.fixed is not None:
        return _fixed_forward(x_BF, plan.fixed, alpha, out_dtype)
    p_BF = torch.zeros(x_BF.shape, dtype=out_dtype, device=x_BF.device)
    for grp in plan.sparse:
        p_RN = candidate_weights(grp.t, out_dtype)
        if grp.rows is None:
            p_BF.scatter_(1, grp.idx, p_RN)
        else:
            p_BF.index_put_((grp.rows[:, None].expand_as(grp.idx), grp.idx), p_RN)
    # float64 here: Φ(t) rounded once, to the output dtype (|t|·eps would be lost in float32)
    for rows, t_CF in _dense_chunks(x_BF, plan, alpha, torch.float64):
        _put_rows(p_BF, rows, laplace_cdf(t_CF).to(out_dtype))
    return p_BF


def backward_grads(
    x_BF: Tensor, plan: Plan, alpha: float, grad_p_BF: Tensor, need_x: bool = True
) -> tuple[Tensor | None, Tensor]:
    """(∂L/∂x (B, F) in x's dtype, or None unless need_x; ∂L/∂k (B,) float64) from ∂L/∂p."""
    if plan.fixed is not None:
        return _fixed_backward(x_BF, plan.fixed, alpha, grad_p_BF, need_x)
    grad_x_BF = torch.zeros_like(x_BF) if need_x else None
    grad_k_B = torch.zeros(x_BF.shape[0], dtype=torch.float64, device=x_BF.device)
    for grp in plan.sparse:
        if grp.rows is None:
            g_RN = grad_p_BF.gather(1, grp.idx).double()
        else:
            g_RN = grad_p_BF[grp.rows[:, None], grp.idx].double()
        gx_RN, gk_R = candidate_grads(grp.t, g_RN, alpha, need_x)
        if grp.rows is None:
            grad_k_B.copy_(gk_R)
        else:
            grad_k_B.index_copy_(0, grp.rows, gk_R)
        if gx_RN is None or grad_x_BF is None:
            continue
        if grp.rows is None:
            grad_x_BF.scatter_(1, grp.idx, gx_RN.to(x_BF.dtype))
        else:
            rows_RN = grp.rows[:, None].expand_as(grp.idx)
            grad_x_BF.index_put_((rows_RN, grp.idx), gx_RN.to(x_BF.dtype))
    for rows, t_CF in _dense_chunks(x_BF, plan, alpha, compute_dtype(x_BF.dtype)):
        g_CF = grad_p_BF[rows].to(t_CF.dtype)
        if grad_x_BF is not None:
            gx_CF, gk_C = implicit_backward(t_CF, g_CF, alpha)
            _put_rows(grad_x_BF, rows, gx_CF.to(x_BF.dtype))
        else:
            (gk_C,) = implicit_grad_k(t_CF, g_CF)
        _put_rows(grad_k_B, rows, gk_C.double())
    return grad_x_BF, grad_k_B
