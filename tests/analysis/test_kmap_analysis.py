import subprocess
import sys

import numpy as np
import pytest

from softsae_vision.analysis import MEAN_OVER_PATCHES, compute_kmaps, per_image_k
from softsae_vision.analysis.kstats import k_maps, target_k, token_k
from softsae_vision.analysis.pairing import pair
from softsae_vision.errors import SoftSAEError


def test_compute_kmaps_of_a_patch_run_match_k_maps(fx):
    p = pair(fx.soft_run, fx.store)
    maps, note = compute_kmaps(p)
    direct = k_maps(p.sae, p.store, p.layer)
    np.testing.assert_array_equal(maps.per_patch, direct.per_patch)
    assert maps.cls is None  # the store has a CLS token, but the SAE never saw one
    assert "not trained on CLS" in note


def test_compute_kmaps_adds_cls_only_when_the_sae_saw_it(fx):
    maps, note = compute_kmaps(pair(fx.soft_all_run, fx.store))
    assert maps.cls is not None and maps.cls.shape == (8,)
    assert note.startswith("CLS")


def test_compute_kmaps_refuses_image_level_runs_and_stores_without_patches(fx):
    with pytest.raises(SoftSAEError, match="trained on patch tokens"):
        compute_kmaps(pair(fx.soft_cls_run, fx.store))
    with pytest.raises(SoftSAEError, match="needs patch tokens"):
        compute_kmaps(pair(fx.soft_run, fx.cls_store))


def test_per_image_k_of_a_patch_run_is_the_mean_over_patches(fx):
    p = pair(fx.soft_all_run, fx.store)
    quantity, rows, k, maps, _ = per_image_k(p)
    assert quantity == "k_hat" and maps is not None
    assert set(k) == {MEAN_OVER_PATCHES, "cls"}
    np.testing.assert_allclose(k[MEAN_OVER_PATCHES], maps.per_patch.mean((1, 2)), rtol=1e-6)
    assert rows.tolist() == list(range(8))


def test_per_image_k_reuses_given_maps(fx):
    p = pair(fx.soft_run, fx.store)
    maps = compute_kmaps(p)
    maps[0].per_patch[:] = 7.0  # a marker: recomputing would not give it
    _, _, k, _, note = per_image_k(p, maps=maps)
    assert np.all(k[MEAN_OVER_PATCHES] == 7.0) and note == maps[1]


def test_per_image_k_of_a_cls_run_reads_one_token_per_image(fx):
    p = pair(fx.soft_cls_run, fx.store)
    quantity, rows, k, maps, note = per_image_k(p)
    assert maps is None and list(k) == ["cls"] and "cls token" in note
    expected_rows, expected = token_k(p.sae, p.store, p.layer, "cls", quantity=quantity)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(k["cls"], expected)


def test_k_maps_carry_the_sae_target_k(fx):
    p = pair(fx.soft_run, fx.store)
    assert compute_kmaps(p)[0].target == float(p.sae.k) == target_k(p.sae)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("softsae_vision.viz.kmaps", "compute_kmaps"),
        ("softsae_vision.viz.complexity", "per_image_k"),
        ("softsae_vision.viz", "compute_kmaps"),
        ("softsae_vision.viz", "per_image_k"),
    ],
)
def test_old_viz_paths_still_work_with_a_deprecation_warning(module, name):
    import importlib

    import softsae_vision.analysis as analysis

    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match="softsae_vision.analysis"):
        moved = getattr(mod, name)
    assert moved is getattr(analysis, name)


def test_importing_viz_itself_warns_about_nothing():
    code = "import softsae_vision.viz as v; assert 'compute_kmaps' not in v.__all__"
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
