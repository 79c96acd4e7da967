"""z ⊙ soft_topk(z, k, α) formed on each row's candidates: the SoftSAE's soft codes.

Public as ``softsae_vision.ops.soft_topk_codes`` / ``soft_topk_product``; the codes come back
as a :class:`~softsae_vision.ops.SelectedCodes` (ops/selected_codes.py).

When every row of the plan is served by its top candidates, p is zero off them, so the
product only needs the candidates: gather z there, multiply by their weights and scatter
into zeros. The same numbers as the dense product, without a dense p, two dense products and
p's dense gradient. With the adaptive plan, a batch with a row served densely (see
_soft_topk_plan.py) falls back to the dense product; with the fixed plan
(_soft_topk_fixed.py) the dense rows' product is added as a masked remainder, so no branch
depends on the data. On the adaptive plan each row then keeps only the candidates that
matter (``_weighted_entries``): a group is as wide as the batch's largest k needs. The result
keeps its sparse form (:class:`SelectedCodes`) so that a decoder can gather through the
candidates (ops/sparse_decode.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops._soft_topk_apply import candidate_grads, candidate_weights
from softsae_vision.ops._soft_topk_plan import FixedRows, Plan, RowTop
from softsae_vision.ops.lapsum_topk import dense_soft_topk, make_plan, prepare
from softsae_vision.ops.selected_codes import SelectedCodes
from softsae_vision.ops.sparse_encode import SparseEncoding

KEPT_SHARE_BITS = 64
"""A candidate of zero weight is still kept while its share of the threshold's gradient,
φ_j / Σ φ_i with φ = ½e^{−|t|}, may exceed 2^−KEPT_SHARE_BITS."""


def _weighted_entries(
    rows_R: Tensor | None, idx_RM: Tensor, t_RM: Tensor, w_RM: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(rows (N,) ascending, cols (N,), weights (N,)): the candidates of a group that matter.

    With k̂ varying per row a group is as wide as the largest k̂ needs, and most of a small-k̂
    row's candidates lie far below its threshold: their weights round to 0 in the codes' dtype,
    and their share of ∂L/∂k̂ (φ_j / Σ φ_i) is below 2^−64. Dropping them changes no code, no
    gradient of z or W_dec, and ∂L/∂k̂ by less than float64 rounding. A zero weight alone is
    not enough: when the threshold sits in a wide gap between two latents, the one below it
    has a weight that rounds to 0 and carries half of ∂L/∂k̂.
    """
    abs_t_RM = t_RM.abs()
    near_R1 = abs_t_RM.amin(dim=1, keepdim=True) + KEPT_SHARE_BITS * math.log(2)
    keep_RM = (w_RM.detach() != 0) | (abs_t_RM <= near_R1)
    row_ids_R = torch.arange(idx_RM.shape[0], device=idx_RM.device) if rows_R is None else rows_R
    rows_N = row_ids_R[:, None].expand_as(idx_RM)[keep_RM]
    return rows_N, idx_RM[keep_RM], w_RM[keep_RM]


