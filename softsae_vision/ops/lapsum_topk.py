"""LapSum soft top-k: per-row weights p ∈ [0, 1] that sum to a real budget k.

For a row r and budget k, p_i = Φ((r_i − b)/α) with Φ the standard Laplace CDF and the
threshold b chosen so that Σ_i p_i = k (Struski et al., ICML 2025). The threshold is solved
in closed form (no iteration); see ``_lapsum.py`` for the solve and ``_soft_topk_plan.py``
for the fast candidate path that makes it about as cheap as a hard top-k.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import torch
from torch import Tensor

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops._lapsum import laplace_cdf
from softsae_vision.ops._soft_topk_apply import backward_grads, forward_output
from softsae_vision.ops._soft_topk_fixed import fixed_width, plan_fixed
from softsae_vision.ops._soft_topk_plan import (
    Plan,
    RowTop,
    _first_size,
    fast_path_enabled,
    plan_rows,
    planner,
)

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
DEBUG_ENV = "SOFTSAE_DEBUG_CHECKS"


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


def _check_x(x: Tensor, values: bool = True) -> Tensor:
    """Return x as (B, F); reject wrong rank, non-float dtypes and (values) non-finite values."""
    if not isinstance(x, Tensor):
        raise SoftSAEError(f"soft_topk: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (1, 2):
        raise SoftSAEError(f"soft_topk: x must be (B, F) or (F,), got shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise SoftSAEError(f"soft_topk: x must be a floating tensor, got {x.dtype}")
    x_BF = x if x.dim() == 2 else x[None]
    if x_BF.shape[1] == 0:
        raise SoftSAEError("soft_topk: x has no features (F = 0)")
    if values and x_BF.numel():
        lo, hi = torch.aminmax(x_BF.detach())  # NaN propagates into both
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            raise SoftSAEError("soft_topk: x contains NaN or inf; the latents must be finite")
    return x_BF


def _check_k(
    k: Tensor | float, B: int, F: int, device: torch.device, values: bool = True
) -> Tensor:
    """Return k as a (B,) tensor (autograd-linked to the caller's k when it is a tensor).

    ``values`` also checks 0 < k < F, which reads k back to the host.
    """
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
    if values and B:
        k64 = k_B.detach().double()
        lo, hi = float(k64.min()), float(k64.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi >= F:
            raise SoftSAEError(
                f"soft_topk: every k must satisfy 0 < k < F = {F}; got values in [{lo}, {hi}]"
            )
    return k_B


def debug_checks() -> bool:
    """Whether the SAEs' hot path validates values too (``SOFTSAE_DEBUG_CHECKS=1``)."""
    return os.environ.get(DEBUG_ENV, "0").strip() not in ("", "0")


def _check_k_max(k_max: float | None) -> float | None:
    if k_max is None:
        return None
    if isinstance(k_max, bool) or not isinstance(k_max, numbers.Real) or not k_max > 0:
        raise SoftSAEError(f"soft_topk: k_max must be a number > 0, got {k_max!r}")
    return float(k_max)


def prepare(
    x: Tensor, k: Tensor | float, alpha: float, validate: bool = True
) -> tuple[Tensor, Tensor, float]:
    """(x as (B, F), k as a float (B,) tensor, alpha as a float), checked.

    Shapes and dtypes are always checked (no host sync); ``validate`` also checks values
    (finite x, 0 < k < F), which reads them back to the host.
    """
    alpha = _check_alpha(alpha)
    x_BF = _check_x(x, validate)
    B, F = x_BF.shape
    k_B = _check_k(k, B, F, x_BF.device, validate)
    if k_B.dtype not in _FLOAT_DTYPES:
        k_B = k_B.double()
    return x_BF, k_B, alpha


def make_plan(
    x_BF: Tensor,
    k_B: Tensor,
    alpha: float,
    k_max: float | None = None,
    top: RowTop | None = None,
) -> Plan:
    """Each row's threshold and the path that serves it (_soft_topk_plan.py, _soft_topk_fixed.py).

    The fixed plan needs a bound k_max ≥ max(k); without one it reads max(k) from k (a sync).
    ``top``: each row's largest entries of x_BF, sorted descending, when the caller has them
    (see :func:`plan_width`); the plan then takes its candidates from them, not a ``topk``.
    """
    x_BF, k64_B = x_BF.detach(), k_B.detach().double()
    fast = fast_path_enabled()
    if fast and planner(x_BF.device) == "fixed":
        if k_max is None:
            k_max = float(k64_B.max()) if k64_B.numel() else 1.0
        return plan_fixed(x_BF, k64_B, alpha, k_max, top)
    return plan_rows(x_BF, k64_B, alpha, fast, top)


def plan_width(k_max: float, F: int, device: torch.device) -> int:
    """How many of each row's largest entries ``make_plan`` takes for any k ≤ k_max on
    ``device`` (0: none, it sorts): a caller that computes that ``top`` once can share it."""
    if not fast_path_enabled():
        return 0
    if planner(device) == "fixed":
        return fixed_width(k_max, F)
    return _first_size(k_max, F) or 0


class _SoftTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_BF: Tensor, k_B: Tensor, alpha: float, plan: Plan) -> Tensor:
        ctx.plan, ctx.alpha, ctx.k_dtype = plan, alpha, k_B.dtype
        ctx.save_for_backward(x_BF)
        return forward_output(x_BF, plan, alpha, x_BF.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable  # (its stub makes ctx positional-only)
    def backward(  # pyright: ignore[reportIncompatibleMethodOverride]
        ctx: Any, *grad_outputs: Tensor
    ) -> tuple[Tensor | None, ...]:
        (grad_p_BF,) = grad_outputs
        (x_BF,) = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        grad_x, grad_k = backward_grads(x_BF, ctx.plan, ctx.alpha, grad_p_BF, need_x)
        grad_k = grad_k.to(ctx.k_dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_k, None, None


def dense_soft_topk(x_BF: Tensor, k_B: Tensor, alpha: float, plan: Plan) -> Tensor:
    """p (B, F) from checked inputs and their plan, differentiable in x and k."""
    return _SoftTopK.apply(x_BF, k_B, alpha, plan)


def soft_topk(
    x: Tensor,
    k: Tensor | float,
    alpha: float,
    *,
    k_max: float | None = None,
    validate: bool = True,
) -> Tensor:
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

    Off the CPU the work has fixed shapes and reads nothing back to the host when ``k_max``
    (a bound on every k, e.g. an SAE's largest k̂) is given and ``validate=False`` (the value
    checks read x and k back); ``SOFTSAE_SOFT_TOPK_PATH`` picks the plan (see
    ``_soft_topk_plan.planner``). A k above ``k_max`` with ``validate=False`` is not caught.
    """
    k_max = _check_k_max(k_max)
    x_BF, k_B, alpha = prepare(x, k, alpha, validate)
    if validate and k_max is not None and k_B.numel() and float(k_B.detach().max()) > k_max:
        raise SoftSAEError(f"soft_topk: every k must be ≤ k_max = {k_max}")
    p_BF = dense_soft_topk(x_BF, k_B, alpha, make_plan(x_BF, k_B, alpha, k_max))
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
