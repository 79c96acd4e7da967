"""``softsae kmaps RUN STORE --out DIR``: per-image maps of predicted k̂ (or realised L0)."""

from __future__ import annotations

import argparse

from softsae_vision.cli._analysis_args import add_common, add_quantity, write_with


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="per-image maps of predicted k per patch",
        description=(
            "Draw how many features the SAE spends on each patch: predicted k̂ for a SoftSAE, "
            "realised L0 for fixed-k baselines (a flat map for TopK). Writes the lowest- and "
            "highest-k images, the distribution of k, single-image maps and a CSV."
        ),
    )
    add_common(p)
    add_quantity(p)
    p.add_argument("--n-grid", type=int, default=8, help="images in the lowest/highest grids")
    p.add_argument(
        "--n-single",
        type=int,
        default=6,
        help="single-image k maps to draw, spread over the k ranking (-1: every image)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softsae_vision.viz.kmaps import write_kmaps

    _, result = write_with(
        args, write_kmaps, quantity=args.quantity, n_grid=args.n_grid, n_single=args.n_single
    )
    km = result.kmaps
    print(
        f"k maps of {len(km.rows)} images in {result.out}: per-image {km.symbol} "
        f"mean {km.per_image.mean():.1f} (min {km.per_image.min():.1f}, "
        f"max {km.per_image.max():.1f}); {result.cls_note}"
    )
    return 0
