"""k against image complexity: one scatter panel per measure, with the extreme images shown."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
from matplotlib import patheffects
from matplotlib.colors import LogNorm
from numpy.typing import NDArray

if TYPE_CHECKING:
    from matplotlib.figure import SubFigure

from softsae_vision.analysis.complexity import MEASURE_LABELS
from softsae_vision.analysis.labels import K_HAT_LABEL
from softsae_vision.analysis.stats import format_correlation
from softsae_vision.errors import SoftSAEError
from softsae_vision.viz.overlay import show_image
from softsae_vision.viz.style import DENSITY_CMAP, OKABE_ITO, new_figure, styled

OUTLINE = [patheffects.withStroke(linewidth=2, foreground="white")]
OFFSETS_PT = tuple(
    (dx, dy)
    for r in (4, 10, 16, 24)
    for dx, dy in ((r, r), (r, -r - 6), (-r - 6, r), (-r - 6, -r - 6), (r + 2, -3), (-r - 8, -3))
)
"""Candidate label positions around a point (points, in order of preference)."""


class Thumbnails(Protocol):
    """Point index → (H, W, 3) image: a list of arrays, or anything that loads them on demand."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int, /) -> NDArray: ...


@styled
def render_complexity_scatter(
    measures: Mapping[str, NDArray],
    k: NDArray,
    *,
    stats: Mapping[str, dict] | None = None,
    thumbnails: Thumbnails | None = None,
    n_extreme: int = 3,
    k_label: str = K_HAT_LABEL,
    k_symbol: str = "k",
    title: str | None = None,
    colour: str = OKABE_ITO[0],
):
    """One panel per complexity measure: per-image k against the measure.

    ``stats[name]`` (a :func:`correlate` result) is written in the panel title. With
    ``thumbnails`` (one image per point) the ``n_extreme`` lowest- and highest-k images are
    shown in a strip below the panels, lettered, and the same letters mark their points.
    """
    names = [n for n in measures if np.size(measures[n])]
    if not names:
        raise SoftSAEError("no complexity measures to plot")
    k = np.asarray(k, dtype=float)
    n_cols = min(3, len(names))
    n_rows = math.ceil(len(names) / n_cols)
    marked = _extremes(k, n_extreme) if thumbnails is not None else []
    strip_h = 1.25 if marked else 0.0
    fig = new_figure(2.7 * n_cols, 2.4 * n_rows + strip_h + (0.3 if title else 0))
    panel_fig, strip_fig = (
        cast("Sequence[SubFigure]", fig.subfigures(2, 1, height_ratios=[2.4 * n_rows, strip_h]))
        if marked
        else (fig, None)
    )
    axes = panel_fig.subplots(n_rows, n_cols, squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        x = np.asarray(measures[name], dtype=float)
        ax.scatter(x, k, s=10, color=colour, alpha=0.7, linewidths=0)
        for letter, idx in marked:
            ax.scatter(x[idx], k[idx], s=22, facecolors="none", edgecolors="black", linewidths=0.8)
            ax.annotate(
                letter,
                (x[idx], k[idx]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
                fontweight="bold",
                path_effects=OUTLINE,
            )
        ax.set_xlabel(MEASURE_LABELS.get(name, name))
        ax.set_ylabel(k_label)
        if stats and name in stats:
            ax.set_title(correlation_title(stats[name]), fontsize=8)
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    if strip_fig is not None:
        _thumbnail_strip(strip_fig, thumbnails, k, marked, n_extreme, k_symbol)
    if title:
        fig.suptitle(title)
    if marked:
        place_annotations(fig)
    return fig


def correlation_title(stats: dict) -> str:
    """Two lines: "Spearman ρ = 0.41" and "95% CI [0.22, 0.57], n = 120"."""
    head, bracket, rest = format_correlation(stats).partition(" [")
    return f"Spearman {head}" + (f"\n95% CI [{rest}" if bracket else "")


def place_annotations(fig, offsets_pt=OFFSETS_PT) -> None:
    """Move each point label to the first offset where it overlaps no other label or title.

    Candidates are tried in order around the point; the figure is drawn once to know the sizes.
    """
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else None
    if renderer is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    for ax in fig.get_axes():
        labels = [t for t in ax.texts if hasattr(t, "xyann")]
        taken = [ax.title.get_window_extent(renderer)] if ax.get_title() else []
        frame = ax.get_window_extent(renderer)
        for label in labels:
            for dx, dy in offsets_pt:
                label.xyann = (dx, dy)
                box = label.get_window_extent(renderer)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0
                if inside and box.y1 <= frame.y1 and not any(box.overlaps(o) for o in taken):
                    break
            taken.append(label.get_window_extent(renderer))


def _extremes(k: NDArray, n: int) -> list[tuple[str, int]]:
    """Letters and indices of the ``n`` lowest- then ``n`` highest-k points (no repeats)."""
    order = np.argsort(k, kind="stable")
    picked = list(dict.fromkeys([*order[:n].tolist(), *order[::-1][:n][::-1].tolist()]))
    return [(chr(ord("A") + i), int(idx)) for i, idx in enumerate(picked)]


def _thumbnail_strip(fig, thumbnails, k: NDArray, marked, n_low: int, symbol: str) -> None:
    axes = fig.subplots(1, len(marked), squeeze=False)[0]
    for pos, (ax, (letter, idx)) in enumerate(zip(axes, marked, strict=True)):
        show_image(ax, np.asarray(thumbnails[idx]))
        side = "low" if pos < n_low else "high"
        ax.set_title(f"{letter}: {side} {symbol} = {k[idx]:.1f}", fontsize=7)


@styled
def render_patch_density(
    measures: Mapping[str, NDArray],
    k: NDArray,
    *,
    stats: Mapping[str, dict] | None = None,
    k_label: str = K_HAT_LABEL,
    title: str | None = None,
):
    """Per-patch k against local complexity as 2-D histograms (patches are too many to dot)."""
    names = [n for n in measures if np.size(measures[n])]
    if not names:
        raise SoftSAEError("no per-patch measures to plot")
    k = np.asarray(k, dtype=float).ravel()
    fig = new_figure(2.7 * len(names) + 0.8, 2.6)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    image = None
    for ax, name in zip(axes, names, strict=True):
        x = np.asarray(measures[name], dtype=float).ravel()
        _, _, _, image = ax.hist2d(x, k, bins=30, cmap=DENSITY_CMAP, cmin=1, norm=LogNorm())
        ax.set_xlabel(MEASURE_LABELS.get(name, name))
        ax.set_ylabel(k_label)
        if stats and name in stats:
            ax.set_title(correlation_title(stats[name]), fontsize=8)
    assert image is not None  # names is not empty
    cbar = fig.colorbar(image, ax=list(axes), shrink=0.9)
    cbar.set_label("patches per bin (log scale)")
    if title:
        fig.suptitle(title)
    return fig
