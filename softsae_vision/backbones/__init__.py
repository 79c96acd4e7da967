"""Vision backbones behind one interface: token layout, preprocessing and layer activations."""

from softsae_vision.backbones.base import EMBED, Backbone, Layer, TokenLayout
from softsae_vision.backbones.registry import (
    BackboneName,
    load_backbone,
    parse_backbone_name,
    register_backbone_library,
    resolve_device,
)
from softsae_vision.backbones.transform import Preprocess

__all__ = [
    "EMBED",
    "Backbone",
    "BackboneName",
    "Layer",
    "Preprocess",
    "TokenLayout",
    "load_backbone",
    "parse_backbone_name",
    "register_backbone_library",
    "resolve_device",
]
