"""Which entries of each row the LapSum solve needs, and the forward/backward over them.

Two kinds of row groups, both exact to float rounding:

- sparse rows: the top-n candidates of the row (``torch.topk``) carry all the mass. The
  threshold is solved on them alone, then checked: every excluded entry lies at or below the
  sentinel (the (n)-th largest value), so their total mass is at most F·½e^{Δ} with
  Δ = (sentinel − b)/α. The row is accepted when that bound is below 2⁻³² of the
  candidates' Σφ (and of 1), so each kept weight is off by a relative 2⁻³² at most and every
  excluded weight (set to 0) is below 2⁻³². Output and gradient touch only the candidates.
- dense rows: the threshold comes from the full sorted row (or, when everything below the
  candidates equals the row minimum, from the candidates plus one knot of that multiplicity);
  output and gradient are computed over the whole row.

The fast plan tries sparse rows first (n = ceil(max k) + margin), widens n for rows that
fail when the density of values suggests a wider n will do, and sends the rest to dense rows.
``SOFTSAE_SOFT_TOPK_FAST=0`` (or ``fast=False``) sends every row to the full sort.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from softsae_vision.ops import _inline_math as im
from softsae_vision.ops._lapsum import LOG2, implicit_backward, laplace_cdf, solve_threshold

FAST_ENV = "SOFTSAE_SOFT_TOPK_FAST"
_LOG_TAIL_TOL = -32 * LOG2  # accepted excluded mass, relative to min(1, Σφ of candidates)
_CHUNK_ELEMS = 1 << 21  # rows per dense float64 chunk: at most this many elements
_MAX_WIDENINGS = 2


def fast_path_enabled() -> bool:
    """Whether the candidate (top-n) path is on; ``SOFTSAE_SOFT_TOPK_FAST=0`` turns it off."""
    return os.environ.get(FAST_ENV, "1").strip() != "0"


@dataclass
class SparseRows:
    """Rows solved on their top candidates.

    ``rows`` None means every row of the batch; rows served by a later group then have
    t = −inf throughout (output 0 here, overwritten by that group).
    """

    rows: Tensor | None  # (R,) int64
    idx: Tensor  # (R, N) int64 column of each candidate
    t: Tensor  # (R, N) float64 (r − b)/α; −inf where a candidate takes no part


@dataclass
class DenseRows:
    """Rows whose output and gradient cover the whole row, from the threshold u = b/α."""

    rows: Tensor | None  # (R,) int64; None means every row of the batch, in order
    u: Tensor  # (R,) float64 threshold b/α


@dataclass
class Plan:
    sparse: list[SparseRows] = field(default_factory=list)
    dense: list[DenseRows] = field(default_factory=list)


def _chunks(n_rows: int, n_cols: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMS // max(n_cols, 1))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def _full_sort_thresholds(x_RF: Tensor, k_R: Tensor, alpha: float) -> Tensor:
    """u (R,) from the whole sorted row: the general path, exact for any input."""
    u_parts = []
    for sl in _chunks(x_RF.shape[0], x_RF.shape[1]):
        v_CF = torch.sort(x_RF[sl], dim=1, descending=True).values.double() / alpha
        u_parts.append(solve_threshold(v_CF, k_R[sl]))
    return torch.cat(u_parts) if u_parts else k_R.new_zeros(0)


# Row blocks for the candidate math stay below torch's intra-op grain size (32768 elements),
# so its many small elementwise ops run inline on one thread: on a shared CPU, waking the
# thread pool for each of them costs more than the op itself.
_SERIAL_ELEMS = 32767


def _by_row_blocks(fn, n_cols: int, *tensors: Tensor) -> tuple[Tensor, ...]:
    """fn over row blocks of the tensors (CPU) or all at once (other devices), concatenated."""
    R = tensors[0].shape[0]
    step = max(1, _SERIAL_ELEMS // max(n_cols, 1))
    if tensors[0].device.type != "cpu" or step >= R:
        return fn(*tensors)
    parts = [fn(*(t[i : i + step] for t in tensors)) for i in range(0, R, step)]
    return tuple(torch.cat(outs) for outs in zip(*parts, strict=True))


def _candidate_solve(
    vals_RN: Tensor, k_R: Tensor, *, alpha: float, F: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Solve each row on its top n−1 values (vals_RN sorted descending, sentinel last).

    Returns t (R, n−1) float64 (−inf where a candidate takes no part or the row failed),
    ok (R,) whether the sentinel bounds the excluded mass, and deficit (R,): how many α the
    sentinel would have to drop for the row to pass (0 when ok).
    """
    v_RN = vals_RN.double() / alpha
    v_cand, v_last_R1 = v_RN[:, :-1], v_RN[:, -1:]
    # Candidates tied with the sentinel go with the excluded entries (weight 0, output 0),
    # so that equal inputs get equal outputs.
    w_cand = (v_cand > v_last_R1).double()
    u_R1 = solve_threshold(v_cand, k_R, w_cand)[:, None]
    t_RN = torch.where(w_cand > 0, v_cand - u_R1, -math.inf)
    log_sum_phi_R1 = im.logsumexp(-t_RN.abs(), dim=1, keepdim=True) - LOG2
    allowed_R1 = _LOG_TAIL_TOL + log_sum_phi_R1.clamp(max=0.0) - math.log(F / 2)
    excess_R1 = v_last_R1 - u_R1 - allowed_R1
    ok_R1 = excess_R1 <= 0  # False for NaN (rows with no root among the candidates)
    t_RN = torch.where(ok_R1, t_RN, -math.inf)
    deficit_R = torch.nan_to_num(excess_R1[:, 0], nan=math.inf).clamp(min=0.0)
    return t_RN, ok_R1[:, 0], deficit_R


