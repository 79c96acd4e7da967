"""k maps: how many features an SAE spends on each patch of an image, and how that is spread."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.artist import Artist
from numpy.typing import NDArray

from softsae_vision.analysis.labels import K_HAT_LABEL
from softsae_vision.errors import SoftSAEError
from softsae_vision.viz.layout import GridSpecInches, image_grid
from softsae_vision.viz.overlay import Limits, add_colorbar, draw_overlay, show_image
from softsae_vision.viz.style import K_CMAP, OKABE_ITO, new_figure, styled

KMAP_ALPHA = 0.85


@dataclass(frozen=True)
class KMapPanel:
    """One image and its per-patch k (predicted k̂, or realised L0 for fixed-k SAEs)."""

    image: NDArray  # (H, W, 3) uint8: the model's view
    k_hw: NDArray  # (h, w) float
    caption: str = ""  # above the photo: usually the image's name
    value: str = ""  # above the map: usually the image's k, e.g. "k̂ 12.3"


@styled
def render_kmap(panel: KMapPanel, *, limits: Limits | None = None, label: str = K_HAT_LABEL):
    """The image beside its k map, with the colour bar in features.

    Pass shared ``limits`` to make several k maps comparable; by default they span this map
    (a flat map, e.g. TopK's L0, gets a unit-wide range centred on its value so it still draws).
    """
    limits = limits or k_limits(panel.k_hw)
    grid = image_grid(1, 2, colorbar=True, title=panel.caption or None)
    ax_img, ax_map = grid.axes[0]
    show_image(ax_img, panel.image)
    ax_img.set_title("model's view")
    mappable = draw_kmap(ax_map, panel.image, panel.k_hw, limits)
    ax_map.set_title(panel.value or "k per patch")
    add_colorbar(grid.fig, mappable, label, cax=grid.cbar_ax)
    return grid.fig


def draw_kmap(ax, image_HW3: NDArray, k_hw: NDArray, limits: Limits):
    """A k map drawn over a faint copy of the photo (for orientation); returns the mappable.

    The map is opaque enough to read its colour exactly; the photo itself is shown unobscured
    in the panel beside it.
    """
    faint = (255 - (255 - image_HW3[..., :3].astype(float)) * 0.35).astype(np.uint8)
    return draw_overlay(ax, faint, k_hw, limits, K_CMAP, alpha=KMAP_ALPHA)


@styled
def render_kmap_grid(
    panels: Sequence[KMapPanel],
    *,
    title: str,
    limits: Limits | None = None,
    label: str = K_HAT_LABEL,
    n_cols: int = 4,
):
    """Several images, each beside its k map, on one shared colour scale.

    ``n_cols`` is the number of image/map pairs per row. Each photo is shown untouched with its
    caption above; its map (over a faint copy of the photo) carries ``value`` above.
    """
    if not panels:
        raise SoftSAEError("no images to draw in the k-map grid")
    limits = limits or k_limits(*(p.k_hw for p in panels))
    n_cols = min(n_cols, len(panels))
    grid = image_grid(
        math.ceil(len(panels) / n_cols),
        2 * n_cols,
        colorbar=True,
        title=title,
        spec=GridSpecInches(caption=0.24, pair_gap=0.22),
    )
    mappable = None
    for i, panel in enumerate(panels):
        row, col = divmod(i, n_cols)
        ax_img, ax_map = grid.axes[row, 2 * col], grid.axes[row, 2 * col + 1]
        show_image(ax_img, panel.image)
        ax_img.set_title(panel.caption, fontsize=7)
        mappable = draw_kmap(ax_map, panel.image, panel.k_hw, limits)
        ax_map.set_title(panel.value, fontsize=7)
    for ax in grid.axes.ravel()[2 * len(panels) :]:
        ax.set_visible(False)
    assert mappable is not None  # at least one panel was drawn
    add_colorbar(grid.fig, mappable, label, cax=grid.cbar_ax)
    return grid.fig


def k_limits(*maps: NDArray) -> Limits:
    """Colour limits spanning ``maps``; a flat map gets a unit range centred on its value."""
    lim = Limits.of(*maps)
    values = np.concatenate([np.ravel(m) for m in maps])
    if np.ptp(values) == 0:  # a flat map: centre a unit range on the value
        return Limits(float(values[0]) - 0.5, float(values[0]) + 0.5)
    return lim


@styled
def render_k_distribution(
    per_patch: NDArray,
    per_image: NDArray,
    *,
    label: str = K_HAT_LABEL,
    cls: NDArray | None = None,
    target: float | None = None,
):
    """Histograms of k over all patches and over images (mean over patches; CLS if given)."""
    fig = new_figure(6.4, 2.4)
    ax_patch, ax_image = fig.subplots(1, 2)
    _histogram(ax_patch, per_patch, OKABE_ITO[0], "patches")
    ax_patch.set_title(f"per patch (n = {per_patch.size})")
    _histogram(ax_image, per_image, OKABE_ITO[1], "image mean over patches")
    if cls is not None and cls.size:
        _histogram(ax_image, cls, OKABE_ITO[2], "CLS token")
    ax_image.set_title(f"per image (n = {per_image.size})")
    for ax in (ax_patch, ax_image):
        ax.set_xlabel(label)
        ax.set_ylabel("count")
        if target is not None:
            ax.axvline(target, color="black", linestyle="--", linewidth=1, label=f"K = {target:g}")
    handles: dict[str, Artist] = {}
    for ax in (ax_patch, ax_image):
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(name, handle)
    if handles:  # one legend below the panels, never over the bars
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=len(handles),
            frameon=False,
        )
    return fig


def _histogram(ax, values: NDArray, colour: str, name: str) -> None:
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    bins = np.linspace(lo - 0.5, hi + 0.5, 2) if hi == lo else min(40, max(5, values.size // 4))
    ax.hist(values, bins=bins, color=colour, alpha=0.75, label=name)
