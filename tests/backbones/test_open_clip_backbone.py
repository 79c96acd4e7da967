"""open_clip image towers: the native CLIP ViT and a timm-trunk tower."""

from __future__ import annotations

import pytest
import torch

from softsae_vision.backbones import EMBED, load_backbone
from softsae_vision.backbones.open_clip_backbone import OpenClipBackbone
from softsae_vision.errors import SoftSAEError


@pytest.fixture(scope="module")
def clip_b32():
    # ViT-B-32 at 64 px (a 2x2 patch grid) keeps the 88M-parameter model quick on CPU.
    return load_backbone("open_clip/ViT-B-32", pretrained=False, image_size=64)


def test_layout_and_preprocessing(clip_b32):
    assert clip_b32.name == "open_clip/ViT-B-32" and clip_b32.weights == "random"
    assert (clip_b32.layout.n_cls, clip_b32.layout.n_reg, clip_b32.grid) == (1, 0, (2, 2))
    assert (clip_b32.n_blocks, clip_b32.d_model, clip_b32.d_embed) == (12, 768, 512)
    pre = clip_b32.preprocess
    assert pre.crop_size == (64, 64) and pre.interpolation == "bicubic"
    assert pre.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_block_outputs_and_embedding_match_open_clip(clip_b32):
    visual = clip_b32.model
    x = torch.randn(2, 3, 64, 64)
    ours = clip_b32.forward_layers(x, [3, -1, EMBED])
    ref = visual.forward_intermediates(
        x, indices=[3, 11], output_fmt="NLC", output_extra_tokens=True
    )
    for layer, patches, prefix in zip(
        [3, 11], ref["image_intermediates"], ref["image_intermediates_prefix"], strict=True
    ):
        assert ours[layer].shape == (2, 5, 768)
        torch.testing.assert_close(ours[layer], torch.cat([prefix, patches], dim=1))
    torch.testing.assert_close(ours[EMBED][:, 0], ref["image_features"])
    torch.testing.assert_close(ours[EMBED][:, 0], visual(x))


def test_pretrained_needs_a_tag():
    with pytest.raises(SoftSAEError, match="laion2b_s34b_b79k"):
        load_backbone("open_clip/ViT-B-32")
    with pytest.raises(SoftSAEError, match="laion2b_s34b_b79k"):
        load_backbone("open_clip/ViT-B-32:no_such_tag")


def test_timm_trunk_tower():
    from open_clip.timm_model import TimmModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        tower = TimmModel("test_vit2", embed_dim=32, image_size=160, pool="avg", proj="linear")
    tower.preprocess_cfg = {"size": 160, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    backbone = OpenClipBackbone(tower, "open_clip/test-tower", "random", torch.device("cpu"))
    assert (backbone.layout.n_cls, backbone.layout.n_reg, backbone.grid) == (0, 1, (10, 10))
    assert (backbone.d_model, backbone.d_embed) == (64, 32)
    x = torch.randn(2, 3, 160, 160)
    out = backbone.forward_layers(x, [-1, EMBED])
    torch.testing.assert_close(out[EMBED][:, 0], tower(x))
    ((patches, prefix),) = tower.trunk.forward_intermediates(
        x, indices=[7], return_prefix_tokens=True, output_fmt="NLC", intermediates_only=True
    )
    assert out[7].shape == (2, 101, 64)
    torch.testing.assert_close(out[7], torch.cat([prefix, patches], dim=1))
