"""The image tower of an open_clip model as a :class:`Backbone`.

Two tower kinds exist: open_clip's own ``VisionTransformer`` (OpenAI/LAION CLIP; one CLS token)
and ``TimmModel`` wrapping a timm ViT trunk (SigLIP and others). The ``embed`` layer is the
tower's output: the pooled, projected image embedding used for contrastive matching (not
L2-normalised).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from softsae_vision.backbones.base import Backbone, TokenLayout
from softsae_vision.backbones.timm_backbone import check_vit, timm_layout
from softsae_vision.backbones.transform import Preprocess
from softsae_vision.backbones.weights import (
    build_random,
    checkpoint_id,
    load_checkpoint_or_fail,
    load_pretrained,
)
from softsae_vision.errors import SoftSAEError


def preprocess_from_cfg(cfg: dict[str, Any]) -> Preprocess:
    """Our :class:`Preprocess` for an open_clip ``preprocess_cfg`` dict."""
    size = cfg.get("size", 224)
    size_hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    fill = int(cfg.get("fill_color", 0) or 0)
    interpolation = cfg.get("interpolation", "bicubic")
    mean_r, mean_g, mean_b = (float(v) for v in cfg["mean"])
    std_r, std_g, std_b = (float(v) for v in cfg["std"])
    return Preprocess(
        resize_size=size_hw,
        crop_size=size_hw,
        resize_mode=cfg.get("resize_mode", "shortest") or "shortest",
        interpolation="bilinear" if interpolation == "bilinear" else "bicubic",
        mean=(mean_r, mean_g, mean_b),
        std=(std_r, std_g, std_b),
        fill=(fill, fill, fill),
    )


class OpenClipBackbone(Backbone):
    """An open_clip image tower (``model.visual``)."""

    _tower: Any
    """``model`` itself, typed for duck access: open_clip's ``VisionTransformer`` (with
    ``transformer``, ``_embeds``) or its ``TimmModel`` (with a timm ``trunk``)."""
    _trunk: Any
    """The timm ViT inside a ``TimmModel`` tower, else None."""
    _blocks: Sequence[nn.Module]

    def __init__(self, visual: nn.Module, name: str, weights: str, device: torch.device):
        self.model = self._tower = visual.eval().requires_grad_(False).to(device)
        self.name, self.weights, self.device = name, weights, device
        self.preprocess = preprocess_from_cfg(dict(getattr(visual, "preprocess_cfg", {}) or {}))
        self._trunk = getattr(visual, "trunk", None)
        tower = self._tower
        if self._trunk is not None:  # open_clip TimmModel around a timm ViT
            check_vit(self._trunk, name)
            self.layout = timm_layout(self._trunk, self.preprocess.crop_size)
            self.d_model = int(self._trunk.embed_dim)
            self._blocks = self._trunk.blocks
        elif hasattr(visual, "transformer") and hasattr(visual, "class_embedding"):
            grid_h, grid_w = tower.grid_size
            self.layout = TokenLayout(n_cls=1, n_reg=0, grid=(int(grid_h), int(grid_w)))
            self.d_model = int(tower.transformer.width)
            self._blocks = tower.transformer.resblocks
        else:
            raise SoftSAEError(
                f"{name}: the image tower is a {type(visual).__name__}, not a Vision Transformer; "
                "softsae_vision extracts token activations from ViT-style towers only"
            )
        with torch.inference_mode():
            probe = torch.zeros(1, 3, *self.preprocess.crop_size, device=device)
            self.d_embed = int(self._run_embed(probe).shape[-1])

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self._blocks

    def _block_output(self, output: torch.Tensor) -> torch.Tensor:
        seq_first = self._trunk is None and not getattr(
            self._tower.transformer, "batch_first", True
        )
        return output.transpose(0, 1) if seq_first else output

    def _run_features(self, x_BCHW: torch.Tensor) -> None:
        if self._trunk is not None:
            self._trunk.forward_features(x_BCHW)
        else:
            self._tower.transformer(self._tower._embeds(x_BCHW))

    def _run_embed(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        out = self.model(x_BCHW)
        return out[0] if isinstance(out, tuple) else out


def load_open_clip(
    arch: str,
    tag: str | None,
    pretrained: bool,
    checkpoint: str | os.PathLike[str] | None,
    device: torch.device,
    image_size: int | None = None,
) -> OpenClipBackbone:
    """Create an open_clip model's image tower: pretrained tag, local checkpoint, or random."""
    import open_clip

    has_schema = arch.startswith(("hf-hub:", "local-dir:"))
    if not has_schema and arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=6, cutoff=0.6)
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise SoftSAEError(f"open_clip has no architecture named {arch!r}{hint}")
    kwargs: dict[str, Any] = {"force_image_size": image_size} if image_size else {}
    label = f"open_clip/{arch}"

    def create(source: str | None, **extra: Any) -> nn.Module:
        return open_clip.create_model(arch, pretrained=source, **kwargs, **extra)

    if checkpoint is not None:
        weights = checkpoint_id(checkpoint)
        model = load_checkpoint_or_fail(label, checkpoint, lambda: create(str(checkpoint)))
    elif pretrained and has_schema:
        weights = "pretrained"
        model = load_pretrained(label, lambda: create(None))
    elif pretrained:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags:
            raise SoftSAEError(
                f"name the pretrained weights: open_clip/{arch}:TAG with TAG one of "
                f"{', '.join(tags) or '(none known)'}; or pass --checkpoint or --no-pretrained"
            )
        weights = f"pretrained:{tag}"
        label = f"open_clip/{arch}:{tag}"
        model = load_pretrained(label, lambda: create(tag, require_pretrained=True))
    else:
        weights = "random"
        model = build_random(lambda: create(None, load_weights=False))
    visual = model.visual
    if not isinstance(visual, nn.Module):
        raise SoftSAEError(f"{label} has no image tower (model.visual); it cannot be extracted")
    del model  # drop the text tower
    return OpenClipBackbone(visual, label, weights, device)
