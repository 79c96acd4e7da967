"""``softsae report RUN [RUN ...] STORE --out DIR``: one static HTML page with all analyses of
one run, or of several runs side by side."""

from __future__ import annotations

import argparse

from softsae_vision.cli._analysis_args import add_common, runs_and_last


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="one static HTML report: training curves, metrics, features, k maps, complexity",
        description=(
            "Write DIR/index.html, a page that opens offline (relative links, no scripts), with "
            "the run's training curves, evaluation metrics on the store, a feature gallery, "
            "k maps and the k-versus-complexity analysis. Several RUNs (e.g. a SoftSAE and its "
            "matched TopK) are shown side by side, with FVU against L0 and each baseline's FVU "
            "at SoftSAE's L0; their figures go to DIR/<run name>/. Figures are saved as PNG; "
            "--pdf adds "
            "a PDF copy of each (linked from its caption), which makes the report several "
            "times slower."
        ),
    )
    add_common(p, pdf=False, several=True)
    p.add_argument(
        "--banner", default=None, help="warning shown at the top of the page (default: none)"
    )
    p.add_argument("--title", default=None, help="page title (default: from the run name)")
    p.add_argument("--n-features", type=int, default=12, help="features in the gallery")
    p.add_argument("--top", type=int, default=8, help="top images per feature")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--kmap-images", type=int, default=6, help="single-image k maps to draw")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    runs, store = runs_and_last(args.paths, "STORE")

    from softsae_vision.devices import resolve_device
    from softsae_vision.viz.report import build_report

    path = build_report(
        runs,
        store,
        args.out,
        banner=args.banner,
        layer=args.layer,
        n_features=args.n_features,
        n_top=args.top,
        n_boot=args.n_boot,
        kmap_images=args.kmap_images,
        title=args.title,
        device=str(resolve_device(args.device)),
        progress=not args.no_progress,
        pdf=args.pdf,
    )
    print(f"report: {path}")
    return 0
