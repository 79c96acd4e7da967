"""Device selection shared by extraction and training."""

from __future__ import annotations

import os

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


def device_switch(env: str, on_cpu: str, elsewhere: str, device: torch.device) -> str:
    """The setting an ``auto | <on_cpu> | <elsewhere>`` environment switch ``env`` picks for
    ``device``: auto (the default, also when empty) takes ``on_cpu`` on a CPU, where reading a
    number back to the host costs nothing, and ``elsewhere`` on other devices; any other value
    is a clear error naming the switch."""
    choice = os.environ.get(env, "auto").strip().lower() or "auto"
    if choice not in ("auto", on_cpu, elsewhere):
        raise SoftSAEError(f"{env}={choice!r} is not one of auto, {on_cpu}, {elsewhere}")
    if choice == "auto":
        return on_cpu if device.type == "cpu" else elsewhere
    return choice
