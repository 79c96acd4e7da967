"""timm Vision Transformers (ViT, DeiT, DINOv2 with registers, EVA...) as a :class:`Backbone`."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from softsae_vision.backbones.base import Backbone, TokenLayout
from softsae_vision.backbones.transform import Preprocess
from softsae_vision.backbones.weights import (
    build_random,
    checkpoint_id,
    load_checkpoint_or_fail,
    load_pretrained,
)
from softsae_vision.errors import SoftSAEError


def timm_layout(vit: nn.Module, input_size: tuple[int, int]) -> TokenLayout:
    """Token layout of a timm ViT-style model for (h, w) inputs: [cls/dist] [registers] patches."""
    n_reg = int(getattr(vit, "num_reg_tokens", 0) or 0)
    n_prefix = int(getattr(vit, "num_prefix_tokens", 0) or 0)
    patch_embed: Any = vit.patch_embed  # timm's PatchEmbed variants, read by duck typing
    if hasattr(patch_embed, "dynamic_feat_size"):
        grid_h, grid_w = patch_embed.dynamic_feat_size(tuple(input_size))
    else:
        grid_h, grid_w = patch_embed.grid_size
    return TokenLayout(n_cls=n_prefix - n_reg, n_reg=n_reg, grid=(int(grid_h), int(grid_w)))


def check_vit(model: nn.Module, name: str) -> None:
    """Refuse models without a ViT's blocks and patch embedding, which we cannot hook."""
    if not all(hasattr(model, attr) for attr in ("blocks", "patch_embed", "forward_features")):
        raise SoftSAEError(
            f"{name} is not a Vision Transformer (no .blocks / .patch_embed); "
            "softsae_vision extracts token activations from ViT-style models only"
        )


class TimmBackbone(Backbone):
    """A timm ViT: blocks are ``model.blocks``, the embedding is the pre-logits head output."""

    _vit: Any
    """``model`` itself, typed for duck access: timm's ViT classes (VisionTransformer, Eva,
    ...) share ``blocks``, ``patch_embed``, ``forward_features`` and ``forward_head`` but no base
    class that declares them (:func:`check_vit` checks they exist)."""

    def __init__(self, model: nn.Module, name: str, weights: str, device: torch.device):
        check_vit(model, name)
        from timm.data.config import resolve_data_config

        self.model = self._vit = model.eval().requires_grad_(False).to(device)
        self.name, self.weights, self.device = name, weights, device
        config = resolve_data_config(model=model)
        img_h, img_w = self._vit.patch_embed.img_size
        input_size = (int(img_h), int(img_w))
        self.preprocess = Preprocess.timm_style(
            input_size=input_size,
            crop_pct=float(config.get("crop_pct", 0.875)),
            crop_mode=config.get("crop_mode", "center") or "center",
            interpolation=config.get("interpolation", "bicubic"),
            mean=config["mean"],
            std=config["std"],
        )
        self.layout = timm_layout(model, input_size)
        self.d_model = int(self._vit.embed_dim)
        self.d_embed = int(getattr(model, "head_hidden_size", self._vit.num_features))

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self._vit.blocks

    def _run_features(self, x_BCHW: torch.Tensor) -> None:
        self._vit.forward_features(x_BCHW)

    def _run_embed(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self._vit.forward_head(self._vit.forward_features(x_BCHW), pre_logits=True)


def load_timm(
    model_name: str,
    tag: str | None,
    pretrained: bool,
    checkpoint: str | os.PathLike[str] | None,
    device: torch.device,
    image_size: int | None = None,
) -> TimmBackbone:
    """Create a timm model by name: pretrained (optionally a tag), from a checkpoint, or random."""
    import timm

    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=6, cutoff=0.6)
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise SoftSAEError(f"timm has no model named {model_name!r}{hint}")
    full = f"{model_name}.{tag}" if tag else model_name
    kwargs: dict[str, Any] = {"img_size": image_size} if image_size else {}
    label = f"timm/{full}"
    if checkpoint is not None:
        weights = checkpoint_id(checkpoint)
        model = load_checkpoint_or_fail(
            label,
            checkpoint,
            lambda: timm.create_model(
                full, pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)}, **kwargs
            ),
        )
    elif pretrained:
        model = load_pretrained(label, lambda: timm.create_model(full, pretrained=True, **kwargs))
        tag = getattr(model, "pretrained_cfg", {}).get("tag") or tag
        weights = f"pretrained:{tag}" if tag else "pretrained"
        label = f"timm/{model_name}.{tag}" if tag else label
    else:
        weights = "random"
        model = build_random(lambda: timm.create_model(full, pretrained=False, **kwargs))
    return TimmBackbone(model, label, weights, device)
