"""LapSum numerics shared by every soft top-k path: the Laplace CDF, the closed-form
threshold solve on sorted rows, and the implicit-function backward.

Everything here works in float64 on whatever rows it is given; the callers decide which
entries of a row take part (all of them, or the top candidates).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from softsae_vision.ops import _inline_math as im

LOG2 = math.log(2.0)


def laplace_cdf(t: Tensor) -> Tensor:
    """Φ(t) of the standard Laplace law, from the branch without cancellation."""
    half_tail = t.abs().mul_(-im.LOG2E).exp2_().mul_(0.5)  # ½e^{−|t|}
    return torch.where(t <= 0, half_tail, 1.0 - half_tail)


# Rows whose knots span at most this many α can use plain exponentials around their middle
# (every factor within e^{±350}, every knot sum above e^{−700}: no overflow, no underflow).
_PLAIN_SPREAD = 700.0

# (P (R, N), Q (R, N), and a function of the chosen knot j (R, 1) giving log P_j, log Q_j)
_KnotSums = tuple[Tensor, Tensor, Callable[[Tensor], tuple[Tensor, Tensor]]]


def _knot_sums_plain(v_RN: Tensor, w_RN: Tensor | None) -> _KnotSums:
    """P_j = Σ_{i<j} w_i e^{v_j − v_i} and Q_j = Σ_{i>j} w_i e^{v_i − v_j} by cumulative sums."""
    c_R1 = 0.5 * (v_RN[:, :1] + v_RN[:, -1:])
    e_RN = im.exp(c_R1 - v_RN)  # increasing along the row
    down_RN = e_RN if w_RN is None else w_RN * e_RN
    up_RN = torch.reciprocal(e_RN) if w_RN is None else w_RN / e_RN
    P_RN = torch.zeros_like(v_RN)
    P_RN[:, 1:] = torch.cumsum(down_RN, dim=1)[:, :-1]
    P_RN /= e_RN
    Q_RN = torch.zeros_like(v_RN)
    Q_RN[:, :-1] = torch.cumsum(up_RN.flip(1), dim=1).flip(1)[:, 1:]
    Q_RN *= e_RN

    def log_at(j_R1: Tensor) -> tuple[Tensor, Tensor]:
        return im.log(P_RN.gather(1, j_R1)[:, 0]), im.log(Q_RN.gather(1, j_R1)[:, 0])

    return P_RN, Q_RN, log_at


def _knot_sums_log(v_RN: Tensor, w_RN: Tensor | None) -> _KnotSums:
    """P and Q as in _knot_sums_plain, through log-cumulative sums: any spread of knots."""
    log_w_RN = None if w_RN is None else im.log(w_RN)  # -inf for weight 0
    down_RN = -v_RN if log_w_RN is None else log_w_RN - v_RN
    up_RN = v_RN if log_w_RN is None else log_w_RN + v_RN
    lse_down_RN = torch.logcumsumexp(down_RN, dim=1)  # log Σ_{i≤j} w_i e^{−v_i}
    lse_up_RN = torch.logcumsumexp(up_RN.flip(1), dim=1).flip(1)  # log Σ_{i≥j} w_i e^{v_i}
    P_RN = torch.zeros_like(v_RN)
    P_RN[:, 1:] = im.exp(v_RN[:, 1:] + lse_down_RN[:, :-1])
    Q_RN = torch.zeros_like(v_RN)
    Q_RN[:, :-1] = im.exp(lse_up_RN[:, 1:] - v_RN[:, :-1])
    N = v_RN.shape[1]

    def log_at(j_R1: Tensor) -> tuple[Tensor, Tensor]:
        v_R = v_RN.gather(1, j_R1)[:, 0]
        before_R = lse_down_RN.gather(1, (j_R1 - 1).clamp(min=0))[:, 0]
        after_R = lse_up_RN.gather(1, (j_R1 + 1).clamp(max=N - 1))[:, 0]
        log_P_R = torch.where(j_R1[:, 0] > 0, v_R + before_R, -math.inf)
        log_Q_R = torch.where(j_R1[:, 0] < N - 1, after_R - v_R, -math.inf)
        return log_P_R, log_Q_R

    return P_RN, Q_RN, log_at


def solve_threshold(
    v_RN: Tensor, k_R: Tensor, w_RN: Tensor | None = None, plain: bool | None = None
) -> Tensor:
    """Return u (R,) with Σ_j w_j Φ(v_j − u) = k for each row (float64, exact, no iteration).

    v_RN holds each row's knots sorted in descending order (float64, finite), w_RN their
    multiplicities (≥ 0; None means all ones). The sum S(u) is decreasing in u; at the knot
    u = v_j it is S_j = W_{<j} + w_j/2 − P_j/2 + Q_j/2 with P_j = Σ_{i<j} w_i e^{v_j − v_i}
    and Q_j = Σ_{i>j} w_i e^{v_i − v_j}, every exponent ≤ 0. The root lies between the last
    knot with S_j ≤ k and the next one, where S is a quadratic in e^u; it is solved in the
    log domain, so gaps of any size between knots neither overflow nor underflow.

    ``plain`` picks the knot sums: None decides from the rows' spread (one host read), False
    takes the log-domain sums, right for any spread and free of host synchronisation.
    """
    R, N = v_RN.shape
    if w_RN is None:
        w_incl_RN = torch.arange(1, N + 1, dtype=v_RN.dtype, device=v_RN.device).expand(R, N)
    else:
        w_incl_RN = torch.cumsum(w_RN, dim=1)
    if plain is None:
        plain = R == 0 or float((v_RN[:, 0] - v_RN[:, -1]).max()) <= _PLAIN_SPREAD
    P_RN, Q_RN, log_sums_at = (_knot_sums_plain if plain else _knot_sums_log)(v_RN, w_RN)
    S_RN = (Q_RN - P_RN).mul_(0.5).add_(w_incl_RN)
    S_RN -= 0.5 if w_RN is None else 0.5 * w_RN

    # m knots have S ≤ k: the root lies in [v_{m+1}, v_m] (1-based); m = 0: above every knot.
    m_R = (k_R[:, None] >= S_RN).sum(dim=1)
    W_R = w_incl_RN.gather(1, (m_R - 1).clamp(min=0)[:, None])[:, 0]
    e_R = torch.where(m_R > 0, W_R, 0.0) - k_R  # W_{≤m} − k
    # Reference knot c: the interval's upper end v_m when e > 0 (the root lies towards it),
    # else its lower end v_{m+1}, so that u − c stays small and u = c + log x keeps its bits.
    upper_R = e_R > 0
    j_R1 = torch.where(upper_R, m_R - 1, m_R).clamp(0, N - 1)[:, None]
    log_Pj_R, log_Qj_R = log_sums_at(j_R1)
    w_j_R = torch.ones_like(log_Pj_R) if w_RN is None else w_RN.gather(1, j_R1)[:, 0]
    log_wj_R = im.log(w_j_R)
    # With x = e^{u − c}: S(u) = W − a·x/2 + b/(2x), i.e. a x² + 2(k − W) x − b = 0, where
    # a = Σ_{i≤m} w_i e^{c − v_i} and b = Σ_{i>m} w_i e^{v_i − c}; knot c itself is in a
    # (upper end) or in b (lower end).
    log_a_R = torch.where(upper_R, torch.logaddexp(log_Pj_R, log_wj_R), log_Pj_R)
    log_b_R = torch.where(upper_R, log_Qj_R, torch.logaddexp(log_Qj_R, log_wj_R))
    log_e_R = im.log(e_R.abs())
    # log(|e| + √(e² + ab)); the positive root is that over a (e > 0) or b over it (e ≤ 0).
    log_big_R = torch.logaddexp(log_e_R, 0.5 * torch.logaddexp(2 * log_e_R, log_a_R + log_b_R))
    log_x_R = torch.where(upper_R, log_big_R - log_a_R, log_b_R - log_big_R)
    return v_RN.gather(1, j_R1)[:, 0] + log_x_R


def _phi_softmax(t_RN: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(e = φ/(½e^{top}) (R, N), top (R, 1), Σe (R,)): q = e/Σe, defined even when φ underflows."""
    e_RN = t_RN.abs().neg_()  # −|t|, turned in place into e^{−|t| − top}
    top_R1 = e_RN.amax(dim=1, keepdim=True)
    top_R1 = torch.where(torch.isfinite(top_R1), top_R1, torch.zeros_like(top_R1))
    e_RN.sub_(top_R1).mul_(im.LOG2E).exp2_()  # φ / (½ e^{top}), at most 1
    sum_e_R = e_RN.sum(dim=1).clamp_min(torch.finfo(e_RN.dtype).tiny)
    return e_RN, top_R1, sum_e_R


