"""Which entries of each row the LapSum threshold depends on, and the exact solve on them.

Every row ends in one of two kinds of group, both exact to float rounding:

- sparse rows: the top n−1 entries (``torch.topk``, the n-th is the sentinel) carry all the
  mass. The threshold b is solved on them alone; every excluded entry is at or below the
  sentinel, so their total mass is at most F·½e^{Δ}, Δ = (sentinel − b)/α. The row is
  accepted when that bound is below 2⁻³² of min(1, Σφ over the candidates): each kept
  weight is then off by a relative 2⁻³² at most, and each excluded one (set to 0) is below
  2⁻³². Output and gradient touch the candidates only.
- dense rows: the threshold comes from the top n−1 entries plus the rest of the row folded
  into one knot at the sentinel, of weight #{x = sentinel} + Σ_{x < sentinel} e^{(x − s)/α}.
  That is exact whenever b ≥ sentinel (or nothing lies strictly below it), and b ≥ sentinel
  is certain once n > 2k, since then Σ Φ at the sentinel is ≥ n/2 > k. Or, when n would be
  too large for topk to beat a sort, from the whole sorted row. Output and gradient cover
  the whole row.

The plan: a first top-n (n = ceil(max k) + margin) for every row; rows that fail the
sparse check are retried with a wider n where the density of their values says that will
pass, else served densely. ``SOFTSAE_SOFT_TOPK_FAST=0`` (fast=False) sorts every row.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from softsae_vision.devices import device_switch
from softsae_vision.ops import _inline_math as im
from softsae_vision.ops._lapsum import LOG2, solve_threshold
from softsae_vision.ops._row_blocks import by_row_blocks, row_chunks

FAST_ENV = "SOFTSAE_SOFT_TOPK_FAST"
PATH_ENV = "SOFTSAE_SOFT_TOPK_PATH"
_LOG_TAIL_TOL = -32 * LOG2  # accepted excluded mass, relative to min(1, Σφ of candidates)
_MAX_WIDENINGS = 2


def fast_path_enabled() -> bool:
    """Whether the candidate (top-n) paths are on; ``SOFTSAE_SOFT_TOPK_FAST=0`` turns them off."""
    return os.environ.get(FAST_ENV, "1").strip() != "0"


def planner(device: torch.device) -> str:
    """ "fixed" (no host sync, fixed shapes) or "adaptive" (host-decided widening) for a device.

    ``SOFTSAE_SOFT_TOPK_PATH`` = auto (default: adaptive on CPU, fixed elsewhere), adaptive
    or fixed. Both are exact; the adaptive plan reads a few numbers back to the host per call,
    which costs nothing on a CPU and stalls a GPU.
    """
    return device_switch(PATH_ENV, "adaptive", "fixed", device)


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
    """Rows whose output and gradient cover the whole row, from their threshold b."""

    rows: Tensor | None  # (R,) int64; None means every row of the batch, in order
    ref: Tensor  # (R,) float64, an entry of the row near the threshold
    u: Tensor  # (R,) float64 threshold relative to it: b = ref + u·α
    via: str  # "folded" (top n plus the rest folded) or "sorted" (the whole row)


@dataclass
class FixedRows:
    """Every row of the batch, planned with fixed shapes and no host decision.

    Each row's threshold b = ref + u·α is exact (top n plus the rest folded, n > 2·k_max);
    rows whose excluded mass is negligible are served by their candidates, the others
    (``dense``) by the whole row. See _soft_topk_fixed.py.
    """

    idx: Tensor  # (B, N) int64 column of each candidate
    t: Tensor  # (B, N) float64 (r − b)/α; −inf where a candidate takes no part or the row is dense
    dense: Tensor  # (B,) bool: the row's output and gradient cover the whole row
    ref: Tensor  # (B,) float64, an entry of the row near the threshold
    u: Tensor  # (B,) float64 threshold relative to it: b = ref + u·α


@dataclass
class Plan:
    sparse: list[SparseRows] = field(default_factory=list)
    dense: list[DenseRows] = field(default_factory=list)
    fixed: FixedRows | None = None


RowTop = tuple[Tensor, Tensor]
"""Each row's largest entries, sorted descending: (values (B, N), indices (B, N))."""


