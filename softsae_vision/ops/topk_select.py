"""Hard per-row top-k with a per-row k: the selection SAEs run at inference."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from softsae_vision.errors import SoftSAEError


def _check_hard_k(
    k: int | Tensor, B: int, F: int, device: torch.device, values: bool = True
) -> Tensor:
    """Return k as an int64 (B,) tensor; ``values`` also checks 0 ≤ k ≤ F (a host read)."""
    if isinstance(k, Tensor):
        if k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
            raise SoftSAEError(
                f"hard_topk: k must be an integer tensor, got {k.dtype}; "
                "round a real-valued k first (e.g. k.floor().long())"
            )
        if k.dim() == 0:
            k_B = k.reshape(1).expand(B)
        elif k.shape in ((B,), (B, 1)):
            k_B = k.reshape(B)
        else:
            raise SoftSAEError(
                f"hard_topk: k must be an int or have shape ({B},) to match x, got {tuple(k.shape)}"
            )
        k_B = k_B.to(device=device, dtype=torch.int64)
    elif isinstance(k, numbers.Integral) and not isinstance(k, bool):
        if not 0 <= int(k) <= F:
            raise SoftSAEError(f"hard_topk: every k must lie in [0, F = {F}]; got {int(k)}")
        return torch.full((B,), int(k), dtype=torch.int64, device=device)
    else:
        raise SoftSAEError(f"hard_topk: k must be an int or an integer tensor, got {type(k)}")
    if values and B and (int(k_B.min()) < 0 or int(k_B.max()) > F):
        raise SoftSAEError(
            f"hard_topk: every k must lie in [0, F = {F}]; "
            f"got values in [{int(k_B.min())}, {int(k_B.max())}]"
        )
    return k_B


def hard_topk(
    x: Tensor, k: int | Tensor, *, k_max: int | None = None, validate: bool = True
) -> Tensor:
    """Return x with all but the k_b largest entries of each row b set to zero.

    x: (B, F) (or (F,) for one row); k: an int, or an integer (B,) tensor with values in
    [0, F]. One ``torch.topk`` with the batch's largest k, a mask of the first k_b positions,
    and a scatter into zeros: no full sort. The gradient reaches the kept entries only
    (as x's own gradient there; 0 elsewhere). Among tied values, which are kept follows
    ``torch.topk`` (deterministic for a given input and device).

    ``k_max`` (an int bound on every k) fixes the width of the top-k, so nothing is read back
    to the host when ``validate=False`` too (the value check reads k); a k above ``k_max``
    then keeps only k_max entries.
    """
    out_BF, _, _ = hard_topk_sparse(x, k, k_max=k_max, validate=validate)
    return out_BF


def hard_topk_sparse(
    x: Tensor, k: int | Tensor, *, k_max: int | None = None, validate: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """(hard_topk(x, k), idx (B, K), kept values (B, K), 0 past each row's k) with K = k_max.

    The selected entries in sparse form, for decoders that gather through them.
    """
    idx_BK, vals_BK = hard_topk_entries(x, k, k_max=k_max, validate=validate)
    if x.dim() == 1:
        return torch.zeros_like(x).scatter_(0, idx_BK, vals_BK), idx_BK, vals_BK
    return torch.zeros_like(x).scatter_(1, idx_BK, vals_BK), idx_BK, vals_BK  # no extra copy


def hard_topk_entries(
    x: Tensor, k: int | Tensor, *, k_max: int | None = None, validate: bool = True
) -> tuple[Tensor, Tensor]:
    """(idx (B, K), kept values (B, K), 0 past each row's k) with K = k_max: the entries of
    :func:`hard_topk` alone, without the dense (B, F) result (a training step's selection).
    """
    if not isinstance(x, Tensor) or x.dim() not in (1, 2):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise SoftSAEError(f"hard_topk: x must be a (B, F) or (F,) tensor, got {shape}")
    x_BF = x if x.dim() == 2 else x[None]
    B, F = x_BF.shape
    k_B = _check_hard_k(k, B, F, x_BF.device, validate)
    if k_max is None:
        k_max = (int(k_B.max()) if B else 0) if isinstance(k, Tensor) else int(k)
    elif isinstance(k_max, bool) or not isinstance(k_max, numbers.Integral) or k_max < 0:
        raise SoftSAEError(f"hard_topk: k_max must be an int ≥ 0, got {k_max!r}")
    elif validate and B and int(k_B.max()) > k_max:
        raise SoftSAEError(f"hard_topk: every k must be ≤ k_max = {k_max}")
    k_max = min(int(k_max), F)
    vals_BK, idx_BK = torch.topk(x_BF, k_max, dim=1, sorted=True)
    keep_BK = torch.arange(k_max, device=x_BF.device)[None, :] < k_B[:, None]
    vals_BK = torch.where(keep_BK, vals_BK, torch.zeros_like(vals_BK))
    if x.dim() == 1:
        return idx_BK[0], vals_BK[0]
    return idx_BK, vals_BK
