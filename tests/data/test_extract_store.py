"""Extraction writes what the model computes: values, token layout, skipped files, views."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from softsae_vision.backbones import load_backbone
from softsae_vision.data.extract import extract
from softsae_vision.data.images import load_image
from softsae_vision.data.store import open_store
from softsae_vision.errors import SoftSAEError
from tests._fixtures_extract import write_broken_files, write_images


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 9, sizes=(150, 190))
    write_broken_files(folder / "broken")
    return folder


@pytest.fixture(scope="module")
def vit():
    return load_backbone("timm/test_vit", pretrained=False)


@pytest.fixture(scope="module")
def store(images, vit, tmp_path_factory):
    out = tmp_path_factory.mktemp("stores") / "vit"
    result = extract(vit, images, out, layers=[1, -1, "embed"], batch_size=4, progress=False)
    assert result.n_processed == 12 and result.store is not None
    return result.store


def _timm_reference(model, paths, indices):
    """Independent reference: timm's own transform and forward_intermediates, plus pre-logits."""
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config(model=model), is_training=False)
    x = torch.stack([transform(load_image(p)) for p in paths])
    with torch.inference_mode():
        outs = model.forward_intermediates(
            x, indices=indices, return_prefix_tokens=True, output_fmt="NLC", intermediates_only=True
        )
        embed = model.forward_head(model.forward_features(x), pre_logits=True)
    if model.num_prefix_tokens:
        outs = [torch.cat([prefix, patches], 1) for patches, prefix in outs]
    return outs, embed


def _assert_close_fp16(stored: np.ndarray, reference: torch.Tensor) -> None:
    scale = float(reference.abs().max())
    torch.testing.assert_close(
        torch.from_numpy(np.asarray(stored, dtype=np.float32)),
        reference,
        rtol=2e-3,
        atol=2e-3 * scale,
    )


def test_stored_activations_equal_a_direct_forward(store, vit):
    blocks, embed = _timm_reference(vit.model, store.ok_images, [1, 5])
    assert store.layers == [1, 5, "embed"]
    _assert_close_fp16(store.activations(1), blocks[0])
    _assert_close_fp16(store.activations(-1), blocks[1])
    _assert_close_fp16(store.activations("embed")[:, 0], embed)
    assert store.activations(1).dtype == np.float16


def test_token_layout_and_meta(store, vit):
    assert store.grid == (10, 10)
    assert store.token_types == ["cls"] + ["patch"] * 100
    meta = store.meta
    assert meta["backbone"]["name"] == "timm/test_vit" and meta["backbone"]["weights"] == "random"
    assert meta["transform"] == vit.preprocess.to_dict()
    assert meta["token_layout"]["tokens"] == ["cls", "patch"]
    assert [(e["layer"], e["n_tokens"], e["d"]) for e in meta["layers"]] == [
        (1, 101, 64),
        (5, 101, 64),
        ("embed", 1, 64),
    ]


def test_skipped_files_are_recorded_with_reasons(store, images):
    records = {r.path.split("/")[-1]: r for r in store.images}
    assert len(records) == 12 and "readme.txt" not in records  # not an image extension
    assert records["truncated.jpg"].status.startswith("truncated")
    assert records["notes.jpg"].status.startswith("not an image")
    assert records["empty.png"].status.startswith("not an image")
    assert store.n_images == 9 and store.meta["images"]["n_skipped"] == 3
    ok = [r for r in store.images if r.ok]
    assert all(r.width == 190 - 2 * (int(r.path[-7:-4]) % 4) for r in ok)  # original sizes
    lines = (store.path / "images.jsonl").read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == [r.path for r in store.images]


def test_view_reproduces_the_model_input(store, vit):
    view = store.view(2)
    assert view.size == (160, 160)
    expected = vit.preprocess.view(load_image(store.ok_images[2]))
    np.testing.assert_array_equal(store.view_array(2), np.asarray(expected))


def test_token_selection_and_float32(images, vit, tmp_path):
    store = extract(
        vit, images, tmp_path / "s", layers=[2], tokens=["patch"], dtype="float32", progress=False
    ).store
    assert store.activations(2).shape == (9, 100, 64) and store.activations(2).dtype == np.float32
    assert set(store.token_types) == {"patch"}
    blocks, _ = _timm_reference(vit.model, store.ok_images, [2])
    torch.testing.assert_close(torch.from_numpy(np.array(store.activations(2))), blocks[0][:, 1:])


def test_register_model_layout(images, tmp_path):
    backbone = load_backbone("timm/test_vit2", pretrained=False)
    store = extract(backbone, images, tmp_path / "s", layers=[0], workers=1, progress=False).store
    assert store.token_types[:2] == ["register", "patch"] and len(store.token_types) == 101
    blocks, _ = _timm_reference(backbone.model, store.ok_images, [0])
    _assert_close_fp16(store.activations(0), blocks[0])


def test_argument_errors(images, vit, tmp_path):
    with pytest.raises(SoftSAEError, match="no register tokens"):
        extract(vit, images, tmp_path / "a", tokens=["register"], progress=False)
    with pytest.raises(SoftSAEError, match="unknown token type"):
        extract(vit, images, tmp_path / "a", tokens=["pixel"], progress=False)
    with pytest.raises(SoftSAEError, match="out of range"):
        extract(vit, images, tmp_path / "a", layers=[9], progress=False)
    with pytest.raises(SoftSAEError, match="--dtype"):
        extract(vit, images, tmp_path / "a", dtype="bfloat16", progress=False)
    with pytest.raises(SoftSAEError, match="--batch-size"):
        extract(vit, images, tmp_path / "a", batch_size=0, progress=False)
    assert not (tmp_path / "a").exists()


def test_float16_overflow_is_refused(images, vit, tmp_path, monkeypatch):
    real = vit.forward_layers
    monkeypatch.setattr(
        vit, "forward_layers", lambda x, layers: {k: v * 1e6 for k, v in real(x, layers).items()}
    )
    with pytest.raises(SoftSAEError, match="--dtype float32"):
        extract(vit, images, tmp_path / "o", layers=[0], progress=False)


def test_store_reopens_from_disk(store):
    again = open_store(store.path)
    assert again.images == store.images
    np.testing.assert_array_equal(again.activations(5), store.activations(5))
    assert "timm/test_vit" in repr(again)


@pytest.mark.slow
def test_open_clip_extraction(images, tmp_path):
    backbone = load_backbone("open_clip/ViT-B-32", pretrained=False, image_size=64)
    store = extract(backbone, images, tmp_path / "clip", layers=[-1, "embed"], progress=False).store
    assert store.token_types == ["cls"] + ["patch"] * 4 and store.grid == (2, 2)
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**backbone.model.preprocess_cfg), is_train=False)
    x = torch.stack([transform(load_image(p)) for p in store.ok_images])
    with torch.inference_mode():
        ref = backbone.model.forward_intermediates(
            x, indices=[11], output_fmt="NLC", output_extra_tokens=True
        )
    tokens = torch.cat([ref["image_intermediates_prefix"][0], ref["image_intermediates"][0]], 1)
    _assert_close_fp16(store.activations(11), tokens)
    _assert_close_fp16(store.activations("embed")[:, 0], ref["image_features"])
