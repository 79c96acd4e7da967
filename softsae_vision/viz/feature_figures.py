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
from softsae_vision.viz.layout import image_grid
from softsae_vision.viz.overlay import (
    Limits,
    add_colorbar,
    blend_heatmap,
    draw_overlay,
    outline_box,
    show_image,
    strongest_patch,
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
            f"feature {self.feature} · fires on {100 * self.frequency:.3g}% of {self.unit} · "
            f"mean activation {self.mean_activation:.3g} when active"
        )


@styled
def render_feature(summary: FeatureSummary, examples: Sequence[FeatureExample]):
    """A figure of a feature's top images, strongest first.

    With per-patch maps each example shows the activation over the patch grid (colour bar in
    activation units, shared by all panels) above a zoomed crop around its strongest patch;
    image-level examples (CLS-token SAEs) show the whole images ranked by activation.
    """
    if not examples:
        raise SoftSAEError(f"feature {summary.feature} has no examples to draw")
    with_maps = examples[0].map_hw is not None
    n_cols = min(len(examples), MAX_COLUMNS)
    n_rows = math.ceil(len(examples) / n_cols)
    grid = image_grid(
        n_rows * (2 if with_maps else 1), n_cols, colorbar=with_maps, title=summary.title()
    )
    limits = Limits.of(*(e.map_hw for e in examples if e.map_hw is not None), vmin=0.0)
    mappable, used = None, []
    for idx, ex in enumerate(examples):
        row, col = divmod(idx, n_cols)
        if with_maps:
            top, bottom = grid.axes[2 * row, col], grid.axes[2 * row + 1, col]
            mappable = draw_overlay(top, ex.image, ex.map_hw, limits, ACTIVATION_CMAP)
            crop, box = zoom_crop(ex.image, ex.map_hw.shape, strongest_patch(ex.map_hw))
            show_image(bottom, crop)
            outline_box(bottom, box)
            bottom.set_title("zoom", fontsize=7)
            used += [top, bottom]
        else:
            top = grid.axes[row, col]
            show_image(top, ex.image)
            used.append(top)
        top.set_title(_caption(idx, ex), fontsize=7)
    for ax in grid.axes.ravel():
        ax.set_visible(ax in used)
    if mappable is not None:
        add_colorbar(grid.fig, mappable, ACTIVATION_LABEL, cax=grid.cbar_ax)
    return grid.fig


def _caption(rank: int, ex: FeatureExample) -> str:
    name = ex.label if len(ex.label) <= 18 else ex.label[:8] + "…" + ex.label[-9:]
    return f"#{rank + 1}  {ex.score:.3g}" + (f"\n{name}" if name else "")


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


@styled
def render_feature_index(entries: Sequence[tuple[FeatureSummary, Sequence[FeatureExample]]]):
    """Many features at a glance: each cell is a 2x2 mosaic of a feature's top images.

    Activations are drawn relative to each feature's own maximum (features differ in scale),
    and the colour bar says so.
    """
    entries = [(s, ex) for s, ex in entries if ex]
    if not entries:
        raise SoftSAEError("no features with examples to draw in the index")
    n_cols = min(len(entries), INDEX_COLUMNS)
    has_maps = entries[0][1][0].map_hw is not None
    grid = image_grid(
        math.ceil(len(entries) / n_cols),
        n_cols,
        colorbar=has_maps,
        title="top images per feature (% = firing frequency)",
    )
    relative = Limits(0.0, 1.0)
    for ax, (summary, examples) in zip(grid.axes.ravel(), entries, strict=False):
        tiles = []
        peak = max(float(np.max(e.map_hw)) if e.map_hw is not None else 0.0 for e in examples)
        for ex in examples[:4]:
            if ex.map_hw is None:
                tiles.append(ex.image)
            else:
                scaled = ex.map_hw / peak if peak > 0 else ex.map_hw
                tiles.append(blend_heatmap(ex.image, scaled, relative, ACTIVATION_CMAP))
        show_image(ax, mosaic(tiles))
        ax.set_title(f"#{summary.feature} · {100 * summary.frequency:.2g}%", fontsize=7)
    grid.hide_unused(len(entries))
    if has_maps:
        mappable = ScalarMappable(norm=relative.norm(), cmap=ACTIVATION_CMAP)
        add_colorbar(grid.fig, mappable, "activation / feature's maximum", cax=grid.cbar_ax)
    return grid.fig
