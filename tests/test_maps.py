"""Heat maps on your own images agree with the store pipeline; overlays draw; README runs."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from softsae_vision import SoftSAE, SoftSAEError, TopKSAE, feature_maps, k_maps, overlay
from softsae_vision.analysis.kstats import KMaps
from softsae_vision.backbones.registry import load_backbone
from softsae_vision.data.store import open_store
from tests._fixtures_render import IMAGE_SIZE, make_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    store = open_store(make_store(root))
    backbone = load_backbone("timm/test_vit", pretrained=False, image_size=IMAGE_SIZE)
    sample = torch.from_numpy(np.array(store.activations(backbone.n_blocks - 1)[:, 1:]))
    sae = SoftSAE(backbone.d_model, 32, k=4, estimator_hidden=16, seed=0)
    sae.fit_normalization(sample.reshape(-1, backbone.d_model).float())
    with torch.no_grad():
        sae.k_estimator[2].weight.normal_(0, 0.5)  # make k̂ vary across patches
    return store, backbone, sae.eval()


def _paths(store, rows):
    return [store.images[int(r)].path for r in rows]


def test_k_maps_on_images_equal_the_store_pipeline(setup):
    store, backbone, sae = setup
    layer = backbone.n_blocks - 1
    from_store = k_maps(sae, store, layer)  # the store form still returns KMaps
    assert isinstance(from_store, KMaps)
    mine = k_maps(sae, backbone, _paths(store, from_store.rows), layer=-1)
    assert mine.shape == (len(from_store.rows), *backbone.grid)
    assert np.allclose(mine, from_store.per_patch, atol=1e-4)
    assert mine.std() > 0
    l0 = k_maps(sae, backbone, _paths(store, from_store.rows)[:2], layer=-1, quantity="l0")
    assert (l0 <= np.floor(mine[:2])).all() and l0.max() > 0  # realised L0 = min(⌊k̂⌋, #z>0)


def test_feature_maps_shapes_and_selection(setup):
    store, backbone, sae = setup
    paths = _paths(store, range(3))
    full = feature_maps(sae, backbone, paths, layer=-1, batch_size=2)
    assert full.shape == (3, *backbone.grid, sae.n_latents)
    some = feature_maps(sae, backbone, paths, layer=-1, features=[5, 0])
    assert np.array_equal(some, full[..., [5, 0]])
    # the codes of one patch are the SAE's codes of that patch's activation in the store
    acts = np.array(store.activations(backbone.n_blocks - 1)[0, 1:], dtype=np.float32)
    want = sae.encode(torch.from_numpy(acts)).detach().numpy().reshape(*backbone.grid, -1)
    assert np.allclose(full[0], want, atol=1e-4)
    with pytest.raises(SoftSAEError, match="out of range"):
        feature_maps(sae, backbone, paths, layer=-1, features=[999])
    with pytest.raises(SoftSAEError, match="d_model"):
        feature_maps(TopKSAE(10, 20, k=2), backbone, paths, layer=-1)


def test_overlay_figure_and_array(setup):
    store, backbone, _ = setup
    path = store.images[0].path
    heat = np.arange(16, dtype=np.float32).reshape(4, 4)
    fig = overlay(path, heat, backbone=backbone, label="k̂", title="t")
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "t"
    arr = overlay(path, heat, backbone=backbone, as_array=True)
    assert arr.dtype == np.uint8 and arr.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert not np.array_equal(arr[:16, :16], arr[-16:, -16:])  # the heat differs by patch
    with pytest.raises(SoftSAEError, match="2-D"):
        overlay(path, heat[None])


def test_readme_your_own_images_example_runs(setup, tmp_path, monkeypatch):
    """The README's "Your own images" example, executed as written."""
    _, backbone, sae = setup
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Your own images", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    os.symlink(ROOT / "assets", tmp_path / "assets")
    sae.save(tmp_path / "runs" / "tiny")
    exec(compile(code, "README.md", "exec"), {})
    assert Path("cat_k.png").stat().st_size > 1000 and Path("brick_f0.png").is_file()
