"""saev shard directories and MSAE memmaps as training data, read through memory maps."""

import json

import numpy as np
import pytest
import torch

from softsae_vision import SoftSAEError
from softsae_vision.cli import main
from softsae_vision.data.foreign import ShardRows
from softsae_vision.data.sources import open_source

D, LAYERS, PATCHES = 6, [3, 7], 4  # CLS + 4 patches per image


def saev_dir(tmp_path, n_imgs=5, per_shard=2, shards_json=True):
    """A saev protocol-1 shard directory; returns it and the logical (images, L, T, D) tensor."""
    path = tmp_path / "saev" / "abc123"
    path.mkdir(parents=True)
    n_tokens = PATCHES + 1
    full = np.random.default_rng(0).normal(size=(n_imgs, len(LAYERS), n_tokens, D))
    full = full.astype(np.float32)
    meta = {
        "vit_family": "clip",
        "vit_ckpt": "ViT-B-16/openai",
        "layers": LAYERS,
        "n_patches_per_img": PATCHES,
        "cls_token": True,
        "d_vit": D,
        "n_imgs": n_imgs,
        "max_patches_per_shard": per_shard * n_tokens * len(LAYERS),
        "data": {},
        "dtype": "float32",
        "protocol": "1.0.0",
    }
    (path / "metadata.json").write_text(json.dumps(meta))
    listed = []
    for i, start in enumerate(range(0, n_imgs, per_shard)):
        name = f"acts{i:06d}.bin"
        full[start : start + per_shard].tofile(path / name)  # headerless, C order
        listed.append({"name": name, "n_imgs": len(full[start : start + per_shard])})
    if shards_json:
        (path / "shards.json").write_text(json.dumps(listed))
    return path, full


@pytest.mark.parametrize("shards_json", [True, False])
def test_saev_rows_follow_the_protocol(tmp_path, shards_json):
    path, full = saev_dir(tmp_path, shards_json=shards_json)
    src = open_source(path, layer=3, tokens="patch")
    assert isinstance(src.array, ShardRows) and len(src) == 5 * PATCHES and src.d == D
    assert all(isinstance(s, np.memmap) for s in src.array._shards)
    expected = full[:, 0, 1:].reshape(-1, D)  # layer 3, patch tokens, image-major
    rows = torch.cat([b for _, b in src.iter_eval(3)])
    assert torch.equal(rows, torch.from_numpy(expected))
    idx = np.array([0, 7, 8, 19])
    assert np.array_equal(src.array[idx], expected[idx])
    cls = open_source(path, tokens="cls")  # default layer: the last recorded (7)
    assert np.array_equal(cls.array[np.arange(5)], full[:, 1, 0])
    assert cls.describe()["layer"] == 7 and cls.describe()["kind"] == "saev"


def test_saev_errors(tmp_path):
    path, _ = saev_dir(tmp_path)
    with pytest.raises(SoftSAEError, match=r"layers \[3, 7\]"):
        open_source(path, layer=5)
    (path / "acts000002.bin").write_bytes(b"\0" * 8)
    with pytest.raises(SoftSAEError, match="incomplete"):
        open_source(path)


def test_msae_memmap_by_name(tmp_path):
    data = np.random.default_rng(1).normal(size=(30, D)).astype(np.float32)
    path = tmp_path / f"cc3m_ViT-B~16_train_image_{30}_{D}.npy"
    data.tofile(path)  # MSAE writes raw float32 with a .npy suffix
    src = open_source(path)
    assert isinstance(src.array, np.memmap) and src.array.shape == (30, D)
    assert np.array_equal(np.asarray(src.array), data)
    assert src.describe()["kind"] == "msae"
    bad = tmp_path / f"x_{31}_{D}.npy"
    data.tofile(bad)
    with pytest.raises(SoftSAEError, match="truncated or its name is wrong"):
        open_source(bad)
    np.save(tmp_path / f"real_{30}_{D}.npy", data)  # a real .npy with such a name stays .npy
    assert open_source(tmp_path / f"real_{30}_{D}.npy").describe()["kind"] == "npy"


def test_train_on_saev_shards(tmp_path, capsys):
    path, _ = saev_dir(tmp_path, n_imgs=12, per_shard=5)
    run = tmp_path / "run"
    args = [
        "train",
        str(path),
        "--out",
        str(run),
        "--arch",
        "topk",
        "--k",
        "2",
        "--n-latents",
        "16",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--layer",
        "7",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(args) == 0, capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["kind"] == "saev" and config["data"]["layer"] == 7