class _CandidateWeights(torch.autograd.Function):
    """w = Φ(t) (R, M) of one sparse group, differentiable in k (and in x when it asks)."""

    @staticmethod
    def forward(ctx, x_BF, k_B, alpha, rows_R, idx_RM, t_RM):
        ctx.alpha, ctx.k_meta, ctx.x_meta = alpha, (k_B.shape, k_B.dtype), (x_BF.shape, x_BF.dtype)
        ctx.rows_R = rows_R
        ctx.save_for_backward(idx_RM, t_RM)
        return candidate_weights(t_RM, x_BF.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable  # (its stub makes ctx positional-only)
    def backward(  # pyright: ignore[reportIncompatibleMethodOverride]
        ctx: Any, *grad_outputs: Tensor
    ) -> tuple[Tensor | None, ...]:
        (grad_w_RM,) = grad_outputs
        idx_RM, t_RM = ctx.saved_tensors
        need_x, need_k = ctx.needs_input_grad[:2]
        rows_R, dev = ctx.rows_R, grad_w_RM.device
        gx_RM, gk_R = candidate_grads(t_RM, grad_w_RM.double(), ctx.alpha, need_x)
        grad_x = grad_k = None
        if need_k:
            k_shape, k_dtype = ctx.k_meta
            if rows_R is None:
                grad_k = gk_R.to(k_dtype)
            else:
                grad_k = torch.zeros(k_shape, dtype=k_dtype, device=dev)
                grad_k.index_copy_(0, rows_R, gk_R.to(k_dtype))
        if need_x and gx_RM is not None:
            x_shape, x_dtype = ctx.x_meta
            grad_x = torch.zeros(x_shape, dtype=x_dtype, device=dev)
            if rows_R is None:
                grad_x.scatter_(1, idx_RM, gx_RM.to(x_dtype))
            else:
                grad_x.index_put_((rows_R[:, None], idx_RM), gx_RM.to(x_dtype))
        return grad_x, grad_k, None, None, None, None


def soft_topk_codes(
    z: Tensor,
    k: Tensor | float,
    alpha: float,
    selection_grad: bool,
    *,
    k_max: float | None = None,
    validate: bool = True,
    top: RowTop | None = None,
    encoding: SparseEncoding | None = None,
) -> SelectedCodes:
    """z ⊙ soft_topk(z, k, alpha) in sparse form; the weights see z detached unless selection_grad.

    Equal to the dense product (every entry, and the gradients in z and k); z must be (B, F).
    ``k_max`` and ``validate`` as in :func:`~softsae_vision.ops.soft_topk`. ``top``: each row's
    largest entries of z (values, indices), sorted descending, when the caller has them
    (``plan_width`` says how many the plan takes).

    ``encoding``: the :class:`SparseEncoding` whose detached pre-activations ``z`` is: the codes
    then take the encoder's gradient through each row's candidates only, and the rows the plan
    serves densely through ``encoding.dense()`` (a recomputation; the fixed plan always makes
    one). Needs ``selection_grad=False`` (the weights' gradient in z touches every entry).
    """
    if not isinstance(z, Tensor) or z.dim() != 2:
        raise SoftSAEError("soft_topk_product: z must be a (B, F) tensor")
    if encoding is not None and selection_grad:
        raise SoftSAEError("soft_topk_codes: a sparse encoding needs selection_grad=False")
    x_BF, k_B, alpha = prepare(z if selection_grad else z.detach(), k, alpha, validate)
    plan = make_plan(x_BF, k_B, alpha, k_max, top)
    out = SelectedCodes((z.shape[0], z.shape[1]))

    def entries(idx_BN: Tensor) -> Tensor:
        """z at every row's candidates (B, N), with the encoder's gradient."""
        return z.gather(1, idx_BN) if encoding is None else encoding.gather(idx_BN)

    def flat_entries(rows_N: Tensor, cols_N: Tensor) -> Tensor:
        """z at (rows, cols) (N,), with the encoder's gradient."""
        if encoding is not None:
            return encoding.gather_flat(rows_N, cols_N)
        return z[rows_N, cols_N]

    def dense_z() -> Tensor:
        """z with its dense gradient (recomputed from the encoding when there is one)."""
        return z if encoding is None else encoding.dense()

    if plan.fixed is not None:
        fx = plan.fixed
        dense_only = Plan(fixed=FixedRows(fx.idx[:, :0], fx.t[:, :0], fx.dense, fx.ref, fx.u))
        out.rest = dense_z() * dense_soft_topk(x_BF, k_B, alpha, dense_only)  # 0 on candidate rows
        w_BN = _CandidateWeights.apply(x_BF, k_B, alpha, None, fx.idx, fx.t)  # 0 on dense rows
        out.groups.append((None, fx.idx, entries(fx.idx) * w_BN))
        return out
    if plan.dense or not plan.sparse:
        out.rest = dense_z() * dense_soft_topk(x_BF, k_B, alpha, plan)
        return out
    # the adaptive plan (its shapes already follow the data): each row keeps only the
    # candidates that matter. The first group serves every row; rows served later have weight
    # 0 there
    for grp in plan.sparse:
        w_RM = _CandidateWeights.apply(x_BF, k_B, alpha, grp.rows, grp.idx, grp.t)
        rows_N, cols_N, w_N = _weighted_entries(grp.rows, grp.idx, grp.t, w_RM)
        out.flat.append((rows_N, cols_N, flat_entries(rows_N, cols_N) * w_N))
    return out


def soft_topk_product(
    z: Tensor,
    k: Tensor | float,
    alpha: float,
    selection_grad: bool,
    *,
    k_max: float | None = None,
    validate: bool = True,
) -> Tensor:
    """z ⊙ soft_topk(z, k, alpha) (B, F); the weights see z detached unless selection_grad.

    Equal to the dense product (every entry, and the gradients in z and k); z must be (B, F).
    """
    return soft_topk_codes(z, k, alpha, selection_grad, k_max=k_max, validate=validate).dense()
