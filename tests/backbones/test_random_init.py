"""Random-weight backbones are non-trivial: each block changes its input materially."""

from __future__ import annotations

import pytest
import torch

from softsae_vision.backbones import load_backbone
from softsae_vision.backbones.weights import RANDOM_LAYER_SCALE, unit_layer_scale


def _block_outputs(backbone) -> list[torch.Tensor]:
    torch.manual_seed(1)
    x_BCHW = torch.rand(2, 3, *backbone.preprocess.crop_size)
    outs = backbone.forward_layers(x_BCHW, list(range(backbone.n_blocks)))
    n_prefix = backbone.layout.n_prefix
    return [outs[i][:, n_prefix:].flatten().float() for i in range(backbone.n_blocks)]


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


@pytest.mark.slow
def test_random_dinov2_blocks_differ_materially():
    """DINOv2's LayerScale starts at 1e-5; random weights must not make blocks the identity."""
    backbone = load_backbone("timm/vit_small_patch14_reg4_dinov2", pretrained=False, image_size=56)
    gammas = [m.gamma for m in backbone.model.modules() if type(m).__name__ == "LayerScale"]
    assert gammas and all(torch.all(g == RANDOM_LAYER_SCALE) for g in gammas)
    outs = _block_outputs(backbone)
    consecutive = [_corr(outs[i], outs[i + 1]) for i in range(len(outs) - 1)]
    assert max(consecutive) < 0.99, consecutive
    assert _corr(outs[0], outs[-1]) < 0.8
    # adjacent layers of a store must not be numerically interchangeable
    rel_change = [float((outs[i + 1] - outs[i]).norm() / outs[i].norm()) for i in range(10)]
    assert min(rel_change) > 0.1, rel_change


def test_unit_layer_scale_covers_timm_and_open_clip_modules():
    from open_clip.transformer import LayerScale as ClipLayerScale
    from timm.layers import LayerScale as TimmLayerScale

    model = torch.nn.Sequential(TimmLayerScale(8, init_values=1e-5), ClipLayerScale(8, 1e-4))
    assert unit_layer_scale(model) == 2
    x = torch.randn(3, 8)
    assert torch.equal(model(x), x)


def test_random_init_is_reproducible():
    a = load_backbone("timm/test_vit", pretrained=False)
    b = load_backbone("timm/test_vit", pretrained=False)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
