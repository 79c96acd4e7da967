"""Our serialisable Preprocess must reproduce timm's and open_clip's eval transforms exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from softsae_vision.backbones.open_clip_backbone import preprocess_from_cfg
from softsae_vision.backbones.transform import Preprocess
from softsae_vision.errors import SoftSAEError
from tests._fixtures_extract import smooth_image

SIZES = [(300, 200), (200, 300), (160, 160), (97, 411), (50, 40)]  # (h, w): wide, tall, tiny


@pytest.mark.parametrize(
    "config",
    [
        dict(input_size=(3, 224, 224), crop_pct=0.875, crop_mode="center", interpolation="bicubic"),
        dict(input_size=(3, 160, 160), crop_pct=0.95, crop_mode="center", interpolation="bilinear"),
        dict(input_size=(3, 192, 256), crop_pct=0.9, crop_mode="center", interpolation="bicubic"),
        dict(input_size=(3, 224, 224), crop_pct=1.0, crop_mode="squash", interpolation="bicubic"),
        dict(input_size=(3, 224, 224), crop_pct=0.9, crop_mode="border", interpolation="bilinear"),
    ],
)
def test_matches_timm_eval_transform(config):
    from timm.data import create_transform

    mean, std = (0.48, 0.45, 0.4), (0.27, 0.26, 0.28)
    theirs = create_transform(**config, mean=mean, std=std, is_training=False)
    ours = Preprocess.timm_style(
        input_size=config["input_size"][1:],
        crop_pct=config["crop_pct"],
        crop_mode=config["crop_mode"],
        interpolation=config["interpolation"],
        mean=mean,
        std=std,
    )
    for i, (h, w) in enumerate(SIZES):
        image = smooth_image(i, h, w)
        expected = theirs(image)
        assert ours(image).shape == expected.shape == (3, *config["input_size"][1:])
        torch.testing.assert_close(ours(image), expected, rtol=0, atol=0)


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("size", [224, (96, 128)])
def test_matches_open_clip_transform(resize_mode, size):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = dict(PreprocessCfg(size=size, resize_mode=resize_mode, fill_color=7).__dict__)
    theirs = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    ours = preprocess_from_cfg(cfg)
    for i, (h, w) in enumerate(SIZES):
        image = smooth_image(i, h, w)
        torch.testing.assert_close(ours(image), theirs(image), rtol=0, atol=0)


def test_view_is_the_crop_the_model_sees():
    pre = Preprocess(resize_size=(40, 40), crop_size=(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    image = smooth_image(3, 80, 120)
    view = pre.view(image)
    assert view.size == (32, 32) and view.mode == "RGB"
    torch.testing.assert_close(pre(image), pre.normalize(view))
    # Unit mean/std: the model input is the view's pixels / 255.
    pixels = torch.from_numpy(np.asarray(view, dtype=np.float32)).permute(2, 0, 1) / 255
    torch.testing.assert_close(pre(image), pixels)


def test_dict_round_trip():
    pre = Preprocess.timm_style((224, 224), 0.9, "border", "bilinear", (0.5,) * 3, (0.2,) * 3)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    assert pre.fill == (128, 128, 128)


def test_rejects_unknown_modes():
    with pytest.raises(SoftSAEError, match="resize mode"):
        Preprocess(resize_size=(8, 8), crop_size=(8, 8), resize_mode="zoom")
    with pytest.raises(SoftSAEError, match="interpolation"):
        Preprocess(resize_size=(8, 8), crop_size=(8, 8), interpolation="magic")


def test_longest_mode_pads_with_fill():
    pre = Preprocess((32, 32), (32, 32), resize_mode="longest", fill=(255, 0, 0))
    view = pre.view(Image.new("RGB", (64, 16), (0, 0, 255)))  # wide: padded top and bottom
    assert view.getpixel((16, 0)) == (255, 0, 0)
    assert view.getpixel((16, 16)) == (0, 0, 255)
