"""dictionary_learning ``ae.pt`` files: TopK, BatchTopK and the SoftSAE paper's checkpoints.

The layout (a plain state dict saved with ``torch.save``): ``encoder.weight`` (F, d),
``encoder.bias`` (F), ``decoder.weight`` (d, F), ``b_dec`` (d), a ``k`` buffer, and
- TopK / BatchTopK: a ``threshold`` buffer (BatchTopK infers with it, TopK keeps top-k per row);
- SoftSAE (the paper's code, github St0pien/SoftSAE): ``k_estimator.0.*`` (h, d),
  ``k_estimator.2.*`` (1, h) followed by a sigmoid, ``k_max``, ``alpha``, ``norm_factor`` and
  ``shift_factor`` — inputs are normalised as (x − shift_factor) / norm_factor before encoding.

dictionary_learning writes a ``config.json`` next to ``ae.pt`` whose ``trainer.dict_class``
names the class; it decides TopK against BatchTopK when present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import BaseSAE
from softsae_vision.sae.importers._build import CoreWeights, build_native, tensors_of

CORE = ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec"]
KINDS = ("softsae", "topk", "batchtopk")


def read_state(path: Path) -> dict[str, Any]:
    """The state dict in a ``torch.save`` file, loaded without executing code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or unsafe file
        raise SoftSAEError(
            f"{path} could not be read as a PyTorch state dict ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if not isinstance(state, dict):
        raise SoftSAEError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def _dict_class(path: Path) -> str | None:
    config = path.parent / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("trainer", {}).get("dict_class")
    except (json.JSONDecodeError, AttributeError):
        return None


def kind_of(path: Path, state: dict[str, Any]) -> str:
    """Which architecture an ``ae.pt`` holds: "softsae", "topk" or "batchtopk"."""
    if any(key.startswith("k_estimator.") for key in state):
        return "softsae"
    dict_class = _dict_class(path) or ""
    if "batch" in dict_class.lower():
        return "batchtopk"
    if "topk" in dict_class.lower():
        return "topk"
    threshold = state.get("threshold")
    if threshold is None or float(threshold) < 0:
        return "topk"  # an untrained threshold: BatchTopK would keep every positive latent
    raise SoftSAEError(
        f"{path} may be a TopK or a BatchTopK SAE (no config.json with trainer.dict_class next "
        "to it); pass format='dictionary_learning:topk' or 'dictionary_learning:batchtopk'"
    )


def load(path: Path, kind: str | None = None) -> tuple[BaseSAE, dict[str, Any]]:
    """Import an ``ae.pt`` (or a folder holding one) as a native SAE; also its provenance."""
    if path.is_dir():
        path = path / "ae.pt"
    state = read_state(path)
    kind = kind or kind_of(path, state)
    if kind not in KINDS:
        raise SoftSAEError(f"unknown dictionary_learning kind {kind!r}; use one of {KINDS}")
    w = tensors_of(state, CORE, str(path))
    common = CoreWeights(
        W_enc_FD=w["encoder.weight"],
        b_enc_F=w["encoder.bias"],
        W_dec_FD=w["decoder.weight"].t(),
        b_dec_D=w["b_dec"],
    )
    k = int(torch.as_tensor(state.get("k", 0)))
    info: dict[str, Any] = {"format": f"dictionary_learning:{kind}", "path": str(path)}
    if kind == "softsae":
        return _softsae(path, state, common, k, info), info
    if k <= 0:
        raise SoftSAEError(f"{path} has no positive k buffer; it is not a TopK SAE file")
    if kind == "topk":
        return build_native("topk", hparams={"k": k}, source=str(path), **common), info
    threshold = torch.as_tensor(state.get("threshold", -1.0)).float().reshape(())
    sae = build_native(
        "batchtopk",
        hparams={"k": k},
        extra={"threshold": threshold},
        source=str(path),
        **common,
    )
    return sae, info


def _softsae(
    path: Path, state: dict[str, Any], common: CoreWeights, k: int, info: dict[str, Any]
) -> BaseSAE:
    est = tensors_of(
        state,
        [
            "k_estimator.0.weight",
            "k_estimator.0.bias",
            "k_estimator.2.weight",
            "k_estimator.2.bias",
        ],
        str(path),
    )
    if "k_max" not in state:
        raise SoftSAEError(
            f"{path} has no k_max buffer (an early version of the paper's code, where k̂ "
            "spans the whole dictionary); only checkpoints with k_max can be imported exactly"
        )
    n_latents, d_in = common["W_enc_FD"].shape
    k_max = float(torch.as_tensor(state["k_max"]))
    if not k < k_max < n_latents:
        raise SoftSAEError(
            f"{path}: k={k}, k_max={k_max:g} with {n_latents} latents; softsae_vision needs "
            "k < k_max < n_latents to reproduce this checkpoint"
        )
    norm_scale = torch.as_tensor(state.get("norm_factor", 1.0)).float().reshape(())
    shift = state.get("shift_factor")
    info["alpha"] = float(torch.as_tensor(state["alpha"])) if "alpha" in state else None
    return build_native(
        "softsae",
        hparams={
            "k": float(k),
            "k_max": k_max,
            "estimator": "paper",
            "estimator_hidden": int(est["k_estimator.0.weight"].shape[0]),
        },
        norm_mean_D=None if shift is None else torch.as_tensor(shift).float(),
        norm_scale=norm_scale,
        extra=est,
        source=str(path),
        **common,
    )
