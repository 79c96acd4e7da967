"""The fixed-shape soft top-k plan: one ``torch.topk``, one pass over the row, no host sync.

The width n = min(F, ⌊2·k_max⌋ + 2) comes from a bound on k known before the call, so every
shape is fixed by (B, F, k_max) alone. For every row the n − 1 largest entries are knots and
the rest of the row is folded into one knot at the sentinel (the n-th largest value), of
weight #{x = sentinel} + Σ_{x < sentinel} e^{(x − s)/α}. Since n > 2k, Σ Φ at the sentinel is
≥ n/2 > k, so the threshold b lies at or above the sentinel and the folded solve is exact for
every row (the same argument as the folded path of _soft_topk_plan.py).

Which rows can skip their tail is a vectorised test, not a branch: every excluded entry lies
at or below the sentinel, so their total weight is exactly ½e^{(s − b)/α}·w_fold. A row whose
excluded weight is below 2⁻³² of min(1, Σφ over the candidates) is served by its candidates
(the same tolerance as the adaptive plan); the others are marked dense, and the forward and
backward compute them over the whole row, masked, so no shape depends on the data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from softsae_vision.ops import _inline_math as im
from softsae_vision.ops._lapsum import LOG2, solve_threshold
from softsae_vision.ops._soft_topk_plan import (
    _LOG_TAIL_TOL,
    FixedRows,
    Plan,
    RowTop,
    _tail_weights,
    knots,
    row_top,
)


def fixed_width(k_max: float, F: int) -> int:
    """Candidates plus the sentinel: the smallest n with n > 2·k_max, at most F."""
    return min(F, math.floor(2 * k_max) + 2)


def plan_fixed(
    x_BF: Tensor, k_B: Tensor, alpha: float, k_max: float, top: RowTop | None = None
) -> Plan:
    """Every row's exact threshold and whether it needs the whole row (k_B float64 ≤ k_max).

    ``top``: each row's largest entries when the caller has them (see ``row_top``).
    """
    B, F = x_BF.shape
    if B == 0:
        return Plan()
    n = fixed_width(k_max, F)
    vals_BN, idx_BN = row_top(x_BF, n, top)
    s_B = vals_BN[:, -1]
    ties_B, below_B = _tail_weights(x_BF, s_B, alpha)
    v_BN, ref_B = knots(vals_BN, k_B, alpha)
    if n == F:  # nothing left out: every entry is its own knot (n may be ≤ 2k here: no fold)
        u_B = solve_threshold(v_BN, k_B, None, plain=False)
        no_dense_B = torch.zeros(B, dtype=torch.bool, device=x_BF.device)
        return Plan(fixed=FixedRows(idx_BN, v_BN - u_B[:, None], no_dense_B, ref_B, u_B))
    # Candidates tied with the sentinel join its knot, so equal inputs get equal outputs. Ties
    # are decided on the inputs, as the fold's weights are: an entry just above the sentinel
    # whose knot rounds onto the sentinel's keeps its own knot (else its weight would be lost).
    w_BN = (vals_BN > vals_BN[:, -1:]).double()
    w_fold_B = ties_B + below_B
    w_BN[:, -1] = w_fold_B
    u_B = solve_threshold(v_BN, k_B, w_BN, plain=False)
    t_BM = torch.where(w_BN[:, :-1] > 0, v_BN[:, :-1] - u_B[:, None], -math.inf)
    log_sum_phi_B = im.logsumexp(-t_BM.abs(), dim=1) - LOG2
    # log of the excluded entries' total weight: ½e^{(s − b)/α}·w_fold (b ≥ s)
    log_excluded_B = (v_BN[:, -1] - u_B) + im.log(w_fold_B) - LOG2
    dense_B = ~(log_excluded_B <= _LOG_TAIL_TOL + log_sum_phi_B.clamp(max=0.0))
    t_BM = torch.where(dense_B[:, None], -math.inf, t_BM)
    return Plan(fixed=FixedRows(idx_BN[:, :-1], t_BM, dense_B, ref_B, u_B))