def _first_size(k_max: float, F: int) -> int | None:
    """Candidates (plus the sentinel) for the first try, or None when topk would cost a sort.

    The margin covers the entries within ~31α below the threshold; half of k (at least 8)
    is enough for SAE latents at α ≲ 3e-3 (benchmarks/bench_soft_topk.py); rows that need
    more are widened.
    """
    m = math.ceil(k_max)
    n = m + max(8, math.ceil(m / 2)) + 1
    return n if n <= F // 4 else None


def _widened_size(
    vals_RN: Tensor, deficit_R: Tensor, alpha: float, F: int
) -> tuple[Tensor, int | None]:
    """Rows worth retrying with more candidates, and how many (from the local density)."""
    n = vals_RN.shape[1]
    span_R = ((vals_RN[:, 0] - vals_RN[:, -1]).double() / alpha).clamp(min=1e-300)
    need_R = n + 2.0 * (n - 1) * deficit_R / span_R
    cap = F // 4
    retry = need_R <= cap
    if not bool(retry.any()):
        return retry, None
    n_new = int(min(cap, max(2 * n, math.ceil(float(need_R[retry].max())))))
    return retry, n_new


def _solve_flat_tails(
    x_BF: Tensor, rows: Tensor, vals_RN: Tensor, k_B: Tensor, alpha: float, plan: Plan
) -> Tensor:
    """Serve the rows whose excluded entries all equal the row minimum (ReLU zeros); return
    which rows (R,) bool. One knot of multiplicity F − (n − 1) at the sentinel stands for
    all of them, so the solve on the candidates is exact; output and gradient are dense.
    """
    F, n = x_BF.shape[1], vals_RN.shape[1]
    flat = vals_RN[:, -1] == x_BF[rows].amin(dim=1)
    if bool(flat.any()):
        v_RN = vals_RN[flat].double() / alpha
        w_RN = torch.ones_like(v_RN)
        w_RN[:, -1] = F - (n - 1)
        plan.dense.append(DenseRows(rows[flat], solve_threshold(v_RN, k_B[rows[flat]], w_RN)))
    return flat


def plan_rows(x_BF: Tensor, k_B: Tensor, alpha: float, fast: bool) -> Plan:
    """Solve every row's threshold, grouping rows by the path that serves them exactly."""
    B, F = x_BF.shape
    plan = Plan()
    pending = torch.arange(B, device=x_BF.device)
    n = _first_size(float(k_B.max()), F) if fast and B > 0 else None
    solve = partial(_candidate_solve, alpha=alpha, F=F)
    for stage in range(1 + _MAX_WIDENINGS):
        if n is None or pending.numel() == 0:
            break
        x_R, k_R = (x_BF, k_B) if stage == 0 else (x_BF[pending], k_B[pending])
        vals_RN, idx_RN = torch.topk(x_R, n, dim=1, sorted=True)
        t_RM, ok_R, deficit_R = _by_row_blocks(solve, n, vals_RN, k_R)
        if stage == 0:
            plan.sparse.append(SparseRows(None, idx_RN[:, :-1], t_RM))
        else:
            keep = ok_R.nonzero()[:, 0]
            if keep.numel():
                plan.sparse.append(SparseRows(pending[keep], idx_RN[keep, :-1], t_RM[keep]))
        fail = (~ok_R).nonzero()[:, 0]
        rows, vals_fN, deficit_f = pending[fail], vals_RN[fail], deficit_R[fail]
        if rows.numel():
            flat = _solve_flat_tails(x_BF, rows, vals_fN, k_B, alpha, plan)
            rows, vals_fN, deficit_f = rows[~flat], vals_fN[~flat], deficit_f[~flat]
        n = None
        if rows.numel():
            retry, n = _widened_size(vals_fN, deficit_f, alpha, F)
            if n is not None and not bool(retry.all()):
                plan.dense.append(_full_rows(x_BF, rows[~retry], k_B, alpha))
                rows = rows[retry]
        pending = rows
    if pending.numel():
        plan.dense.append(_full_rows(x_BF, pending, k_B, alpha))
    return plan


