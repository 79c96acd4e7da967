import numpy as np
import pytest

from softsae_vision.analysis.stats import correlate
from softsae_vision.errors import SoftSAEError
from softsae_vision.viz.complexity_figures import render_complexity_scatter, render_patch_density
from softsae_vision.viz.curves import read_metrics, render_training_curves, training_events
from softsae_vision.viz.feature_figures import (
    FeatureExample,
    FeatureSummary,
    render_feature,
    render_feature_index,
)
from softsae_vision.viz.kmap_figures import (
    KMapPanel,
    render_k_distribution,
    render_kmap,
    render_kmap_grid,
)
from softsae_vision.viz.overlay import PAD_GREY, Limits, blend_heatmap, strongest_patch, zoom_crop
from softsae_vision.viz.style import figure_formats, save_figure
from tests._fixtures_render import assert_figure

RNG = np.random.default_rng(0)


def image(seed: int, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def axis_labels(fig) -> set[str]:
    return {a.get_ylabel() for a in fig.axes if a.get_visible() and a.get_ylabel()}


def colorbar_labels(fig) -> set[str]:
    """Labels of colour-bar axes (the narrow ones with ticks on the right)."""
    return {a.get_ylabel() for a in fig.axes if hasattr(a, "_colorbar") and a.get_ylabel()}


def examples(n: int, with_maps: bool = True) -> list[FeatureExample]:
    out = []
    for i in range(n):
        amap = np.zeros((3, 3))
        amap[i % 3, (i + 1) % 3] = 3.0 - 0.2 * i
        out.append(FeatureExample(image(i), 3.0 - 0.2 * i, amap if with_maps else None, f"im{i}"))
    return out


def test_save_figure_writes_png_and_pdf(tmp_path):
    fig = render_kmap(KMapPanel(image(0), RNG.uniform(10, 40, (3, 3)), "k̂ 25"))
    paths = save_figure(fig, tmp_path / "sub" / "kmap.png")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert_figure(paths[0])
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_save_figure_writes_only_the_formats_asked_for(tmp_path):
    fig = render_k_distribution(RNG.uniform(10, 40, 50), RNG.uniform(10, 40, 5))
    assert save_figure(fig, tmp_path / "d", figure_formats(pdf=False)) == [tmp_path / "d.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png"]
    assert figure_formats(pdf=True) == ("png", "pdf")
    with pytest.raises(SoftSAEError, match="unknown figure format"):
        save_figure(fig, tmp_path / "e", ("png", "jpg"))
    with pytest.raises(SoftSAEError, match="at least one format"):
        save_figure(fig, tmp_path / "e", ())
    assert not (tmp_path / "e.png").exists()  # nothing written before the formats are checked


@pytest.mark.parametrize("n", [1, 9])
def test_render_feature_with_maps(tmp_path, n):
    summary = FeatureSummary(7, 0.0123, 1.7)
    fig = render_feature(summary, examples(n))
    assert "feature 7" in fig._suptitle.get_text() and "1.23%" in fig._suptitle.get_text()
    assert colorbar_labels(fig) == {"activation"}  # the colour bar, in activation units
    assert axis_labels(fig) - {"activation"} == {"activation map", "zoom: 3 × 3 patches"}
    titles = [a.get_title() for a in fig.axes if a.get_visible() and a.get_title()]
    assert len(titles) == n and titles[0] == "#1 · activation 3.00"  # one row of titles
    assert {a.get_xlabel() for a in fig.axes if a.get_xlabel()} >= {"im0"}
    assert_figure(save_figure(fig, tmp_path / "f")[0], min_width=250)


def test_render_feature_without_maps(tmp_path):
    fig = render_feature(FeatureSummary(3, 0.5, 0.2, unit="images"), examples(4, with_maps=False))
    assert axis_labels(fig) == set()  # no maps, no colour bar
    assert_figure(save_figure(fig, tmp_path / "f")[0])
    with pytest.raises(SoftSAEError):
        render_feature(FeatureSummary(3, 0.5, 0.2), [])


def test_render_feature_index(tmp_path):
    entries = [(FeatureSummary(i, 0.01 * i, 1.0), examples(4)) for i in range(8)]
    entries.append((FeatureSummary(99, 0.0, 0.0), []))  # a dead feature is skipped
    fig = render_feature_index(entries)
    titles = [a.get_title() for a in fig.axes if a.get_visible() and a.get_title()]
    assert not any("feature 99" in t for t in titles) and any(
        "feature 7 · 7.00%" in t for t in titles
    )
    assert len(titles) == 8  # every drawn cell is a feature: 8 fill 2 rows of 4
    assert axis_labels(fig) == {"activation / feature's maximum"}
    assert_figure(save_figure(fig, tmp_path / "index")[0], min_width=400)


def test_kmap_grid_and_flat_map(tmp_path):
    panels = [KMapPanel(image(i), np.full((3, 3), 32.0), f"im{i}", "L0 32.0") for i in range(5)]
    fig = render_kmap_grid(panels, title="TopK: realised L0 is flat", label="realised L0")
    assert_figure(save_figure(fig, tmp_path / "grid")[0], min_width=300)
    assert axis_labels(fig) == {"realised L0"}
    titles = [a.get_title() for a in fig.axes if a.get_visible() and a.get_title()]
    assert titles[:2] == ["im0", "L0 32.0"] and len(titles) == 10  # photo beside its map


def test_k_distribution(tmp_path):
    fig = render_k_distribution(
        RNG.uniform(5, 60, 300), RNG.uniform(20, 40, 30), cls=RNG.uniform(20, 40, 30), target=32
    )
    assert_figure(save_figure(fig, tmp_path / "dist")[0], min_width=400)
    flat = render_k_distribution(np.full(50, 32.0), np.full(5, 32.0))  # must not crash
    assert_figure(save_figure(flat, tmp_path / "flat")[0])


def test_complexity_scatter_and_density(tmp_path):
    n = 20
    k = RNG.uniform(10, 50, n)
    measures = {"jpeg_bpp": k / 10 + RNG.normal(0, 0.5, n), "gradient": RNG.uniform(0, 5, n)}
    stats = {name: correlate(v, k, n_boot=50) for name, v in measures.items()}
    fig = render_complexity_scatter(
        measures, k, stats=stats, thumbnails=[image(i, 32) for i in range(n)], title="run"
    )
    titles = [a.get_title() for a in fig.axes]
    assert any(t.startswith("Spearman ρ =") and "\n95% CI [" in t for t in titles)
    assert_figure(save_figure(fig, tmp_path / "scatter")[0], min_width=400)
    patch_k = RNG.uniform(10, 50, 500)
    fig = render_patch_density({"gradient": patch_k + RNG.normal(0, 5, 500)}, patch_k)
    assert_figure(save_figure(fig, tmp_path / "density")[0])


def test_training_curves(tmp_path):
    lines = [
        f'{{"step": {s}, "loss": {1 / (s + 1)}, "l0_mean": 32, "phase": "soft"}}'
        for s in range(0, 100, 10)
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n{broken\n")
    records = read_metrics(tmp_path)
    assert len(records) == 10
    fig = render_training_curves(records)
    visible = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in visible] == ["training loss (normalised squared error)"]
    assert visible[0].get_yscale() == "log"
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "constant: realised L0 = 32" in legend  # a flat series is named, not drawn
    assert_figure(save_figure(fig, tmp_path / "curves")[0])
    with pytest.raises(SoftSAEError):
        render_training_curves([{"step": 1, "phase": "soft"}])
    with pytest.raises(SoftSAEError):
        read_metrics(tmp_path / "missing")


def test_training_curves_mark_phases_on_one_step_axis():
    records = [
        {
            "step": s,
            "loss": 1 / (s + 1),
            "l0_mean": 40 - s / 10,
            "k_target": max(64 - s, 32),
            "dead_frac": s / 1000,
            "lr": 1e-3,
            "phase": "hard" if s >= 170 else "soft",
        }
        for s in range(0, 200, 10)
    ]
    events = training_events(records)
    assert events == {"soft → hard top-k": 170.0, "k annealing ends": 40.0}
    fig = render_training_curves(records)
    visible = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in visible] == [
        "training loss (normalised squared error)",
        "active latents per input",
        "dead latents (% of dictionary)",
    ]
    assert {a.get_xlim() for a in visible} == {(0.0, 190.0)}  # one shared step axis
    for ax in visible:
        marks = sorted(line.get_xdata()[0] for line in ax.lines if line.get_label().startswith("_"))
        assert marks == [40.0, 170.0]
    assert max(visible[2].lines[0].get_ydata()) == pytest.approx(19.0)  # % of the dictionary


def test_overlay_helpers():
    amap = np.zeros((4, 4))
    amap[1, 2] = 5.0
    assert strongest_patch(amap) == (1, 2)
    crop, box = zoom_crop(image(0, 64), (4, 4), (1, 2), context=1)
    assert crop.shape == (48, 48, 3) and box == (16, 32, 16, 32)
    img = image(0, 64)
    crop, box = zoom_crop(img, (4, 4), (0, 0), context=1)  # padded, not cut, at the corner
    assert crop.shape == (48, 48, 3) and box == (16, 32, 16, 32)
    assert (crop[:16] == PAD_GREY).all() and (crop[:, :16] == PAD_GREY).all()
    np.testing.assert_array_equal(crop[16:, 16:], img[:32, :32])
    crop, box = zoom_crop(image(0, 70), (5, 5), (4, 4), context=2)  # uneven patches, far corner
    assert crop.shape == (70, 70, 3) and box[1] - box[0] == box[3] - box[2] == 14
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    blended = blend_heatmap(img, amap, Limits(0.0, 5.0), "inferno")
    assert blended[20, 40].sum() > 300 and blended[0, 0].sum() == 0
    assert Limits.of(np.full((2, 2), 3.0)) == Limits(3.0, 4.0)


def test_mosaic_layout():
    from softsae_vision.viz.feature_figures import mosaic

    tiles = [np.full((4, 6, 3), v, dtype=np.uint8) for v in (10, 20, 30)]
    out = mosaic(tiles, gap=2)
    assert out.shape == (10, 14, 3)
    assert out[0, 0, 0] == 10 and out[0, 8, 0] == 20 and out[6, 0, 0] == 30
    assert out[4, 0, 0] == 255 and out[9, 13, 0] == 255  # gutter and the empty fourth tile
