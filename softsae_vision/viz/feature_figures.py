"""Figures that explain one SAE feature, or many at a glance, from its top-activating images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.cm import ScalarMappable
from numpy.typing import NDArray
from PIL import Image

from softsae_vision.errors import SoftSAEError
from softsae_vision.viz.layout import GridSpecInches, image_grid, short_label
from softsae_vision.viz.overlay import (
    Limits,
    add_colorbar,
    blend_heatmap,
    draw_overlay,
    outline_box,
    show_image,
    strongest_patch,
    zoom_context,
    zoom_crop,
)
from softsae_vision.viz.style import ACTIVATION_CMAP, ACTIVATION_LABEL, styled

MAX_COLUMNS = 8
INDEX_COLUMNS = 6


@dataclass(frozen=True)
class FeatureExample:
    """One top-activating image of a feature, as the model saw it."""

    image: NDArray  # (H, W, 3) uint8: the model's view (after resize and crop)
    score: float  # the activation that ranked this example
    map_hw: NDArray | None = None  # (h, w) activation per patch; None for image-level features
    label: str = ""  # a short caption, e.g. the file name


@dataclass(frozen=True)
class FeatureSummary:
    """What a figure says about a feature as a whole."""

    feature: int
    frequency: float  # fraction of tokens (or images) on which it fires
    mean_activation: float  # mean activation over the tokens where it fires
    unit: str = "patches"  # what ``frequency`` counts: "patches", "images", "tokens"

    def title(self) -> str:
        return (
            f"feature {self.feature} · fires on {format_percent(self.frequency)} of {self.unit} · "
            f"mean activation {self.mean_activation:.2f} when active"
        )


@styled
def render_feature(summary: FeatureSummary, examples: Sequence[FeatureExample]):
    """A figure of a feature's top images, strongest first.

    With per-patch maps each example is a column: the activation over the patch grid (colour
    bar in activation units, shared by all panels; transparent where the feature is silent)
    above a crop of the photo around its strongest patch, outlined. One row of titles gives
    each example's activation; the image's name is written under its crop. Image-level examples
    (CLS-token SAEs) show the whole images ranked by activation.
    """
    if not examples:
        raise SoftSAEError(f"feature {summary.feature} has no examples to draw")
    with_maps = examples[0].map_hw is not None
    n_cols = min(len(examples), MAX_COLUMNS)
    n_rows = math.ceil(len(examples) / n_cols)
    panel_rows = n_rows * (2 if with_maps else 1)
    grid = image_grid(
        panel_rows,
        n_cols,
        colorbar=with_maps,
        title=summary.title(),
        spec=GridSpecInches(caption=0.22, footer=0.2, row_label=0.2 if with_maps else 0.0),
        row_captions=[r % 2 == 0 for r in range(panel_rows)] if with_maps else None,
        row_footers=[r % 2 == 1 for r in range(panel_rows)] if with_maps else None,
    )
    limits = Limits.of(*(e.map_hw for e in examples if e.map_hw is not None), vmin=0.0)
    mappable, used = None, []
    for idx, ex in enumerate(examples):
        row, col = divmod(idx, n_cols)
        if with_maps:
            map_hw = ex.map_hw
            if map_hw is None:
                raise SoftSAEError(
                    f"feature {summary.feature}: give every example a heat map, or none"
                )
            top, bottom = grid.axes[2 * row, col], grid.axes[2 * row + 1, col]
            mappable = draw_overlay(top, ex.image, map_hw, limits, ACTIVATION_CMAP)
            context = zoom_context(map_hw.shape)
            crop, box = zoom_crop(ex.image, map_hw.shape, strongest_patch(map_hw), context)
            show_image(bottom, crop)
            outline_box(bottom, box)
            used += [top, bottom]
            if col == 0:
                top.set_ylabel("activation map", fontsize=7)
                side = 2 * context + 1
                bottom.set_ylabel(f"zoom: {side} × {side} patches", fontsize=7)
        else:
            bottom = top = grid.axes[row, col]
            show_image(top, ex.image)
            used.append(top)
        top.set_title(f"#{idx + 1} · activation {ex.score:.2f}", fontsize=7)
        if ex.label:
            bottom.set_xlabel(short_label(ex.label), fontsize=7, labelpad=2)
    for ax in grid.axes.ravel():
        ax.set_visible(ax in used)
    if mappable is not None:
        add_colorbar(grid.fig, mappable, ACTIVATION_LABEL, cax=grid.cbar_ax)
    return grid.fig


def format_percent(fraction: float) -> str:
    """A frequency as a percentage with two decimals ("12.50%", "0.03%", "<0.01%")."""
    percent = 100 * fraction
    if 0 < percent < 0.005:
        return "<0.01%"
    return f"{percent:.2f}%"


def mosaic(tiles: Sequence[NDArray], n_side: int = 2, gap: int = 2) -> NDArray[np.uint8]:
    """Up to ``n_side``² same-sized RGB tiles in a square mosaic with white gutters."""
    h, w = tiles[0].shape[:2]
    size = (n_side * h + (n_side - 1) * gap, n_side * w + (n_side - 1) * gap, 3)
    out = np.full(size, 255, dtype=np.uint8)
    for idx, tile in enumerate(tiles[: n_side * n_side]):
        if tile.shape[:2] != (h, w):
            tile = np.asarray(Image.fromarray(tile).resize((w, h), Image.Resampling.BILINEAR))
        top, left = (idx // n_side) * (h + gap), (idx % n_side) * (w + gap)
        out[top : top + h, left : left + w] = tile[..., :3]
    return out


def index_columns(n: int, max_cols: int = INDEX_COLUMNS) -> tuple[int, int]:
    """Columns and how many of ``n`` entries to draw so that no cell of the grid stays empty.

    Prefers a column count in [max_cols - 2, max_cols] that divides ``n``; otherwise drops the
    last entries of the final, incomplete row (they are the least selected).
    """
    if n <= max_cols:
        return n, n
    for cols in range(max_cols, max(max_cols - 3, 1), -1):
        if n % cols == 0:
            return cols, n
    return max_cols, n - n % max_cols


def spotlight(image_HW3: NDArray, map_hw: NDArray, peak: float) -> NDArray[np.uint8]:
    """The image dimmed where the feature is silent, its heat map blended where it fires."""
    limits = Limits(0.0, peak if peak > 0 else 1.0)
    blended = blend_heatmap(image_HW3, map_hw, limits, ACTIVATION_CMAP, top=0.7)
    on_HW3 = blend_heatmap(np.zeros_like(image_HW3), map_hw, limits, ACTIVATION_CMAP)
    on_HW = on_HW3.max(axis=-1) > 0
    dim = np.where(on_HW[..., None], 1.0, 0.45)
    return np.round(blended * dim).astype(np.uint8)


@styled
def render_feature_index(entries: Sequence[tuple[FeatureSummary, Sequence[FeatureExample]]]):
    """Many features at a glance: each cell is a 2x2 mosaic of a feature's top images.

    Activations are drawn relative to each feature's own maximum (features differ in scale),
    and the colour bar says so; where a feature is silent the photo is dimmed, so its heat map
    stands out on any image. The grid has no empty cells (see :func:`index_columns`).
    """
    entries = [(s, ex) for s, ex in entries if ex]
    if not entries:
        raise SoftSAEError("no features with examples to draw in the index")
    n_cols, n_drawn = index_columns(len(entries))
    entries = entries[:n_drawn]
    has_maps = entries[0][1][0].map_hw is not None
    grid = image_grid(
        math.ceil(len(entries) / n_cols),
        n_cols,
        colorbar=has_maps,
        title="top 4 images per feature (% = share of patches on which it fires)"
        if has_maps
        else "top 4 images per feature (% = share of images on which it fires)",
        spec=GridSpecInches(panel=2.1, caption=0.25, gap=0.12),
    )
    for ax, (summary, examples) in zip(grid.axes.ravel(), entries, strict=False):
        tiles = []
        peak = max(float(np.max(e.map_hw)) if e.map_hw is not None else 0.0 for e in examples)
        for ex in examples[:4]:
            tiles.append(ex.image if ex.map_hw is None else spotlight(ex.image, ex.map_hw, peak))
        show_image(ax, mosaic(tiles))
        ax.set_title(f"feature {summary.feature} · {format_percent(summary.frequency)}", fontsize=8)
    grid.hide_unused(len(entries))
    if has_maps:
        mappable = ScalarMappable(norm=Limits(0.0, 1.0).norm(), cmap=ACTIVATION_CMAP)
        add_colorbar(grid.fig, mappable, "activation / feature's maximum", cax=grid.cbar_ax)
    return grid.fig
