"""The figure-writing pipelines on a tiny real store: every figure written, sized, not blank."""

import csv
import json

import numpy as np
import pytest

from softsae_vision.analysis.pairing import pair
from softsae_vision.errors import SoftSAEError
from softsae_vision.viz.complexity import write_complexity
from softsae_vision.viz.features import select_features, write_features
from softsae_vision.viz.kmaps import write_kmaps
from tests._fixtures_render import assert_figure


def test_features_with_heat_maps(fx, tmp_path):
    p = pair(fx.soft_run, fx.store)
    result = write_features(p, tmp_path, n_features=2, n_top=4)
    assert result.with_maps and len(result.figures) == 2
    for png in [*result.figures.values(), result.index]:
        assert_figure(png, min_width=300, min_height=300)
    summary = json.loads((tmp_path / "features.json").read_text())
    assert [f["feature"] for f in summary["features"]] == result.features
    first = summary["features"][0]
    assert 0 < first["frequency"] <= 1 and first["top"][0]["image"].endswith(".png")
    scores = [t["score"] for t in first["top"]]
    assert scores == sorted(scores, reverse=True)
    # "top" picks the strongest peak activations among live features.
    assert result.features == select_features(result.top, "top", 2)
    assert result.top.scores[result.features[0], 0] == result.top.scores[:, 0].max()


def test_features_by_id_and_image_level(fx, tmp_path):
    p = pair(fx.soft_cls_run, fx.store)  # trained on CLS tokens: whole images, no maps
    result = write_features(p, tmp_path, n_top=3, select="rare", n_features=2)
    assert not result.with_maps and result.top.token_kind == "cls"
    assert result.top.n_tokens == 8  # one CLS token per image
    for png in result.figures.values():
        assert_figure(png, min_width=150, min_height=150)
    with pytest.raises(SoftSAEError, match="out of range"):
        write_features(p, tmp_path, features=[999])
    with pytest.raises(SoftSAEError, match="--select"):
        select_features(result.top, "best")


def test_kmaps_softsae(fx, tmp_path):
    p = pair(fx.soft_all_run, fx.store)
    result = write_kmaps(p, tmp_path, n_grid=4, n_single=1)
    assert result.kmaps.cls is not None and "CLS" in result.cls_note
    assert set(result.figures) >= {"lowest", "highest", "distribution"}
    assert sum(name.startswith("kmap_") for name in result.figures) == 1
    for png in result.figures.values():
        assert_figure(png)
    rows = list(csv.DictReader((tmp_path / "kmaps.csv").open()))
    assert len(rows) == 8 and "k_hat_cls" in rows[0]
    np.testing.assert_allclose(
        [float(r["k_hat_mean"]) for r in rows], result.kmaps.per_image, rtol=1e-5
    )
    saved = np.load(tmp_path / "kmaps.npz")
    np.testing.assert_array_equal(saved["per_patch"], result.kmaps.per_patch)


def test_kmaps_topk_is_flat_l0(fx, tmp_path):
    p = pair(fx.topk_run, fx.store)
    result = write_kmaps(p, tmp_path, n_grid=2, n_single=0)
    assert result.kmaps.quantity == "l0" and np.all(result.kmaps.per_patch == 4)
    assert "not trained on CLS" in result.cls_note
    assert_figure(result.figures["lowest"])
    summary = json.loads((tmp_path / "kmaps.json").read_text())
    assert summary["per_patch"]["std"] == 0.0


def test_kmaps_refuse_cls_trained_runs_and_patchless_stores(fx, tmp_path):
    with pytest.raises(SoftSAEError, match="trained on patch tokens"):
        write_kmaps(pair(fx.soft_cls_run, fx.store), tmp_path)
    with pytest.raises(SoftSAEError, match="needs patch tokens"):
        write_kmaps(pair(fx.soft_run, fx.cls_store), tmp_path)


def test_complexity_softsae(fx, tmp_path):
    p = pair(fx.soft_all_run, fx.store)
    result = write_complexity(p, tmp_path, n_boot=100)
    assert set(result.k) == {"mean_over_patches", "cls"}
    for png in result.figures.values():
        assert_figure(png, min_width=400)
    assert set(result.figures) == {"scatter_mean_over_patches", "scatter_cls", "patches"}
    summary = json.loads((tmp_path / "complexity.json").read_text())
    rho = summary["per_image"]["mean_over_patches"]["jpeg_bpp"]["spearman"]
    assert rho["ci_low"] <= rho["r"] <= rho["ci_high"]
    assert summary["per_patch"]["gradient"]["n"] == 8 * 16
    rows = list(csv.DictReader((tmp_path / "complexity.csv").open()))
    assert len(rows) == 8 and {"jpeg_bpp", "k_hat_mean_over_patches", "k_hat_cls"} <= set(rows[0])
    # The generated images grow noisier with their index, and so does JPEG size.
    jpeg = [float(r["jpeg_bpp"]) for r in sorted(rows, key=lambda r: int(r["row"]))]
    assert jpeg == sorted(jpeg)
    assert "ρ" in result.headline()


def test_complexity_topk_reports_undefined_correlation(fx, tmp_path):
    result = write_complexity(pair(fx.topk_run, fx.store), tmp_path, n_boot=50, figures=False)
    assert result.quantity == "l0" and "undefined" in result.note
    stats = result.image_stats["mean_over_patches"]["jpeg_bpp"]
    assert np.isnan(stats["spearman"]["r"])
    assert not result.figures and (tmp_path / "complexity.csv").is_file()
    text = (tmp_path / "complexity.json").read_text()
    assert "NaN" not in text  # strict JSON: undefined correlations are null
    assert json.loads(text)["per_image"]["mean_over_patches"]["jpeg_bpp"]["spearman"]["r"] is None


def test_complexity_cls_trained_run_uses_the_cls_token(fx, tmp_path):
    result = write_complexity(pair(fx.soft_cls_run, fx.store), tmp_path, n_boot=50, figures=False)
    assert set(result.k) == {"cls"} and not result.patch_stats and result.k_patch is None
    assert json.loads((tmp_path / "complexity.json").read_text())["per_patch"] == {}
