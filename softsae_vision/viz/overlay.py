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

PAD_GREY = 200
"""Fill of crops beyond the image border: light grey, distinct from white skies and paper."""


def zoom_context(grid: tuple[int, int]) -> int:
    """Patches of context on each side of a zoom crop: about a third of the image in all."""
    return max(1, round(min(grid) / 6))


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
        opacity = value_opacity(np.nan_to_num(norm(map_hw).filled(0.0)))
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


def value_opacity(values: NDArray, top: float = 0.85) -> NDArray:
    """Opacity of a heat map at normalised values in [0, 1]: 0 where silent, rising to ``top``.

    Silent patches are fully transparent and weak ones faint, so the photo shows through
    except where the feature fires strongly.
    """
    values = np.clip(np.asarray(values, dtype=float), 0.0, 1.0)
    return top * values**0.8


def add_colorbar(fig: Figure, mappable: ScalarMappable, label: str, *, ax=None, cax=None) -> None:
    """A colour bar (in ``cax``, or beside ``ax``) with its unit as the label; never unlabelled."""
    cbar = fig.colorbar(mappable, ax=ax, cax=cax, shrink=1.0 if cax is not None else 0.9)
    cbar.set_label(label)


def blend_heatmap(
    image_HW3: NDArray,
    map_hw: NDArray,
    limits: Limits,
    cmap: str,
    alpha: float | None = None,
    top: float = 0.85,
) -> NDArray[np.uint8]:
    """The overlay of :func:`draw_overlay` as an (H, W, 3) uint8 array, for thumbnails."""
    h, w = image_HW3.shape[:2]
    rows, cols = patch_bounds(h, map_hw.shape[0]), patch_bounds(w, map_hw.shape[1])
    row_idx = np.repeat(np.arange(map_hw.shape[0]), np.diff(rows))
    col_idx = np.repeat(np.arange(map_hw.shape[1]), np.diff(cols))
    values_HW = np.asarray(limits.norm()(map_hw[np.ix_(row_idx, col_idx)]).filled(0.0))
    colours_HW3 = colormap(cmap)(values_HW)[..., :3]
    a = value_opacity(values_HW, top) if alpha is None else np.full(values_HW.shape, alpha)
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
    image_HW3: NDArray,
    grid: tuple[int, int],
    patch: tuple[int, int],
    context: int = 1,
    fill: int = PAD_GREY,
) -> tuple[NDArray, tuple[int, int, int, int]]:
    """A crop of ``context`` patches on every side of ``patch``; return it and the patch's box.

    Every crop of an image has the same size, (2·context + 1) patches square: at the image's
    border the missing part is padded with ``fill`` (grey), never cut, so the patch is always
    in the centre and crops of several images line up.
    """
    (H, W), (gh, gw) = image_HW3.shape[:2], grid
    t, b, l, r = patch_box((H, W), grid, patch)
    ph, pw = -(-H // gh), -(-W // gw)  # the largest patch size (patch_bounds rounds)
    size_h, size_w = (2 * context + 1) * ph, (2 * context + 1) * pw
    top = (t + b) // 2 - size_h // 2
    left = (l + r) // 2 - size_w // 2
    padded = np.full((H + 2 * size_h, W + 2 * size_w, 3), fill, dtype=image_HW3.dtype)
    padded[size_h : size_h + H, size_w : size_w + W] = image_HW3[..., :3]
    crop = padded[top + size_h : top + 2 * size_h, left + size_w : left + 2 * size_w]
    return crop, (t - top, b - top, l - left, r - left)


def outline_box(ax: Axes, box: tuple[int, int, int, int]) -> None:
    """Outline a pixel box (top, bottom, left, right), black under white: visible on any image."""
    t, b, l, r = box
    for colour, width in (("black", 2.6), ("white", 1.2)):
        ax.add_patch(Rectangle((l, t), r - l, b - t, fill=False, edgecolor=colour, linewidth=width))
