"""``softsae compare RUN [RUN ...] DATA --out DIR``: several runs on the same held-out data."""

from __future__ import annotations

import argparse

from softsae_vision.cli._analysis_args import runs_and_last
from softsae_vision.cli.train import add_store_args


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="compare runs: FVU against L0 fronts, per-token-type metrics, seed stability",
        description=(
            "Evaluate every RUN on DATA (a .npy file or a store; by default each run on the layer "
            "and tokens it was trained on), draw FVU against mean realised L0 with each "
            "architecture's runs joined as a front, tabulate each baseline's FVU at SoftSAE's "
            "mean L0 (interpolated along the baseline's front), and, for runs that differ only "
            "in seed, the Hungarian-matched cosine of their decoder atoms."
        ),
    )
    p.add_argument(
        "paths", nargs="+", metavar="RUN [RUN ...] DATA", help="run directories, then the data"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the figure and tables")
    add_store_args(
        p,
        layer_help="store layer (default: each run's own)",
        tokens_help="store token types (default: each run's own; 'all' gives every type)",
    )
    p.add_argument("--batch-size", type=int, default=4096, help="rows per evaluation batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--pdf",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also save the figure as PDF (default: on)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    runs, data = runs_and_last(args.paths, "DATA (a .npy file or a store)")

    from softsae_vision.analysis.compare import compare_runs
    from softsae_vision.devices import resolve_device
    from softsae_vision.viz.compare import markdown_table, write_comparison
    from softsae_vision.viz.style import figure_formats

    comparison = compare_runs(
        runs,
        data,
        layer=args.layer,
        tokens=args.tokens,
        batch_size=args.batch_size,
        device=str(resolve_device(args.device)),
    )
    files = write_comparison(comparison, args.out, figure_formats(args.pdf))
    print((Path(args.out) / "compare.md").read_text(), end="")
    if comparison.at_softsae_l0:
        print("\nFVU at SoftSAE's mean L0:")
        print(files.tables["fvu_at_l0.md"].read_text(), end="")
    if comparison.stability:
        print("\nSeed stability (Hungarian-matched decoder atoms):")
        print(
            markdown_table(
                [
                    {k: r[k] for k in ("run_a", "run_b", "mean_cosine", "frac_above")}
                    for r in comparison.stability
                ]
            ),
            end="",
        )
    print(f"\nfigure: {files.figure[0]}")
    return 0
