"""``softsae features RUN STORE --out DIR``: top-activating images of features, with heat maps."""

from __future__ import annotations

import argparse

from softsae_vision.cli._analysis_args import add_common, feature_ids, write_with


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="top-activating images per feature, with patch heat maps",
        description=(
            "Scan the store once with the SAE and draw, per feature, its top images with the "
            "feature's activation over the patch grid (or whole images, for CLS-token SAEs), "
            "plus an index figure of many features."
        ),
    )
    add_common(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--features",
        type=feature_ids,
        default=None,
        help="ids, e.g. 3,17,40-42 (default: chosen by --select)",
    )
    which.add_argument(
        "--select",
        choices=("top", "random", "rare"),
        default="top",
        help="top: strongest activations; random; rare: lowest firing frequency (default top)",
    )
    p.add_argument("--n-features", type=int, default=16, help="features to draw with --select")
    p.add_argument("--top", type=int, default=8, help="top images per feature")
    p.add_argument("--seed", type=int, default=0, help="seed for --select random")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softsae_vision.viz.features import write_features

    pairing, result = write_with(
        args,
        write_features,
        features=args.features,
        select=args.select,
        n_features=args.n_features,
        n_top=args.top,
        seed=args.seed,
    )
    print(
        f"{len(result.figures)} feature figures and the index in {result.out} "
        f"({result.n_dead} of {pairing.sae.n_latents} features never fire on this store)"
    )
    return 0
