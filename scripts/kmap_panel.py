"""A paper panel: chosen images above their k maps, on one shared colour scale.

    python scripts/kmap_panel.py RUN STORE --images cat.jpg,brick_wall.jpg --out kmap_panel

Images are named by file name (or store row number). For a SoftSAE the maps show predicted k̂;
for fixed-k baselines the realised L0. Uses only the public API of softsae_vision.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from softsae_vision.analysis import ImageViews, k_maps, pair
from softsae_vision.viz import (
    add_colorbar,
    draw_overlay,
    image_grid,
    k_limits,
    save_figure,
    show_image,
    styled,
)


def find_rows(views: ImageViews, names: list[str]) -> list[int]:
    """Store rows of images given by file name or row number."""
    by_name = {Path(p).name: row for row, p in enumerate(views.paths)}
    rows = []
    for name in names:
        if name.isdigit():
            rows.append(int(name))
        elif name in by_name:
            rows.append(by_name[name])
        else:
            raise SystemExit(f"no image named {name!r} in the store")
    return rows


@styled
def kmap_panel(images: list[np.ndarray], maps: np.ndarray, captions: list[str], label: str):
    """Row 1: the model's view of each image; row 2: its k map (shared colour bar)."""
    grid = image_grid(2, len(images), colorbar=True)
    limits = k_limits(maps)
    mappable = None
    for col, (image, kmap, caption) in enumerate(zip(images, maps, captions, strict=True)):
        show_image(grid.axes[0, col], image)
        grid.axes[0, col].set_title(caption, fontsize=7)
        mappable = draw_overlay(grid.axes[1, col], image, kmap, limits, "cividis", alpha=0.6)
    add_colorbar(grid.fig, mappable, label, cax=grid.cbar_ax)
    return grid.fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("store")
    parser.add_argument("--images", required=True, help="comma-separated file names or rows")
    parser.add_argument("--out", default="kmap_panel", help="output path (PNG and PDF)")
    parser.add_argument("--layer", default=None)
    args = parser.parse_args()

    pairing = pair(args.run, args.store, layer=args.layer)
    views = ImageViews(pairing.store)
    rows = find_rows(views, args.images.split(","))
    maps = k_maps(pairing.sae, pairing.store, pairing.layer, rows=np.array(rows))
    captions = [
        f"{views.name(r)}\n{maps.symbol} {k:.1f}" for r, k in zip(rows, maps.per_image, strict=True)
    ]
    fig = kmap_panel([views[r] for r in rows], maps.per_patch, captions, maps.label)
    for path in save_figure(fig, args.out):
        print(path)


if __name__ == "__main__":
    main()
