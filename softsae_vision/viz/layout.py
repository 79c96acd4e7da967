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
    footer: float = 0.0  # space below a panel for a label under it (rows that have one)
    row_label: float = 0.0  # space left of the first column for row labels
    pair_gap: float = 0.0  # extra gap after every second column (image/map pairs)


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
    row_captions: list[bool] | None = None,
    row_footers: list[bool] | None = None,
) -> ImageGrid:
    """A figure of equal square panels under ``title`` (wrapped to the figure's width).

    Each row has room for a caption above its panels (unless ``row_captions[r]`` is false: then
    only a small gap) and, where ``row_footers[r]`` is true, ``spec.footer`` below them. The
    colour-bar axis (if any) spans the panel rows on the right.
    """
    s = spec or GridSpecInches()
    captions = row_captions if row_captions is not None else [True] * rows
    footers = row_footers if row_footers is not None else [s.footer > 0] * rows
    row_h = [
        (s.caption if cap else s.gap) + s.panel + (s.footer if foot else 0.0)
        for cap, foot in zip(captions, footers, strict=True)
    ]
    x0 = s.margin + s.row_label
    lefts = [x0 + c * (s.panel + s.gap) + (c // 2) * s.pair_gap for c in range(cols)]
    width = lefts[-1] + s.panel + s.margin + (s.colorbar if colorbar else 0)
    lines = wrap_title(title, width) if title else []
    title_h = TITLE_LINE * len(lines) + (0.12 if lines else 0)
    height = 2 * s.margin + sum(row_h) + title_h
    fig = Figure(figsize=(width, height))
    if lines:
        fig.suptitle("\n".join(lines), y=1 - s.margin / height, va="top")
    top = height - s.margin - title_h
    axes = np.empty((rows, cols), dtype=object)
    y = top
    for r in range(rows):
        bottom = y - (s.caption if captions[r] else s.gap) - s.panel
        for c, left in enumerate(lefts):
            axes[r, c] = fig.add_axes(
                (left / width, bottom / height, s.panel / width, s.panel / height)
            )
        y -= row_h[r]
    cbar_ax = None
    if colorbar:
        left = lefts[-1] + s.panel + 0.12
        first_top = top - (s.caption if captions[0] else s.gap)
        last_bottom = y + (s.footer if footers[-1] else 0.0)
        cbar_ax = fig.add_axes(
            (left / width, last_bottom / height, 0.12 / width, (first_top - last_bottom) / height)
        )
    return ImageGrid(fig, axes, cbar_ax)


def wrap_title(text: str, width_in: float) -> list[str]:
    """``text`` wrapped into lines that fit a figure ``width_in`` inches wide."""
    return textwrap.wrap(text, max(16, int(width_in * CHARS_PER_INCH))) or [""]


def short_label(name: str, max_chars: int = 18) -> str:
    """A file name without folders and extension, shortened in the middle to ``max_chars``."""
    stem = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem[1:] else stem
    if len(stem) <= max_chars:
        return stem
    head = (max_chars - 1) // 2
    return stem[:head] + "…" + stem[-(max_chars - 1 - head) :]
