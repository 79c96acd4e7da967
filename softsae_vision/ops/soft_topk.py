"""LapSum soft top-k: per-row weights p ∈ [0, 1] that sum to a real budget k.

For a row r and budget k, p_i = Φ((r_i − b)/α) with Φ the standard Laplace CDF and the
threshold b chosen so that Σ_i p_i = k (Struski et al., ICML 2025). The threshold is solved
in closed form (no iteration); see ``_lapsum.py`` for the solve and ``_soft_topk_plan.py``
for the fast candidate path that makes it about as cheap as a hard top-k.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops._lapsum import laplace_cdf
from softsae_vision.ops._soft_topk_apply import backward_grads, forward_output
from softsae_vision.ops._soft_topk_plan import Plan, fast_path_enabled, plan_rows

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, Tensor):
        if alpha.numel() != 1:
            raise SoftSAEError(f"soft_topk: alpha must be a single number, got shape {alpha.shape}")
        alpha = alpha.item()
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise SoftSAEError(f"soft_topk: alpha must be a real number, got {type(alpha).__name__}")
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise SoftSAEError(f"soft_topk: alpha must be finite and > 0, got {alpha}")
    return alpha


def _check_x(x: Tensor) -> Tensor:
    """Return x as (B, F); reject wrong rank, non-float dtypes and non-finite values."""
    if not isinstance(x, Tensor):
        raise SoftSAEError(f"soft_topk: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (1, 2):
        raise SoftSAEError(f"soft_topk: x must be (B, F) or (F,), got shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise SoftSAEError(f"soft_topk: x must be a floating tensor, got {x.dtype}")
    x_BF = x if x.dim() == 2 else x[None]
    if x_BF.shape[1] == 0:
        raise SoftSAEError("soft_topk: x has no features (F = 0)")
    if x_BF.numel():
        lo, hi = torch.aminmax(x_BF.detach())  # NaN propagates into both
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            raise SoftSAEError("soft_topk: x contains NaN or inf; the latents must be finite")
    return x_BF


def _check_k(k: Tensor | float, B: int, F: int, device: torch.device) -> Tensor:
    """Return k as a (B,) tensor (autograd-linked to the caller's k when it is a tensor)."""
    if isinstance(k, Tensor):
        if k.dtype == torch.bool or k.is_complex():
            raise SoftSAEError(f"soft_topk: k must be real-valued, got {k.dtype}")
        if k.dim() == 0 or (k.dim() == 1 and k.shape[0] == 1 and B != 1):
            k_B = k.reshape(()).expand(B)
        elif k.shape in ((B,), (B, 1)):
            k_B = k.reshape(B)
        else:
            raise SoftSAEError(
                f"soft_topk: k must have shape ({B},) or ({B}, 1) to match x, "
                f"or be a scalar; got {tuple(k.shape)}"
            )
        k_B = k_B.to(device)
    elif isinstance(k, numbers.Real) and not isinstance(k, bool):
        k_B = torch.full((B,), float(k), dtype=torch.float64, device=device)
    else:
        raise SoftSAEError(f"soft_topk: k must be a tensor or a number, got {type(k).__name__}")
    if B:
        k64 = k_B.detach().double()
        lo, hi = float(k64.min()), float(k64.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi >= F:
            raise SoftSAEError(
                f"soft_topk: every k must satisfy 0 < k < F = {F}; got values in [{lo}, {hi}]"
            )
    return k_B


def prepare(x: Tensor, k: Tensor | float, alpha: float) -> tuple[Tensor, Tensor, float]:
    """(x as (B, F), k as a float (B,) tensor, alpha as a float), checked."""
    alpha = _check_alpha(alpha)
    x_BF = _check_x(x)
    B, F = x_BF.shape
    k_B = _check_k(k, B, F, x_BF.device)
    if k_B.dtype not in _FLOAT_DTYPES:
        k_B = k_B.double()
    return x_BF, k_B, alpha


def make_plan(x_BF: Tensor, k_B: Tensor, alpha: float) -> Plan:
    """Each row's threshold and the path that serves it (see _soft_topk_plan.py)."""
    return plan_rows(x_BF.detach(), k_B.detach().double(), alpha, fast_path_enabled())


class _SoftTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_BF: Tensor, k_B: Tensor, alpha: float, plan: Plan) -> Tensor:
        ctx.plan, ctx.alpha, ctx.k_dtype = plan, alpha, k_B.dtype
        ctx.save_for_backward(x_BF)
        return forward_output(x_BF, plan, alpha, x_BF.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_p_BF: Tensor):
        (x_BF,) = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        grad_x, grad_k = backward_grads(x_BF, ctx.plan, ctx.alpha, grad_p_BF, need_x)
        grad_k = grad_k.to(ctx.k_dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_k, None, None


def dense_soft_topk(x_BF: Tensor, k_B: Tensor, alpha: float, plan: Plan) -> Tensor:
    """p (B, F) from checked inputs and their plan, differentiable in x and k."""
    return _SoftTopK.apply(x_BF, k_B, alpha, plan)


def soft_topk(x: Tensor, k: Tensor | float, alpha: float) -> Tensor:
    """Return the LapSum soft top-k weights p (B, F) in x's dtype; each row sums to k.

    x: (B, F) latents, or (F,) for one row. k: (B,), (B, 1) or a scalar, real, 0 < k < F.
    alpha: temperature in the latents' units (a number > 0; read, never modified, no
    gradient). p is order-preserving within a row (up to last-bit rounding); p → the top-k
    indicator as alpha → 0 (integer k) and → k/F as alpha → ∞. Differentiable once in x and
    k (implicit-function gradients; k's gradient comes back in k's shape and dtype).

    The threshold is exact (closed form, float64) and p is the exact value rounded once to
    x's dtype; entries whose weight is below 2⁻³² of the row's active mass may come out as
    exact zeros. Rows whose mass sits in their top entries touch only those (about the cost
    of a hard top-k); ``SOFTSAE_SOFT_TOPK_FAST=0`` forces the full-sort path everywhere.
    """
    x_BF, k_B, alpha = prepare(x, k, alpha)
    p_BF = dense_soft_topk(x_BF, k_B, alpha, make_plan(x_BF, k_B, alpha))
    return p_BF if x.dim() == 2 else p_BF[0]


def soft_topk_reference(x: Tensor, k: Tensor | float, alpha: float, iters: int = 60) -> Tensor:
    """Return LapSum weights (float64, x's shape) by bisection on the threshold: the oracle.

    Slow and simple on purpose: no sorting, no closed form, no gradients. A second
    bisection on the offset from the first answer b0 (x − b0 is exact near b0) resolves
    the threshold far below the spacing of float64 numbers around b0.
    """
    alpha = _check_alpha(alpha)
    x_BF = _check_x(x).detach().double()
    B, F = x_BF.shape
    k_B = _check_k(k, B, F, x_BF.device).detach().double()

    def bisect(d_BF: Tensor, lo_B: Tensor, hi_B: Tensor) -> Tensor:
        # Σ_i Φ((d_i − b)/α) is decreasing in b; [lo, hi] brackets the root.
        for _ in range(iters):
            mid_B = 0.5 * (lo_B + hi_B)
            above = laplace_cdf((d_BF - mid_B[:, None]) / alpha).sum(1) > k_B
            lo_B = torch.where(above, mid_B, lo_B)
            hi_B = torch.where(above, hi_B, mid_B)
        return 0.5 * (lo_B + hi_B)

    lo_B = x_BF.amin(1) - alpha * torch.log(F / (2 * (F - k_B))).clamp(min=0.0)
    hi_B = x_BF.amax(1) + alpha * torch.log(F / (2 * k_B)).clamp(min=0.0)
    b0_B = bisect(x_BF, lo_B, hi_B)
    slack_B = 64 * torch.finfo(torch.float64).eps * (b0_B.abs() + alpha)
    d_BF = x_BF - b0_B[:, None]
    delta_B = bisect(d_BF, -slack_B, slack_B)
    p_BF = laplace_cdf((d_BF - delta_B[:, None]) / alpha)
    return p_BF if x.dim() == 2 else p_BF[0]