def _full_rows(x_BF: Tensor, rows: Tensor, k_B: Tensor, alpha: float) -> DenseRows:
    if rows.numel() == x_BF.shape[0]:  # every row, in order
        return DenseRows(None, _full_sort_thresholds(x_BF, k_B, alpha))
    return DenseRows(rows, _full_sort_thresholds(x_BF[rows], k_B[rows], alpha))


def _dense_chunks(x_BF: Tensor, group: DenseRows, alpha: float):
    """Yield (rows: slice or ids, t (C, F) float64) chunk by chunk for a dense group."""
    for sl in _chunks(group.u.numel(), x_BF.shape[1]):
        rows = sl if group.rows is None else group.rows[sl]
        yield rows, x_BF[rows].double() / alpha - group.u[sl, None]


def _put_rows(dst_BF: Tensor, rows: slice | Tensor, src_CF: Tensor) -> None:
    if isinstance(rows, slice):
        dst_BF[rows] = src_CF
    else:
        dst_BF.index_copy_(0, rows, src_CF)


def forward_output(x_BF: Tensor, plan: Plan, alpha: float, out_dtype: torch.dtype) -> Tensor:
    """p (B, F) in out_dtype from a plan: candidates scattered into zeros, dense rows whole."""
    p_BF = torch.zeros(x_BF.shape, dtype=out_dtype, device=x_BF.device)
    for grp in plan.sparse:
        (p_RN,) = _by_row_blocks(lambda t: (laplace_cdf(t).to(out_dtype),), grp.t.shape[1], grp.t)
        if grp.rows is None:
            p_BF.scatter_(1, grp.idx, p_RN)
        else:
            p_BF.index_put_((grp.rows[:, None].expand_as(grp.idx), grp.idx), p_RN)
    for grp in plan.dense:
        for rows, t_CF in _dense_chunks(x_BF, grp, alpha):
            _put_rows(p_BF, rows, laplace_cdf(t_CF).to(out_dtype))
    return p_BF


def backward_grads(
    x_BF: Tensor, plan: Plan, alpha: float, grad_p_BF: Tensor
) -> tuple[Tensor, Tensor]:
    """(∂L/∂x (B, F) in x's dtype, ∂L/∂k (B,) float64) from the plan and ∂L/∂p."""
    grad_x_BF = torch.zeros_like(x_BF)
    grad_k_B = torch.zeros(x_BF.shape[0], dtype=torch.float64, device=x_BF.device)
    for grp in plan.sparse:
        if grp.rows is None:
            g_RN = grad_p_BF.gather(1, grp.idx).double()
        else:
            g_RN = grad_p_BF[grp.rows[:, None], grp.idx].double()
        gx_RN, gk_R = _by_row_blocks(
            partial(implicit_backward, alpha=alpha), grp.t.shape[1], grp.t, g_RN
        )
        if grp.rows is None:
            grad_x_BF.scatter_(1, grp.idx, gx_RN.to(x_BF.dtype))
            grad_k_B.copy_(gk_R)
        else:
            rows_RN = grp.rows[:, None].expand_as(grp.idx)
            grad_x_BF.index_put_((rows_RN, grp.idx), gx_RN.to(x_BF.dtype))
            grad_k_B.index_copy_(0, grp.rows, gk_R)
    for grp in plan.dense:
        for rows, t_CF in _dense_chunks(x_BF, grp, alpha):
            gx_CF, gk_C = implicit_backward(t_CF, grad_p_BF[rows].double(), alpha)
            _put_rows(grad_x_BF, rows, gx_CF.to(x_BF.dtype))
            _put_rows(grad_k_B, rows, gk_C)
    return grad_x_BF, grad_k_B
