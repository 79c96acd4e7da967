"""README's figure: the demo's lowest- and highest-k̂ photos, each beside its k̂ map.

    python scripts/demo_kmaps_figure.py softsae_demo --out docs/images/kmaps_lowest_highest.jpg

Reads the SoftSAE run and the store that `softsae demo --out softsae_demo` wrote. The title says
which backbone and weights the store was extracted with, so the figure cannot claim more than
it shows. Uses only the public API of softsae_vision.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from softsae_vision import pair, render_kmap_grid
from softsae_vision.analysis import ImageViews, k_maps
from softsae_vision.viz import KMapPanel, k_limits, short_label


def describe(store) -> str:
    """ "timm/<model> (random weights), output of block 10 of 0-11" from the store's metadata."""
    backbone = store.meta["backbone"]
    weights = "random weights" if backbone.get("weights") == "random" else backbone.get("weights")
    blocks = f" of 0-{backbone['n_blocks'] - 1}" if "n_blocks" in backbone else ""
    return f"{backbone['name']} ({weights}), output of block {store.layers[0]}{blocks}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", type=Path, help="the folder `softsae demo --out` wrote")
    parser.add_argument("--out", default="docs/images/kmaps_lowest_highest.jpg")
    parser.add_argument("--n", type=int, default=4, help="images per row")
    args = parser.parse_args()

    pairing = pair(args.demo / "softsae", args.demo / "store")
    maps = k_maps(pairing.sae, pairing.store, pairing.layer)
    views = ImageViews(pairing.store)
    order = np.argsort(maps.per_image, kind="stable")
    chosen = [*order[: args.n], *order[::-1][: args.n][::-1]]
    panels = [
        KMapPanel(
            views[int(maps.rows[i])],
            maps.per_patch[i],
            short_label(views.name(int(maps.rows[i])), 20),
            f"mean {maps.symbol} {maps.per_image[i]:.1f}",
        )
        for i in chosen
    ]
    title = (
        f"SoftSAE {maps.symbol} per patch on {describe(pairing.store)}: the {args.n} photos "
        f"with the lowest (top row) and highest (bottom row) mean {maps.symbol}"
    )
    fig = render_kmap_grid(
        panels, title=title, limits=k_limits(maps.per_patch), label=maps.label, n_cols=args.n
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(buffer).convert("RGB").save(out, quality=88, optimize=True)
    print(out)
    for i in chosen:
        print(f"{views.name(int(maps.rows[i]))}: mean {maps.symbol} {maps.per_image[i]:.2f}")


if __name__ == "__main__":
    main()
