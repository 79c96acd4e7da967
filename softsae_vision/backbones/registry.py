"""Backbone names (``timm/<model>[.<tag>]``, ``open_clip/<arch>[:<tag>]``) and the loader registry.

A name says which library builds the model; each library registers one loader function under its
prefix, so supporting another library is one new module and one ``register_backbone_library``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from softsae_vision.backbones.base import Backbone
from softsae_vision.devices import resolve_device
from softsae_vision.errors import SoftSAEError


class Loader(Protocol):
    """Builds one library's backbone: ``loader(model, tag, pretrained=..., ...) -> Backbone``."""

    def __call__(
        self,
        model: str,
        tag: str | None,
        /,
        *,
        pretrained: bool,
        checkpoint: str | os.PathLike[str] | None,
        device: torch.device,
        image_size: int | None,
    ) -> Backbone: ...


_LOADERS: dict[str, Loader] = {}
_TAG_SEPARATORS: dict[str, str] = {}


def register_backbone_library(prefix: str, tag_separator: str) -> Callable[[Loader], Loader]:
    """Register ``loader`` for names ``<prefix>/<model><tag_separator><tag>``."""

    def decorate(loader: Loader) -> Loader:
        _LOADERS[prefix] = loader
        _TAG_SEPARATORS[prefix] = tag_separator
        return loader

    return decorate


@dataclass(frozen=True)
class BackboneName:
    """A parsed backbone name."""

    library: str
    model: str
    tag: str | None = None

    def __str__(self) -> str:
        tag = f"{_TAG_SEPARATORS[self.library]}{self.tag}" if self.tag else ""
        return f"{self.library}/{self.model}{tag}"


def _examples() -> str:
    return "timm/vit_small_patch16_224.augreg_in21k or open_clip/ViT-B-32:laion2b_s34b_b79k"


def parse_backbone_name(name: str) -> BackboneName:
    """Split ``library/model[<sep>tag]``; unknown libraries are a SoftSAEError."""
    library, slash, rest = name.strip().partition("/")
    if not slash or not rest:
        raise SoftSAEError(
            f"backbone name {name!r} has no library prefix; write e.g. {_examples()}"
        )
    if library not in _LOADERS:
        raise SoftSAEError(
            f"unknown backbone library {library!r} in {name!r}; "
            f"known: {', '.join(sorted(_LOADERS))}"
        )
    if rest.startswith(("hf-hub:", "local-dir:")):
        return BackboneName(library, rest, None)
    sep = _TAG_SEPARATORS[library]
    model, found, tag = rest.partition(sep) if sep == "." else rest.rpartition(sep)
    if not found:
        model, tag = rest, ""
    if not model:
        raise SoftSAEError(
            f"backbone name {name!r} has an empty model name; write e.g. {_examples()}"
        )
    return BackboneName(library, model, tag or None)


def load_backbone(
    name: str,
    pretrained: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
) -> Backbone:
    """Load a backbone by name, in eval mode on ``device``.

    ``checkpoint`` (a local weights file) takes precedence over ``pretrained``; with
    ``pretrained=False`` the weights are random but reproducible (fixed seed). ``image_size``
    overrides the model's input size where the architecture allows it.
    """
    parsed = parse_backbone_name(name)
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise SoftSAEError(f"--image-size must be a positive number of pixels, got {image_size!r}")
    loader = _LOADERS[parsed.library]
    backbone = loader(
        parsed.model,
        parsed.tag,
        pretrained=pretrained,
        checkpoint=checkpoint,
        device=resolve_device(device),
        image_size=image_size,
    )
    if image_size is not None:
        _check_patch_multiple(backbone, image_size)
    return backbone


def _check_patch_multiple(backbone: Backbone, image_size: int) -> None:
    """Refuse an input size the patch embedding cannot tile (it would fail at the first batch)."""
    model = backbone.model
    for owner in (getattr(model, "patch_embed", None), getattr(model, "trunk", None), model):
        owner = getattr(owner, "patch_embed", owner)
        size = getattr(owner, "patch_size", None)
        if size is not None:
            break
    else:
        return
    ph, pw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if image_size % ph or image_size % pw:
        lower = max(ph, image_size // ph * ph)
        raise SoftSAEError(
            f"--image-size {image_size} is not a multiple of {backbone.name}'s patch size "
            f"{ph}x{pw}; use e.g. {lower} or {lower + ph}"
        )


# The bundled adapters, imported lazily: timm and open_clip are slow to import.
@register_backbone_library("timm", tag_separator=".")
def _load_timm(
    model: str,
    tag: str | None,
    /,
    *,
    pretrained: bool,
    checkpoint: str | os.PathLike[str] | None,
    device: torch.device,
    image_size: int | None,
) -> Backbone:
    from softsae_vision.backbones.timm_backbone import load_timm

    return load_timm(model, tag, pretrained, checkpoint, device, image_size)


@register_backbone_library("open_clip", tag_separator=":")
def _load_open_clip(
    model: str,
    tag: str | None,
    /,
    *,
    pretrained: bool,
    checkpoint: str | os.PathLike[str] | None,
    device: torch.device,
    image_size: int | None,
) -> Backbone:
    from softsae_vision.backbones.open_clip_backbone import load_open_clip

    return load_open_clip(model, tag, pretrained, checkpoint, device, image_size)
