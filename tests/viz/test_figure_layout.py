"""Every figure kind, checked as a reviewer would: no text on text, nothing cut off, not blank.

Text boxes are matplotlib's own window extents of the drawn titles, axis labels, annotations
and legend entries, after the layout has run.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from softsae_vision.analysis.stats import correlate
from softsae_vision.viz.complexity_figures import render_complexity_scatter, render_patch_density
from softsae_vision.viz.curves import render_training_curves
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
from softsae_vision.viz.style import PNG_DPI, save_figure

RNG = np.random.default_rng(1)


def photo(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def sparse_map(seed: int, grid: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((grid, grid)) < 0.3, rng.uniform(0.5, 3.0, (grid, grid)), 0.0)


def long_name(i: int) -> str:
    return f"a_rather_long_folder/photo_of_a_very_long_name_{i:03d}.jpeg"


def feature_examples(n: int, maps: bool = True) -> list[FeatureExample]:
    return [
        FeatureExample(photo(i), 3.0 - 0.1 * i, sparse_map(i) if maps else None, long_name(i))
        for i in range(n)
    ]


def curves_records() -> list[dict]:
    return [
        {
            "step": s,
            "loss": 1 / (s + 1) + 0.1,
            "mse": 1 / (s + 2),
            "aux": 0.0 if s < 50 else 0.05,
            "l0_mean": 40 - s / 20,
            "l0_std": 5 + np.sin(s),
            "k_target": max(64 - s, 32.0),
            "k_hat_mean": 33 + np.cos(s),
            "k_hat_min": 3 + s / 100,
            "k_hat_max": 90 - s / 100,
            "dead_frac": s / 2000,
            "lr": 6e-4 * min(1, (s + 1) / 20),
            "alpha": 1e-4,
            "loss_k": 1 / (s + 1),
            "phase": "hard" if s >= 170 else "soft",
        }
        for s in range(0, 200, 5)
    ]


def scatter_inputs():
    n = 40
    k = RNG.uniform(10, 50, n)
    k[:3] = 10.0  # ties at the low end: labels of equal points must still not collide
    measures = {
        "jpeg_bpp": k / 10 + RNG.normal(0, 0.5, n),
        "png_bpp": k / 5 + RNG.normal(0, 1, n),
        "gradient": RNG.uniform(0, 5, n),
        "edge_density": RNG.uniform(0, 1, n),
    }
    measures["edge_density"][:3] = 0.5
    stats = {name: correlate(v, k, n_boot=50) for name, v in measures.items()}
    return measures, k, stats


FIGURES = {
    "feature": lambda: render_feature(FeatureSummary(7, 0.0123, 1.7), feature_examples(8)),
    "feature_two_rows": lambda: render_feature(FeatureSummary(7, 0.5, 1.7), feature_examples(11)),
    "feature_image_level": lambda: render_feature(
        FeatureSummary(3, 0.5, 0.2, unit="images"), feature_examples(5, maps=False)
    ),
    "feature_index": lambda: render_feature_index(
        [(FeatureSummary(i, 10.0 ** -(i % 5), 1.0), feature_examples(4)) for i in range(14)]
    ),
    "kmap": lambda: render_kmap(
        KMapPanel(photo(0), RNG.uniform(5, 60, (4, 4)), "overcast_sky", "k̂ 12.3 · CLS 11.0")
    ),
    "kmap_grid": lambda: render_kmap_grid(
        [
            KMapPanel(photo(i), RNG.uniform(5, 60, (4, 4)), long_name(i)[-20:], f"k̂ {i + 9.5:.1f}")
            for i in range(8)
        ],
        title="lowest per-image k̂ · a_run_with_a_long_name",
    ),
    "distribution": lambda: render_k_distribution(
        RNG.uniform(5, 60, 3000), RNG.uniform(20, 40, 40), cls=RNG.uniform(20, 40, 40), target=32
    ),
    "scatter": lambda: render_complexity_scatter(
        *scatter_inputs()[:2],
        stats=scatter_inputs()[2],
        thumbnails=[photo(i, 32) for i in range(40)],
        k_symbol="k̂",
        title="run: per-image k̂ = mean over patches",
    ),
    "patches": lambda: render_patch_density(
        {"gradient": RNG.gamma(1.0, 5.0, 4000), "edge_density": RNG.uniform(0, 1, 4000)},
        RNG.uniform(5, 60, 4000),
        stats={"gradient": correlate(RNG.random(50), RNG.random(50), n_boot=20)},
        title="run: k̂ per patch against local complexity",
    ),
    "curves": lambda: render_training_curves(curves_records(), title="softsae on dino layer 10"),
}


def text_artists(fig) -> list:
    """The figure's visible, non-empty texts: titles, axis labels, annotations, legends."""
    texts = [fig._suptitle, fig._supxlabel, fig._supylabel]
    for legend in fig.legends:
        texts += legend.get_texts()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        texts += ax.texts
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
    return [t for t in texts if t is not None and t.get_visible() and t.get_text().strip()]


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of texts whose drawn boxes overlap (by more than half a pixel)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [
        (t.get_text(), t.get_window_extent(renderer).expanded(1.0, 1.0)) for t in text_artists(fig)
    ]
    clashes = []
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        if w > 0.5 and h > 0.5:
            clashes.append((ta, tb))
    return clashes


def texts_outside(fig) -> list[str]:
    """Texts drawn (partly) outside the figure: cut off in the saved file."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer, frame = canvas.get_renderer(), fig.bbox
    out = []
    for t in text_artists(fig):
        box = t.get_window_extent(renderer)
        if (
            box.x0 < frame.x0 - 1
            or box.x1 > frame.x1 + 1
            or box.y0 < frame.y0 - 1
            or box.y1 > frame.y1 + 1
        ):
            out.append(t.get_text())
    return out


@pytest.mark.parametrize("kind", list(FIGURES))
def test_figure_is_readable(kind, tmp_path):
    fig = FIGURES[kind]()
    assert text_artists(fig), "a figure without any title or label"
    assert not overlapping_texts(fig), overlapping_texts(fig)
    assert not texts_outside(fig), texts_outside(fig)
    png = save_figure(fig, tmp_path / kind, ("png",))[0]
    width_in, height_in = fig.get_size_inches()
    with Image.open(png) as im:
        size = im.size
        pixels = np.asarray(im.convert("RGB"), dtype=float)
    assert abs(size[0] - width_in * PNG_DPI) <= 1 and abs(size[1] - height_in * PNG_DPI) <= 1
    assert pixels.std() > 10, f"{kind} looks blank"
    assert size[0] >= 300 and size[1] >= 200


def test_the_checker_sees_overlaps():
    fig = render_k_distribution(RNG.uniform(5, 60, 300), RNG.uniform(20, 40, 30))
    fig.axes[0].set_title("a title long enough to run into the next panel's title " * 3)
    assert overlapping_texts(fig)