def row_top(x_RF: Tensor, n: int, top: RowTop | None, rows: Tensor | None = None) -> RowTop:
    """The ``n`` largest entries of each row of ``x_RF``, sorted descending.

    Sliced from ``top`` (the top entries of every row of the batch, computed once by a caller
    that needs them too; ``rows`` selects the rows ``x_RF`` holds) when it is at least ``n``
    wide, else one ``torch.topk``. The values are the same either way; among tied values the
    indices may differ, which no output depends on (ties with the sentinel are excluded).
    """
    if top is not None and top[0].shape[1] >= n:
        vals, idx = top if rows is None else (top[0][rows], top[1][rows])
        return vals[:, :n], idx[:, :n]
    return torch.topk(x_RF, n, dim=1, sorted=True)


def _first_size(k_max: float, F: int) -> int | None:
    """Candidates (plus the sentinel) for the first try, or None when topk would cost a sort.

    The margin covers the entries within ~31α below the threshold; half of k (at least 8)
    is enough for SAE latents at α ≲ 3e-3 (benchmarks/bench_soft_topk.py); rows that need
    more are widened or served densely.
    """
    m = math.ceil(k_max)
    n = m + max(8, math.ceil(m / 2)) + 1
    return n if n <= F // 4 else None


def _sure_size(k_max: float, F: int) -> int | None:
    """A top-n whose sentinel is surely below the threshold (n/2 ≥ k + ½), or None."""
    n = math.floor(2 * k_max) + 2
    return n if n <= F // 4 else None


