"""Tiny random-weight models and hand-built SAEs for the downstream and naming tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from softsae_vision.sae import ReLUSAE

TINY_CLIP = "softsae-test-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_clip(root: Path) -> str:
    """Make the tiny open_clip architecture known to open_clip; return its backbone name."""
    import open_clip

    if TINY_CLIP not in open_clip.list_models():
        path = root / f"{TINY_CLIP}.json"
        path.write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(path)
    return f"open_clip/{TINY_CLIP}"


def class_folders(root: Path, classes=("cat", "dog", "red car"), per_class: int = 3) -> Path:
    """A folder per class of small random images (seeded), names with spaces as underscores."""
    rng = np.random.default_rng(0)
    for c in classes:
        folder = root / c.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img{i}.png")
    return root


def identity_sae(d: int, mean: torch.Tensor, exact: bool = True) -> ReLUSAE:
    """A ReLU SAE with latents [x, -x] that reconstructs exactly, or (exact=False) one whose
    reconstruction is always ``mean`` (the mean-ablation)."""
    sae = ReLUSAE(d, 2 * d)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]) if exact else torch.zeros(2 * d, d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.norm_mean.copy_(mean)
        sae.norm_scale.fill_(1.0)
    return sae


def save_run(sae, run: Path, layer, tokens: str, backbone: str) -> Path:
    """Save ``sae`` as a finished run trained on ``layer``/``tokens`` of ``backbone``."""
    data = {"kind": "store", "layer": layer, "tokens": tokens, "backbone": backbone}
    sae.save(run, {"status": "complete", "data": data, "training": {"seed": 0}})
    return run
