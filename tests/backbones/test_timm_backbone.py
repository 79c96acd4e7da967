"""timm ViTs: token layout, block outputs equal to timm's own intermediates, embed, weights."""

from __future__ import annotations

import pytest
import timm
import torch

from softsae_vision.backbones import EMBED, load_backbone
from softsae_vision.backbones.timm_backbone import TimmBackbone
from softsae_vision.errors import SoftSAEError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def test_vit():
    return load_backbone("timm/test_vit", pretrained=False)


def _reference_tokens(model, x, indices):
    """timm's forward_intermediates, prefix and patch tokens re-joined: (B, T, d) per index."""
    outs = model.forward_intermediates(
        x, indices=indices, return_prefix_tokens=True, output_fmt="NLC", intermediates_only=True
    )
    if model.num_prefix_tokens == 0:
        return outs
    return [torch.cat([prefix, patches], dim=1) for patches, prefix in outs]


def test_layout_and_sizes(test_vit):
    assert test_vit.name == "timm/test_vit" and test_vit.weights == "random"
    assert test_vit.n_blocks == 6 and test_vit.d_model == 64 and test_vit.d_embed == 64
    assert (test_vit.layout.n_cls, test_vit.layout.n_reg, test_vit.grid) == (1, 0, (10, 10))
    assert test_vit.preprocess.crop_size == (160, 160)
    assert test_vit.layout.token_types()[:2] == ["cls", "patch"]
    assert len(test_vit.layout.token_types()) == test_vit.layout.n_tokens == 101


def test_block_outputs_match_timm_intermediates(test_vit):
    x = torch.randn(3, 3, 160, 160)
    ours = test_vit.forward_layers(x, [0, "2", -1])
    assert list(ours) == [0, 2, 5]
    reference = _reference_tokens(test_vit.model, x, [0, 2, 5])
    for layer, ref in zip([0, 2, 5], reference, strict=True):
        assert ours[layer].shape == (3, 101, 64)
        torch.testing.assert_close(ours[layer], ref)


def test_embed_is_the_pooled_pre_logits_feature(test_vit):
    x = torch.randn(2, 3, 160, 160)
    headless = timm.create_model("test_vit", pretrained=False, num_classes=0)
    headless.load_state_dict(
        {k: v for k, v in test_vit.model.state_dict().items() if not k.startswith("head.")}
    )
    out = test_vit.forward_layers(x, [EMBED, -1])
    assert out[EMBED].shape == (2, 1, 64)
    torch.testing.assert_close(out[EMBED][:, 0], headless.eval()(x))


def test_forward_stops_after_the_last_needed_block(test_vit):
    calls = []
    handle = test_vit.blocks[-1].register_forward_hook(lambda *_: calls.append(1))
    try:
        test_vit.forward_layers(torch.randn(1, 3, 160, 160), [1])
        assert calls == []
        test_vit.forward_layers(torch.randn(1, 3, 160, 160), [1, EMBED])
        assert calls == [1]
    finally:
        handle.remove()
    assert not any(block._forward_hooks for block in test_vit.blocks)


def test_register_only_model():
    backbone = load_backbone("timm/test_vit2", pretrained=False)
    assert (backbone.layout.n_cls, backbone.layout.n_reg) == (0, 1)
    assert backbone.layout.token_types()[:2] == ["register", "patch"]


def test_cls_and_register_tokens_in_timm_order():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = timm.create_model("test_vit", pretrained=False, reg_tokens=3)
    backbone = TimmBackbone(model, "timm/test_vit+reg3", "random", CPU)
    assert (backbone.layout.n_cls, backbone.layout.n_reg) == (1, 3)
    assert backbone.layout.token_types()[:5] == ["cls", "register", "register", "register", "patch"]
    x = torch.randn(2, 3, 160, 160)
    (reference,) = _reference_tokens(backbone.model, x, [3])
    torch.testing.assert_close(backbone.forward_layers(x, [3])[3], reference)
    assert reference.shape == (2, 104, 64)


def test_image_size_override_changes_grid():
    backbone = load_backbone("timm/test_vit", pretrained=False, image_size=96)
    assert backbone.grid == (6, 6) and backbone.preprocess.crop_size == (96, 96)
    assert backbone.forward_layers(torch.randn(1, 3, 96, 96), [0])[0].shape == (1, 37, 64)


def test_random_weights_are_reproducible_and_leave_global_rng_alone(test_vit):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again = load_backbone("timm/test_vit", pretrained=False)
    assert torch.equal(torch.rand(3), expected_next)
    theirs = again.model.state_dict()
    for name, value in test_vit.model.state_dict().items():
        assert torch.equal(value, theirs[name]), name


def test_checkpoint_file_loads_those_weights(tmp_path, test_vit):
    from safetensors.torch import save_file

    with torch.random.fork_rng():
        torch.manual_seed(7)
        source = timm.create_model("test_vit", pretrained=False)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    loaded = load_backbone("timm/test_vit", checkpoint=path)
    assert loaded.weights.startswith("checkpoint:") and len(loaded.weights) == 27
    for name, value in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name
    assert not torch.equal(loaded.model.pos_embed, test_vit.model.pos_embed)


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SoftSAEError, match="checkpoint file not found"):
        load_backbone("timm/test_vit", checkpoint=tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not weights")
    with pytest.raises(SoftSAEError, match="could not load checkpoint .*junk.pth"):
        load_backbone("timm/test_vit", checkpoint=junk)


@pytest.mark.parametrize(
    "layer, message", [(6, "out of range"), (-7, "out of range"), ("x", "unknown layer")]
)
def test_bad_layers(test_vit, layer, message):
    with pytest.raises(SoftSAEError, match=message):
        test_vit.resolve_layer(layer)


def test_layer_names_resolve(test_vit):
    assert [test_vit.resolve_layer(x) for x in (0, -1, "-2", " Embed ")] == [0, 5, 4, EMBED]
    assert test_vit.layer_width(EMBED) == 64


def test_non_vit_models_are_refused():
    with pytest.raises(SoftSAEError, match="not a Vision Transformer"):
        load_backbone("timm/test_resnet", pretrained=False)


def test_dinov2_with_registers_at_a_small_size():
    backbone = load_backbone("timm/vit_small_patch14_reg4_dinov2", pretrained=False, image_size=56)
    assert (backbone.layout.n_cls, backbone.layout.n_reg, backbone.grid) == (1, 4, (4, 4))
    assert backbone.preprocess.crop_size == (56, 56) and backbone.d_model == 384
    out = backbone.forward_layers(torch.randn(1, 3, 56, 56), [-1, EMBED])
    assert out[11].shape == (1, 21, 384) and out[EMBED].shape == (1, 1, 384)
