"""Device selection shared by extraction and training."""

from __future__ import annotations

import torch

from softsae_vision.errors import SoftSAEError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn "auto" into cuda (or mps) when available, else cpu; validate explicit names."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise SoftSAEError(
            f"unknown device {name!r} ({err}); use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SoftSAEError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device
