"""Build a native SAE from weights laid out in our convention (shared by every importer)."""

from __future__ import annotations

from typing import Any, TypedDict

import torch
from torch import Tensor

from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import SAE_REGISTRY, BaseSAE


class CoreWeights(TypedDict):
    """The four tensors every SAE has, in our convention; importers pass them as ``**core``."""

    W_enc_FD: Tensor
    b_enc_F: Tensor
    W_dec_FD: Tensor
    b_dec_D: Tensor


def build_native(
    architecture: str,
    *,
    W_enc_FD: Tensor,
    b_enc_F: Tensor,
    W_dec_FD: Tensor,
    b_dec_D: Tensor,
    norm_mean_D: Tensor | None = None,
    norm_scale: float | Tensor = 1.0,
    hparams: dict[str, Any] | None = None,
    extra: dict[str, Tensor] | None = None,
    source: str = "",
) -> BaseSAE:
    """A ``architecture`` SAE holding exactly these weights (float32), ready for inference."""
    n_latents, d_in = (int(s) for s in W_enc_FD.shape)
    expected = {
        "W_dec": (n_latents, d_in),
        "b_enc": (n_latents,),
        "b_dec": (d_in,),
    }
    given = {"W_dec": W_dec_FD, "b_enc": b_enc_F, "b_dec": b_dec_D}
    for name, shape in expected.items():
        if tuple(given[name].shape) != shape:
            raise SoftSAEError(
                f"{source}: {name} has shape {tuple(given[name].shape)}, expected {shape} "
                f"for an encoder of shape {(n_latents, d_in)}; the file is damaged or not "
                "the format it was read as"
            )
    sae = SAE_REGISTRY[architecture](d_in, n_latents, **(hparams or {}))
    state = sae.state_dict()
    updates: dict[str, Tensor | float] = {
        "W_enc": W_enc_FD,
        "b_enc": b_enc_F,
        "W_dec": W_dec_FD,
        "b_dec": b_dec_D,
        "norm_mean": torch.zeros(d_in) if norm_mean_D is None else norm_mean_D,
        "norm_scale": torch.as_tensor(norm_scale),
        **(extra or {}),
    }
    for key, value in updates.items():
        if key not in state:
            raise SoftSAEError(f"{source}: internal error, {architecture} has no tensor {key}")
        value = torch.as_tensor(value).detach().to(torch.float32)
        if value.shape != state[key].shape:
            raise SoftSAEError(
                f"{source}: {key} has shape {tuple(value.shape)}, expected "
                f"{tuple(state[key].shape)}; the file is damaged or not the format it was read as"
            )
        state[key] = value.clone()
    sae.load_state_dict(state, strict=True)
    return sae.eval()


def fold_input_bias(W_enc_FD: Tensor, b_enc_F: Tensor, b_dec_D: Tensor) -> Tensor:
    """b_enc' with (x − b_dec)·W_encᵀ + b_enc' = x·W_encᵀ + b_enc, for encoders without b_dec."""
    return (b_enc_F.double() + W_enc_FD.double() @ b_dec_D.double()).float()


def tensors_of(state: dict[str, Any], keys: list[str], source: str) -> dict[str, Tensor]:
    """The named tensors of ``state`` (float32), or an error naming those that are missing."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise SoftSAEError(
            f"{source} lacks {', '.join(missing)} (has {', '.join(sorted(state)[:12])}); "
            "it is not the format it was read as, pass format=... to choose another"
        )
    return {k: torch.as_tensor(state[k]).detach().float() for k in keys}
