"""saev checkpoints: one JSON header line, then a ``torch.save`` state dict.

Weights ``W_enc`` (d, F), ``b_enc``, ``W_dec`` (F, d), ``b_dec``; saev encodes
h = x·W_enc + b_enc (no b_dec subtraction, folded into b_enc here) and applies its activation:
``Relu`` → ReLU (imported as a ReLU SAE), ``TopK`` / ``BatchTopK`` → keep each row's k largest
h (BatchTopK also keeps k per row at inference), imported as a TopK SAE. saev keeps the k
largest values even when some are negative; a softsae_vision TopK SAE applies ReLU first, so
codes agree wherever each row's k largest pre-activations are positive (as in a trained SAE),
and a negative one becomes 0. saev scales activations in its data loader, not in the
checkpoint, so the imported SAE reads activations scaled as saev's loader gave them.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import torch

from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import BaseSAE
from softsae_vision.sae.importers._build import (
    CoreWeights,
    build_native,
    fold_input_bias,
    tensors_of,
)

log = logging.getLogger(__name__)


def read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, state dict) of a saev checkpoint."""
    with open(path, "rb") as fh:
        first = fh.readline()
        rest = fh.read()
    try:
        header = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SoftSAEError(f"{path} does not start with a JSON header line (saev format)") from None
    try:
        state = torch.load(io.BytesIO(rest), map_location="cpu", weights_only=True)
    except Exception as err:  # damaged or unsafe payload
        raise SoftSAEError(
            f"{path}: the state dict after the header is unreadable ({err})"
        ) from None
    return header, state


def activation_of(header: dict[str, Any]) -> tuple[str, int | None]:
    """(activation class name, top_k) from any saev header schema (none, 1A, 1B, 2)."""
    if "schema" not in header:
        return "Relu", None
    if int(header["schema"]) > 2:
        raise SoftSAEError(f"saev header schema {header['schema']} is newer than this importer")
    cfg = header.get("cfg", {})
    cls_name = header.get("cls", "SparseAutoencoderConfig")
    if cls_name in ("Relu", "TopK", "BatchTopK"):
        return cls_name, cfg.get("top_k")
    act = cfg.get("activation")
    if isinstance(act, dict):
        return act.get("cls", "Relu"), (act.get("params") or {}).get("top_k")
    return "Relu", None


def load(path: Path) -> tuple[BaseSAE, dict[str, Any]]:
    """Import a saev ``sae.pt`` as a native ReLU or TopK SAE."""
    header, state = read(path)
    act, top_k = activation_of(header)
    w = tensors_of(state, ["W_enc", "b_enc", "W_dec", "b_dec"], str(path))
    W_enc_FD = w["W_enc"].t().contiguous()
    common = CoreWeights(
        W_enc_FD=W_enc_FD,
        b_enc_F=fold_input_bias(W_enc_FD, w["b_enc"], w["b_dec"]),
        W_dec_FD=w["W_dec"],
        b_dec_D=w["b_dec"],
    )
    info = {"format": f"saev:{act}", "path": str(path), "header": header}
    if act == "Relu":
        return build_native("relu", source=str(path), **common), info
    if act in ("TopK", "BatchTopK"):
        k = int(top_k or 32)
        return build_native("topk", hparams={"k": k}, source=str(path), **common), info
    raise SoftSAEError(f"{path}: saev activation {act!r} is not imported (Relu, TopK, BatchTopK)")
