"""SAELens and sparsify folders: ``cfg.json`` + ``sae.safetensors``.

SAELens (``architecture`` in cfg.json): ``W_enc`` (d, F), ``b_enc``, ``W_dec`` (F, d), ``b_dec``;
encode = activation((x − b_dec·apply_b_dec_to_input) W_enc + b_enc). Imported: ``topk`` (per-row
top-k after ReLU) and ``jumprelu`` with one threshold shared by every latent, which is how
SAELens saves a trained BatchTopK SAE for inference. ``normalize_activations`` "none" and
"expected_average_only_in" leave the forward pass unscaled; the per-input rescalings
("constant_norm_rescale", "layer_norm") are refused.

sparsify (EleutherAI; ``k`` and ``num_latents``/``expansion_factor`` in cfg.json):
``encoder.weight`` (F, d), ``encoder.bias``, ``W_dec`` (F, d), ``b_dec``; encode = top-k of
ReLU((x − b_dec) W_encᵀ + b_enc). Skip connections and transcoders are refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import BaseSAE
from softsae_vision.sae.importers._build import (
    CoreWeights,
    build_native,
    fold_input_bias,
    tensors_of,
)

log = logging.getLogger(__name__)

CFG_FILE, WEIGHTS_FILE = "cfg.json", "sae.safetensors"


def read_folder(path: Path) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """The folder's (path, cfg.json, tensors)."""
    folder = path.parent if path.is_file() else path
    cfg_path, weights = folder / CFG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file() or not weights.is_file():
        raise SoftSAEError(f"{folder} needs both {CFG_FILE} and {WEIGHTS_FILE}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise SoftSAEError(f"{cfg_path} is not valid JSON ({err})") from None
    return folder, cfg, load_file(str(weights))


def is_saelens(cfg: dict[str, Any]) -> bool:
    """SAELens configs name the dictionary width ``d_sae``; sparsify's do not."""
    return "d_sae" in cfg


def load_saelens(path: Path) -> tuple[BaseSAE, dict[str, Any]]:
    """Import a SAELens TopK or (JumpReLU-saved) BatchTopK folder."""
    folder, cfg, state = read_folder(path)
    arch = cfg.get("architecture", "standard")
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", "expected_average_only_in", None):
        raise SoftSAEError(
            f"{folder}: normalize_activations={norm!r} rescales every input by its own norm, "
            "which a softsae_vision SAE cannot hold; only 'none' and "
            "'expected_average_only_in' can be imported"
        )
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise SoftSAEError(f"{folder}: attention-head (hook_z) SAEs are not supported")
    w = tensors_of(state, ["W_enc", "b_enc", "W_dec", "b_dec"], str(folder))
    W_enc_FD = w["W_enc"].t().contiguous()
    b_enc = w["b_enc"]
    if not cfg.get("apply_b_dec_to_input", True):
        b_enc = fold_input_bias(W_enc_FD, b_enc, w["b_dec"])
    common = CoreWeights(W_enc_FD=W_enc_FD, b_enc_F=b_enc, W_dec_FD=w["W_dec"], b_dec_D=w["b_dec"])
    info: dict[str, Any] = {"format": f"saelens:{arch}", "path": str(folder)}
    info["meta"] = cfg.get("metadata") or cfg.get("meta") or {}
    if arch == "topk":
        return build_native("topk", hparams={"k": int(cfg["k"])}, source=str(folder), **common), (
            info
        )
    if arch in ("jumprelu", "batchtopk"):
        threshold_F = state.get("threshold", state.get("topk_threshold"))
        if threshold_F is None:
            raise SoftSAEError(f"{folder}: a {arch} SAE without a threshold tensor")
        threshold_F = threshold_F.float().reshape(-1)
        theta = float(threshold_F[0])
        if not torch.all(threshold_F == threshold_F[0]) or theta < 0:
            raise SoftSAEError(
                f"{folder}: a JumpReLU SAE with per-latent thresholds is not a BatchTopK SAE; "
                "only one shared, non-negative threshold (SAELens's saved BatchTopK) imports"
            )
        k = cfg.get("k")
        if k is None:
            log.warning("%s records no k; the imported BatchTopK SAE records k=1", folder)
        info["k_recorded"] = k is not None
        sae = build_native(
            "batchtopk",
            hparams={"k": max(1, round(float(k or 1)))},
            extra={"threshold": torch.tensor(theta)},
            source=str(folder),
            **common,
        )
        return sae, info
    raise SoftSAEError(
        f"{folder}: SAELens architecture {arch!r} is not imported; supported: topk, "
        "jumprelu/batchtopk with one shared threshold"
    )


def load_sparsify(path: Path) -> tuple[BaseSAE, dict[str, Any]]:
    """Import a sparsify (EleutherAI) TopK folder."""
    folder, cfg, state = read_folder(path)
    if cfg.get("skip_connection") or "W_skip" in state:
        raise SoftSAEError(f"{folder}: sparsify skip connections are not supported")
    if cfg.get("transcode"):
        raise SoftSAEError(f"{folder} is a transcoder, not an autoencoder")
    if cfg.get("activation", "topk") != "topk":
        raise SoftSAEError(f"{folder}: activation {cfg['activation']!r} is not imported (topk is)")
    if "k" not in cfg:
        raise SoftSAEError(f"{folder}/{CFG_FILE} has no k; it is not a sparsify TopK config")
    w = tensors_of(state, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], str(folder))
    sae = build_native(
        "topk",
        W_enc_FD=w["encoder.weight"],
        b_enc_F=w["encoder.bias"],
        W_dec_FD=w["W_dec"],
        b_dec_D=w["b_dec"],
        hparams={"k": int(cfg["k"])},
        source=str(folder),
    )
    return sae, {"format": "sparsify:topk", "path": str(folder)}
