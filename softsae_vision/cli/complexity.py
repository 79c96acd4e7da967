"""``softsae complexity RUN STORE --out DIR``: k against image complexity, with bootstrap CIs."""

from __future__ import annotations

import argparse

from softsae_vision.cli._analysis_args import add_common, add_quantity, write_with


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="correlate per-image k with image-complexity measures",
        description=(
            "Compute complexity measures (JPEG and PNG bits per pixel, gradient, edge density, "
            "spatial information, colour entropy) on the model's view of every stored image, "
            "correlate them with per-image k (Spearman and Pearson, bootstrap 95% CIs), per "
            "image and per patch; write a CSV, a JSON summary and scatter figures."
        ),
    )
    add_common(p)
    add_quantity(p)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softsae_vision.viz.complexity import write_complexity

    _, result = write_with(
        args, write_complexity, quantity=args.quantity, n_boot=args.n_boot, seed=args.seed
    )
    print(f"{len(result.table.rows)} images; {result.note}")
    for variable in result.image_stats:
        print(result.headline("jpeg_bpp", variable))
    print(f"table, summary and figures in {result.out}")
    return 0