def implicit_grad_k(t_RN: Tensor, g_RN: Tensor) -> tuple[Tensor]:
    """(∂L/∂k (R,),) = Σ q g alone: what the backward needs when r takes no gradient."""
    e_RN, _, sum_e_R = _phi_softmax(t_RN)
    return ((e_RN * g_RN).sum(dim=1) / sum_e_R,)


def implicit_backward(t_RN: Tensor, g_RN: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Return (∂L/∂r (R, N), ∂L/∂k (R,)) from t = (r − b)/α and g = ∂L/∂p (same dtype).

    With φ_i = ½e^{−|t_i|} and q = φ/Σφ: ∂L/∂k = Σ q g and ∂L/∂r_j = φ_j/α (g_j − Σ q g).
    q is formed as a softmax so it stays defined when every φ underflows; entries with
    t = −inf take no part. Rows where every t is −inf give zeros.
    """
    e_RN, top_R1, sum_e_R = _phi_softmax(t_RN)
    grad_k_R = (e_RN * g_RN).sum(dim=1) / sum_e_R
    scale_R1 = im.exp(top_R1).mul_(0.5 / alpha)
    grad_r_RN = (g_RN - grad_k_R[:, None]).mul_(e_RN).mul_(scale_R1)
    return grad_r_RN, grad_k_R
