"""Fixed-geometry grids of image panels.

Image grids are laid out by arithmetic, not by matplotlib's constrained layout: every panel is a
square of known size with room above for a caption, and the colour bar has its own column. This
keeps panels equal in size across figures (good for papers) and renders many-panel figures in a
fraction of the time constrained layout needs.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

TITLE_LINE = 0.19  # inches per line of a 10 pt title
CHARS_PER_INCH = 12  # characters of a 10 pt title per inch of width (a safe estimate)


@dataclass(frozen=True)
class GridSpecInches:
    """Sizes in inches of an image grid."""

    panel: float = 1.35  # side of one square image panel
    caption: float = 0.32  # space above each panel for its caption
    gap: float = 0.08  # horizontal gap between panels
    margin: float = 0.1  # outer margin
    colorbar: float = 0.75  # width of the colour-bar column (bar, ticks and label)


@dataclass
class ImageGrid:
    """A figure with ``rows`` x ``cols`` image axes and an optional colour-bar axis."""

    fig: Figure
    axes: np.ndarray  # (rows, cols) of Axes
    cbar_ax: Axes | None

    def hide_unused(self, used: int) -> None:
        """Hide the axes after the first ``used`` ones in row-major order."""
        for ax in self.axes.ravel()[used:]:
            ax.set_visible(False)


def image_grid(
    rows: int,
    cols: int,
    *,
    colorbar: bool,
    title: str | None = None,
    spec: GridSpecInches | None = None,
) -> ImageGrid:
    """A figure of equal square panels under ``title`` (wrapped to the figure's width).

    The colour-bar axis (if any) spans the panel rows on the right.
    """
    s = spec or GridSpecInches()
    cell_h = s.panel + s.caption
    width = 2 * s.margin + cols * s.panel + (cols - 1) * s.gap + (s.colorbar if colorbar else 0)
    lines = wrap_title(title, width) if title else []
    title_h = TITLE_LINE * len(lines) + (0.12 if lines else 0)
    height = 2 * s.margin + rows * cell_h + title_h
    fig = Figure(figsize=(width, height))
    if lines:
        fig.suptitle("\n".join(lines), y=1 - s.margin / height, va="top")
    top = height - s.margin - title_h
    axes = np.empty((rows, cols), dtype=object)
    for r in range(rows):
        for c in range(cols):
            left = s.margin + c * (s.panel + s.gap)
            bottom = top - (r + 1) * cell_h
            axes[r, c] = fig.add_axes(
                (left / width, bottom / height, s.panel / width, s.panel / height)
            )
    cbar_ax = None
    if colorbar:
        left = s.margin + cols * s.panel + (cols - 1) * s.gap + 0.12
        span = rows * cell_h - s.caption
        bottom = top - rows * cell_h
        cbar_ax = fig.add_axes((left / width, bottom / height, 0.12 / width, span / height))
    return ImageGrid(fig, axes, cbar_ax)


def wrap_title(text: str, width_in: float) -> list[str]:
    """``text`` wrapped into lines that fit a figure ``width_in`` inches wide."""
    return textwrap.wrap(text, max(16, int(width_in * CHARS_PER_INCH))) or [""]