def knots(vals_RN: Tensor, k_R: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """(v = (vals − ref)/α (R, N) float64, ref (R,) float64) for values sorted descending.

    ref is the ceil(k)-th largest value, near the threshold: differences from it are exact
    (or nearly) where it matters, so precision does not depend on the size of x/α.
    """
    j_R1 = (torch.ceil(k_R) - 1).clamp(0, vals_RN.shape[1] - 1).long()[:, None]
    ref_R1 = vals_RN.gather(1, j_R1).double()
    return (vals_RN.double() - ref_R1) / alpha, ref_R1[:, 0]


def _candidate_solve(
    vals_RN: Tensor, k_R: Tensor, *, alpha: float, F: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Solve each row on its top n−1 values (vals_RN sorted descending, sentinel last).

    Returns t (R, n−1) float64 (−inf where a candidate takes no part or the row failed),
    ok (R,) whether the sentinel bounds the excluded mass, and deficit (R,): how many α the
    sentinel would have to drop for the row to pass (0 when ok).
    """
    v_RN, _ = knots(vals_RN, k_R, alpha)
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


def _widen(vals_RN: Tensor, deficit_R: Tensor, alpha: float, F: int) -> tuple[Tensor, int | None]:
    """Rows worth retrying with more candidates, and how many (from the local density)."""
    n = vals_RN.shape[1]
    span_R = ((vals_RN[:, 0] - vals_RN[:, -1]).double() / alpha).clamp(min=1e-300)
    need_R = n + 2.0 * (n - 1) * deficit_R / span_R
    retry = need_R <= F // 4
    if not bool(retry.any()):
        return retry, None
    return retry, int(min(F // 4, max(2 * n, math.ceil(float(need_R[retry].max())))))


def _tail_weights(x_RF: Tensor, s_R: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """(#{x = s}, Σ_{x < s} e^{(x − s)/α}) per row, float64 (the folded knot at the sentinel)."""
    ties_R = (x_RF == s_R[:, None]).sum(dim=1).double()
    below_parts = []
    for sl in row_chunks(x_RF.shape[0], x_RF.shape[1]):
        d_CF = (x_RF[sl].double() - s_R[sl, None].double()).div_(alpha)  # < 0 below s
        d_CF = torch.where(d_CF < 0, d_CF, -math.inf).mul_(im.LOG2E).exp2_()
        below_parts.append(d_CF.sum(dim=1))
    return ties_R, torch.cat(below_parts)


def _folded_solve(
    x_BF: Tensor, rows: Tensor, vals_RN: Tensor, k_B: Tensor, alpha: float, plan: Plan
) -> Tensor:
    """Serve rows densely from their top n−1 plus the rest folded into the sentinel's knot.

    Adds the rows where that is exact to the plan; returns which rows (R,) bool.
    """
    s_R = vals_RN[:, -1]
    ties_R, below_R = _tail_weights(x_BF[rows], s_R, alpha)
    v_RN, ref_R = knots(vals_RN, k_B[rows], alpha)
    w_RN = (v_RN > v_RN[:, -1:]).double()  # the sentinel's ties are all in its own knot
    w_RN[:, -1] = ties_R + below_R
    u_R = solve_threshold(v_RN, k_B[rows], w_RN)
    exact = (u_R >= v_RN[:, -1]) | (below_R == 0)
    if bool(exact.any()):
        plan.dense.append(DenseRows(rows[exact], ref_R[exact], u_R[exact], "folded"))
    return exact


def _full_sort(x_BF: Tensor, rows: Tensor, k_B: Tensor, alpha: float, plan: Plan) -> None:
    """Serve rows from their whole sorted row: the general path, exact for any input."""
    every = rows.numel() == x_BF.shape[0]  # then rows is arange(B)
    x_RF, k_R = (x_BF, k_B) if every else (x_BF[rows], k_B[rows])
    ref_parts, u_parts = [], []
    for sl in row_chunks(x_RF.shape[0], x_RF.shape[1]):
        vals_CF = torch.sort(x_RF[sl], dim=1, descending=True).values
        v_CF, ref_C = knots(vals_CF, k_R[sl], alpha)
        ref_parts.append(ref_C)
        u_parts.append(solve_threshold(v_CF, k_R[sl]))
    rows_or_all = None if every else rows
    plan.dense.append(DenseRows(rows_or_all, torch.cat(ref_parts), torch.cat(u_parts), "sorted"))


def _dense_rest(
    x_BF: Tensor, rows: Tensor, vals_RN: Tensor, k_B: Tensor, alpha: float, plan: Plan
) -> None:
    """Serve rows the sparse check failed: folded knot, then a sure top-n, then a sort."""
    F = x_BF.shape[1]
    rows = rows[~_folded_solve(x_BF, rows, vals_RN, k_B, alpha, plan)]
    if rows.numel() == 0:
        return
    n = _sure_size(float(k_B[rows].max()), F)
    if n is not None and n > vals_RN.shape[1]:
        vals_RN = torch.topk(x_BF[rows], n, dim=1, sorted=True).values
        rows = rows[~_folded_solve(x_BF, rows, vals_RN, k_B, alpha, plan)]
    if rows.numel():
        _full_sort(x_BF, rows, k_B, alpha, plan)


def plan_rows(
    x_BF: Tensor, k_B: Tensor, alpha: float, fast: bool, top: RowTop | None = None
) -> Plan:
    """Solve every row's threshold (k_B float64), grouping rows by the path that serves them.

    ``top``: see :func:`row_top`.
    """
    B, F = x_BF.shape
    plan = Plan()
    rows = torch.arange(B, device=x_BF.device)
    n = _first_size(float(k_B.max()), F) if fast and B > 0 else None
    if n is None:
        if B:
            _full_sort(x_BF, rows, k_B, alpha, plan)
        return plan
    solve = partial(_candidate_solve, alpha=alpha, F=F)
    for attempt in range(1 + _MAX_WIDENINGS):
        x_R, k_R = (x_BF, k_B) if attempt == 0 else (x_BF[rows], k_B[rows])
        vals_RN, idx_RN = row_top(x_R, n, top, None if attempt == 0 else rows)
        t_RM, ok_R, deficit_R = by_row_blocks(solve, vals_RN, k_R)
        if attempt == 0:
            plan.sparse.append(SparseRows(None, idx_RN[:, :-1], t_RM))
        elif bool(ok_R.any()):
            plan.sparse.append(SparseRows(rows[ok_R], idx_RN[ok_R, :-1], t_RM[ok_R]))
        fail = ~ok_R
        if not bool(fail.any()):
            return plan
        rows, vals_RN, deficit_R = rows[fail], vals_RN[fail], deficit_R[fail]
        retry, n = _widen(vals_RN, deficit_R, alpha, F)
        if attempt == _MAX_WIDENINGS:
            retry, n = torch.zeros_like(retry), None
        if not bool(retry.all()):
            _dense_rest(x_BF, rows[~retry], vals_RN[~retry], k_B, alpha, plan)
        if n is None:
            return plan
        rows = rows[retry]
    return plan
