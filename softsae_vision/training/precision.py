"""Numeric precision of a training run: fp32, TF32 matmuls, or bf16 autocast.

bf16 runs the encoder and decoder products under ``torch.autocast``; the parameters and
Adam's state stay fp32 (autocast casts copies), and k̂, the soft top-k threshold (float64)
and the losses' reductions are computed in fp32 or better. TF32 lets CUDA matmuls round
their inputs to TF32; it has no CPU counterpart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from softsae_vision.errors import SoftSAEError

PRECISIONS = ("auto", "fp32", "tf32", "bf16")


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls (probed once with a tiny product)."""
    global _CPU_BF16
    if _CPU_BF16 is None:
        try:
            a = torch.ones(4, 4, dtype=torch.bfloat16)
            _CPU_BF16 = bool((a @ a)[0, 0] == 4)
        except RuntimeError:
            _CPU_BF16 = False
    return _CPU_BF16


_CPU_BF16: bool | None = None


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "fp32", "tf32" or "bf16" for ``device``: auto is bf16 on CUDA, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise SoftSAEError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "tf32" and device.type != "cuda":
        raise SoftSAEError(
            f"--precision tf32 needs a CUDA device (this run is on {device.type}); "
            "use --precision fp32 or bf16"
        )
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        raise SoftSAEError(
            "--precision bf16: this CPU cannot run bf16 matmuls; use --precision fp32"
        )
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast region of a training step (a no-op unless precision is bf16)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Allow TF32 matmuls inside the block when precision is tf32; restore the setting after."""
    old = torch.get_float32_matmul_precision()
    if precision == "tf32":
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)
