"""Drawing per-patch values over the image the model saw: overlays, colour bars, crops.

A per-patch map (h, w) is stretched over the model's view of the image (H, W) with nearest
neighbour, so each coloured square is exactly one backbone token — the honest resolution of the
data. Values are never rescaled silently: colour limits are explicit and every colour bar is
labelled with its unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import NDArray

from softsae_vision.analysis.complexity import patch_bounds
from softsae_vision.viz.style import colormap


@dataclass(frozen=True)
class Limits:
    """Colour limits of a map: values at or below ``vmin`` get the first colour."""

    vmin: float
    vmax: float

    @classmethod
    def of(cls, *maps: NDArray, vmin: float | None = None) -> Limits:
        """Limits spanning all finite values of ``maps`` (never an empty range)."""
        finite = [m[np.isfinite(m)] for m in maps if np.size(m)]
        values = np.concatenate([f.ravel() for f in finite]) if finite else np.zeros(1)
        lo = float(values.min()) if vmin is None else float(vmin)
        hi = float(values.max())
        return cls(lo, hi if hi > lo else lo + 1.0)

    def norm(self) -> Normalize:
        return Normalize(self.vmin, self.vmax, clip=True)


def show_image(ax: Axes, image_HW3: NDArray) -> None:
    """Draw an RGB image filling ``ax`` with no ticks."""
    h, w = image_HW3.shape[:2]
    ax.imshow(image_HW3, extent=(0, w, h, 0), interpolation="antialiased")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def draw_overlay(
    ax: Axes,
    image_HW3: NDArray,
    map_hw: NDArray,
    limits: Limits,
    cmap: str,
    *,
    alpha: float | None = None,
) -> ScalarMappable:
    """Draw ``image`` with the per-patch ``map`` on top; return the mappable for a colour bar.

    With ``alpha=None`` the opacity follows the value (silent patches stay transparent, which
    suits sparse activations); a number gives uniform opacity (suits dense maps such as k̂).
    """
    show_image(ax, image_HW3)
    h, w = image_HW3.shape[:2]
    norm = limits.norm()
    if alpha is None:
        opacity = 0.85 * np.sqrt(np.nan_to_num(norm(map_hw).filled(0.0)))
    else:
        opacity = np.full(map_hw.shape, float(alpha))
    ax.imshow(
        map_hw,
        extent=(0, w, h, 0),
        cmap=colormap(cmap),
        norm=norm,
        alpha=opacity,
        interpolation="nearest",
    )
    return ScalarMappable(norm=norm, cmap=colormap(cmap))


def add_colorbar(fig: Figure, mappable: ScalarMappable, label: str, *, ax=None, cax=None) -> None:
    """A colour bar (in ``cax``, or beside ``ax``) with its unit as the label; never unlabelled."""
    cbar = fig.colorbar(mappable, ax=ax, cax=cax, shrink=1.0 if cax is not None else 0.9)
    cbar.set_label(label)


def blend_heatmap(
    image_HW3: NDArray, map_hw: NDArray, limits: Limits, cmap: str, alpha: float | None = None
) -> NDArray[np.uint8]:
    """The overlay of :func:`draw_overlay` as an (H, W, 3) uint8 array, for thumbnails."""
    h, w = image_HW3.shape[:2]
    rows, cols = patch_bounds(h, map_hw.shape[0]), patch_bounds(w, map_hw.shape[1])
    row_idx = np.repeat(np.arange(map_hw.shape[0]), np.diff(rows))
    col_idx = np.repeat(np.arange(map_hw.shape[1]), np.diff(cols))
    values_HW = np.asarray(limits.norm()(map_hw[np.ix_(row_idx, col_idx)]).filled(0.0))
    colours_HW3 = colormap(cmap)(values_HW)[..., :3]
    a = 0.85 * np.sqrt(values_HW) if alpha is None else np.full(values_HW.shape, alpha)
    out = (1 - a[..., None]) * image_HW3[..., :3] / 255.0 + a[..., None] * colours_HW3
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def strongest_patch(map_hw: NDArray) -> tuple[int, int]:
    """Grid position (row, col) of the largest value of a per-patch map."""
    i, j = np.unravel_index(int(np.nanargmax(map_hw)), map_hw.shape)
    return int(i), int(j)


def patch_box(shape_HW: tuple[int, int], grid: tuple[int, int], patch: tuple[int, int]):
    """Pixel box (top, bottom, left, right) of token ``patch`` in an image of ``shape``."""
    rows, cols = patch_bounds(shape_HW[0], grid[0]), patch_bounds(shape_HW[1], grid[1])
    i, j = patch
    return int(rows[i]), int(rows[i + 1]), int(cols[j]), int(cols[j + 1])


def zoom_crop(
    image_HW3: NDArray, grid: tuple[int, int], patch: tuple[int, int], context: int = 1
) -> tuple[NDArray, tuple[int, int, int, int]]:
    """Crop ``context`` patches around ``patch``; return it and the patch box inside the crop."""
    shape, (gh, gw), (i, j) = image_HW3.shape[:2], grid, patch
    top, _, left, _ = patch_box(shape, grid, (max(i - context, 0), max(j - context, 0)))
    last = (min(i + context, gh - 1), min(j + context, gw - 1))
    _, bottom, _, right = patch_box(shape, grid, last)
    t, b, l, r = patch_box(shape, grid, patch)
    return image_HW3[top:bottom, left:right], (t - top, b - top, l - left, r - left)


def outline_box(ax: Axes, box: tuple[int, int, int, int]) -> None:
    """Outline a pixel box (top, bottom, left, right), black under white: visible on any image."""
    t, b, l, r = box
    for colour, width in (("black", 2.6), ("white", 1.2)):
        ax.add_patch(Rectangle((l, t), r - l, b - t, fill=False, edgecolor=colour, linewidth=width))
