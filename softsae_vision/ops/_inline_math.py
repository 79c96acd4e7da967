"""exp / log / logsumexp for the soft top-k numerics, kept off MKL's thread pool.

On CPU, torch.exp, torch.log and torch.logsumexp on float64 call MKL's vector math, which
enters its own thread pool even for a few hundred elements; on a busy machine every such
call can wait a scheduler tick (~10 ms, measured with 2 threads). exp2 and frexp are ATen's
own vectorised kernels and run inline below the intra-op grain size; log1p goes to MKL above
2048 elements, so it is called on pieces of at most that many. The results
agree with torch.exp / torch.log to a few ulp (relative error ≤ |x|·2⁻⁵³ for exp).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)
_VML_SERIAL_ELEMS = 2048  # MKL's vector math runs inline up to this many elements


def exp(x: Tensor) -> Tensor:
    """e^x via exp2."""
    return torch.exp2(x * LOG2E)


def log(x: Tensor) -> Tensor:
    """ln x via frexp and log1p (x = m·2^e with m in [0.5, 1), so m − 1 is exact)."""
    mantissa, exponent = torch.frexp(x)
    m1 = mantissa.sub_(1.0)
    if m1.numel() <= _VML_SERIAL_ELEMS:
        log_m = torch.log1p(m1)
    else:
        pieces = m1.reshape(-1).split(_VML_SERIAL_ELEMS)
        log_m = torch.cat([torch.log1p(piece) for piece in pieces]).reshape(m1.shape)
    return log_m + exponent.to(x.dtype) * _LN2


def logsumexp(x: Tensor, dim: int, keepdim: bool = False) -> Tensor:
    """log Σ e^x along dim; rows that are all −inf give −inf."""
    top = x.amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    out = log(exp(x - top).sum(dim=dim, keepdim=True)) + top
    return out if keepdim else out.squeeze(dim)
