"""A paper panel: for chosen images, SoftSAE's k̂ map beside a TopK SAE's realised L0 map.

    python scripts/softsae_vs_topk.py SOFT_RUN TOPK_RUN STORE --images 0,5,9 --out soft_vs_topk

Columns: the model's view, SoftSAE predicted k̂ per patch, TopK realised L0 per patch (flat:
TopK spends the same budget everywhere). Both maps share one colour scale, so equal colours mean
equal numbers of features. Uses only the public API of softsae_vision.
"""

from __future__ import annotations

import argparse

import numpy as np

from softsae_vision.analysis import ImageViews, k_maps, pair
from softsae_vision.viz import (
    Limits,
    add_colorbar,
    draw_overlay,
    image_grid,
    save_figure,
    show_image,
    styled,
)


@styled
def soft_vs_topk(images, soft_maps, topk_maps, names):
    """Rows: images; columns: view, SoftSAE k̂ map, TopK L0 map (one shared colour bar)."""
    grid = image_grid(len(images), 3, colorbar=True)
    limits = Limits.of(soft_maps, topk_maps)
    mappable = None
    for row, image in enumerate(images):
        show_image(grid.axes[row, 0], image)
        grid.axes[row, 0].set_title(names[row], fontsize=7)
        for col, (maps, title) in enumerate(
            [(soft_maps, "SoftSAE k̂"), (topk_maps, "TopK L0")], start=1
        ):
            ax = grid.axes[row, col]
            mappable = draw_overlay(ax, image, maps[row], limits, "cividis", alpha=0.6)
            ax.set_title(f"{title} · mean {maps[row].mean():.3g}", fontsize=7)
    add_colorbar(grid.fig, mappable, "features per patch (k̂ or L0)", cax=grid.cbar_ax)
    return grid.fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("soft_run")
    parser.add_argument("topk_run")
    parser.add_argument("store")
    parser.add_argument("--images", default="0,1,2", help="comma-separated store rows")
    parser.add_argument("--out", default="softsae_vs_topk")
    args = parser.parse_args()

    rows = np.array([int(r) for r in args.images.split(",")])
    soft = pair(args.soft_run, args.store)
    topk = pair(args.topk_run, soft.store, layer=soft.layer)
    soft.require_softsae("the SoftSAE column")
    soft_maps = k_maps(soft.sae, soft.store, soft.layer, quantity="k_hat", rows=rows)
    topk_maps = k_maps(topk.sae, topk.store, topk.layer, quantity="l0", rows=rows)
    views = ImageViews(soft.store)
    fig = soft_vs_topk(
        [views[r] for r in rows],
        soft_maps.per_patch,
        topk_maps.per_patch,
        [views.name(r) for r in rows],
    )
    for path in save_figure(fig, args.out):
        print(path)


if __name__ == "__main__":
    main()
