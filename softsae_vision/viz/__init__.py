"""Figures and the HTML report, in one style (see :mod:`softsae_vision.viz.style`).

``render_*`` functions return a matplotlib Figure (save it with :func:`save_figure`, which
writes PNG and PDF); ``write_*`` functions run an analysis and write its figures and tables.
The analyses themselves (``compute_kmaps``, ``per_image_k``, ...) live in
:mod:`softsae_vision.analysis`.
"""

from softsae_vision._deprecated import deprecated
from softsae_vision.viz.complexity import ComplexityResult, write_complexity
from softsae_vision.viz.complexity_figures import render_complexity_scatter, render_patch_density
from softsae_vision.viz.curves import read_metrics, render_training_curves
from softsae_vision.viz.feature_figures import (
    FeatureExample,
    FeatureSummary,
    render_feature,
    render_feature_index,
)
from softsae_vision.viz.features import FeaturesResult, write_features
from softsae_vision.viz.kmap_figures import (
    KMapPanel,
    k_limits,
    render_k_distribution,
    render_kmap,
    render_kmap_grid,
)
from softsae_vision.viz.kmaps import KMapsResult, write_kmaps
from softsae_vision.viz.layout import image_grid, short_label
from softsae_vision.viz.overlay import Limits, add_colorbar, blend_heatmap, draw_overlay, show_image
from softsae_vision.viz.report import build_report
from softsae_vision.viz.style import save_figure, styled

__all__ = [
    "ComplexityResult",
    "FeatureExample",
    "FeatureSummary",
    "FeaturesResult",
    "KMapPanel",
    "KMapsResult",
    "Limits",
    "add_colorbar",
    "blend_heatmap",
    "build_report",
    "draw_overlay",
    "image_grid",
    "k_limits",
    "read_metrics",
    "render_complexity_scatter",
    "render_feature",
    "render_feature_index",
    "render_k_distribution",
    "render_kmap",
    "render_kmap_grid",
    "render_patch_density",
    "render_training_curves",
    "save_figure",
    "short_label",
    "show_image",
    "styled",
    "write_complexity",
    "write_features",
    "write_kmaps",
]


def __getattr__(name: str) -> object:
    if name in ("compute_kmaps", "per_image_k"):  # analysis computes, viz draws
        from softsae_vision import analysis

        new = f"softsae_vision.analysis.{name}"
        return deprecated(f"{__name__}.{name}", new, getattr(analysis, name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
