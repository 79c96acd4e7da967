"""Backbone names, the library registry and device resolution."""

from __future__ import annotations

import pytest
import torch

from softsae_vision.backbones import (
    BackboneName,
    load_backbone,
    parse_backbone_name,
    register_backbone_library,
    resolve_device,
)
from softsae_vision.errors import SoftSAEError


@pytest.mark.parametrize(
    "name, expected",
    [
        ("timm/vit_small_patch16_224", BackboneName("timm", "vit_small_patch16_224")),
        (
            "timm/vit_small_patch14_reg4_dinov2.lvd142m",
            BackboneName("timm", "vit_small_patch14_reg4_dinov2", "lvd142m"),
        ),
        ("open_clip/ViT-B-32", BackboneName("open_clip", "ViT-B-32")),
        (
            "open_clip/ViT-B-32:laion2b_s34b_b79k",
            BackboneName("open_clip", "ViT-B-32", "laion2b_s34b_b79k"),
        ),
        ("open_clip/hf-hub:org/repo", BackboneName("open_clip", "hf-hub:org/repo")),
    ],
)
def test_parse_round_trips(name, expected):
    assert parse_backbone_name(name) == expected
    assert str(expected) == name


@pytest.mark.parametrize(
    "name, message",
    [
        ("vit_small_patch16_224", "no library prefix"),
        ("torchvision/vit_b_16", "unknown backbone library 'torchvision'"),
        ("timm/", "no library prefix"),
        ("timm/.tag", "empty model name"),
    ],
)
def test_bad_names_are_explained(name, message):
    with pytest.raises(SoftSAEError, match=message):
        parse_backbone_name(name)


def test_unknown_models_suggest_close_names():
    with pytest.raises(SoftSAEError, match="test_vit"):
        load_backbone("timm/test_vitt", pretrained=False)
    with pytest.raises(SoftSAEError, match="ViT-B-32"):
        load_backbone("open_clip/ViT-B-33", pretrained=False)


def test_registering_a_library_routes_names_to_its_loader():
    calls = []

    @register_backbone_library("toy_lib_for_test", tag_separator="@")
    def loader(model, tag, **kwargs):
        calls.append((model, tag, kwargs["pretrained"], kwargs["device"]))
        return "backbone"

    assert load_backbone("toy_lib_for_test/net@v2", pretrained=False) == "backbone"
    assert calls == [("net", "v2", False, torch.device("cpu"))]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(SoftSAEError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(SoftSAEError, match="CUDA is not available"):
            resolve_device("cuda")
