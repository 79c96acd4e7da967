"""Extraction settings for speed and scale: precision, JPEG draft decoding, shards, free space."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple

import numpy as np
import pytest

from softsae_vision.backbones import load_backbone
from softsae_vision.data import images as images_module
from softsae_vision.data.extract import estimate_bytes, extract
from softsae_vision.data.images import decode_image, default_workers
from tests._fixtures_extract import smooth_image, write_images

ARGS = dict(layers=[0, -1], batch_size=3, progress=False, workers=0)


@pytest.fixture(scope="module")
def vit():
    return load_backbone("timm/test_vit", pretrained=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 5, sizes=(40, 50))
    return folder


def test_precision_is_recorded_and_bf16_stays_close(vit, images, tmp_path):
    fp32 = extract(vit, images, tmp_path / "fp32", **ARGS).store
    bf16 = extract(vit, images, tmp_path / "bf16", precision="bf16", **ARGS).store
    assert fp32.meta["extraction"]["precision"] == "fp32"  # the CPU default
    assert bf16.meta["extraction"]["precision"] == "bf16"
    a = np.asarray(fp32.activations(5), dtype=np.float32)
    b = np.asarray(bf16.activations(5), dtype=np.float32)
    assert not np.array_equal(a, b)  # bf16 really ran
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()


def test_a_store_is_not_resumed_at_another_precision(vit, images, tmp_path):
    extract(vit, images, tmp_path / "s", max_chunks=1, chunk_images=3, **ARGS)
    with pytest.raises(Exception, match="precision: fp32 \\(store\\) vs bf16 \\(now\\)"):
        extract(vit, images, tmp_path / "s", precision="bf16", **ARGS)


def test_small_shards_give_the_same_rows(vit, images, tmp_path):
    one = extract(vit, images, tmp_path / "one", **ARGS).store
    many = extract(vit, images, tmp_path / "many", shard_bytes=30_000, **ARGS).store
    assert many.activations(0).n_shards == 3  # 12.9 kB per row: 2 rows per shard
    for layer in one.layers:
        np.testing.assert_array_equal(np.asarray(one.activations(layer)), many.activations(layer))


def test_refuses_when_the_disk_is_too_small(vit, images, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 5000, 5000))
    with pytest.raises(Exception, match="needs about 0.1 MiB more \\(5 images, 2 layer"):
        extract(vit, images, tmp_path / "s", **ARGS)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == []  # nothing written


def test_store_size_estimate():
    meta = {"dtype": "float16", "layers": [{"n_tokens": 197, "d": 768}, {"n_tokens": 1, "d": 512}]}
    assert estimate_bytes(meta, 10) == 10 * ((197 * 768 + 512) * 2 + 256)


def test_jpeg_draft_decoding_of_large_images(tmp_path):
    path = tmp_path / "big.jpg"
    smooth_image(3, 1200, 1000).save(path, quality=95)  # (w, h) = (1000, 1200)
    full, size = decode_image(path)
    draft, draft_size = decode_image(path, draft_size=(224, 224))
    assert size == draft_size == (1000, 1200)  # the file's own size is recorded
    assert full.size == (1000, 1200) and draft.size == (500, 600)  # halved, still >= 2x target
    same, _ = decode_image(path, draft_size=(400, 400))  # not much larger: decoded in full
    assert same.size == (1000, 1200)
    small = np.asarray(full.resize((250, 300)), dtype=np.float32)
    fast = np.asarray(draft.resize((250, 300)), dtype=np.float32)
    assert np.abs(small - fast).mean() < 2.0  # a few grey levels at most


def test_decoding_workers_default_to_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
    assert default_workers() == 11
    assert images_module.DRAFT_FACTOR >= 2
