"""Arguments shared by the analysis subcommands (features, kmaps, complexity, report, compare)
and the one way they open a run/store pairing and call a ``write_*`` function."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_common(p: argparse.ArgumentParser, *, pdf: bool = True, several: bool = False) -> None:
    """RUN STORE --out DIR [--layer L] [--device D] [--no-progress] [--pdf | --no-pdf].

    Figures are always written as PNG; ``pdf`` is whether a PDF copy of each is written by
    default (true for the figure commands, false for the report, where it is the slow part).
    ``several``: RUN [RUN ...] STORE, parsed into ``args.paths`` (the report).
    """
    if several:
        p.add_argument(
            "paths", nargs="+", metavar="RUN [RUN ...] STORE", help="SAE runs, then the store"
        )
    else:
        p.add_argument("run_dir", metavar="RUN", help="SAE run directory (or its sae.safetensors)")
        p.add_argument("store", metavar="STORE", help="activation store made by `softsae extract`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for figures and tables")
    p.add_argument("--layer", default=None, help="store layer (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--pdf",
        action=argparse.BooleanOptionalAction,
        default=pdf,
        help=f"also save every figure as PDF, for papers (default: {'on' if pdf else 'off'})",
    )


def add_quantity(p: argparse.ArgumentParser) -> None:
    """--quantity: which k the kmaps and complexity commands measure."""
    p.add_argument(
        "--quantity",
        choices=("auto", "k_hat", "l0"),
        default="auto",
        help="k_hat (SoftSAE only) or l0 (realised active latents); auto picks k_hat if possible",
    )


def runs_and_last(paths: list[str], last: str) -> tuple[list[str], str]:
    """RUN [RUN ...] then one more path (``last`` names it in messages); every path must exist."""
    from pathlib import Path

    from softsae_vision.errors import SoftSAEError

    if len(paths) < 2:
        raise SoftSAEError(f"give at least one RUN and then {last}")
    *runs, final = paths
    for path in (*runs, final):
        if not Path(path).exists():
            raise SoftSAEError(f"no such file or directory: {path}")
    return runs, final


def write_with(
    args: argparse.Namespace, write: Callable[..., Any], **options: Any
) -> tuple[Any, Any]:
    """(pairing, result) of ``write(pairing, args.out, **options)`` on the run and store named
    by ``args``, with the device, progress bars and figure formats the common flags ask for."""
    pairing = open_pairing(args)
    result = write(
        pairing,
        args.out,
        device=device_of(pairing),
        progress=not args.no_progress,
        formats=formats_of(args),
        **options,
    )
    return pairing, result


def formats_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The figure formats ``--pdf`` / ``--no-pdf`` asks for: PNG, plus PDF if asked."""
    from softsae_vision.viz.style import figure_formats

    return figure_formats(args.pdf)


def open_pairing(args: argparse.Namespace):
    """The checked run/store pairing the arguments name."""
    from softsae_vision.analysis.pairing import pair

    return pair(args.run_dir, args.store, layer=args.layer, device=_device(args))


def device_of(pairing) -> str:
    """The device the pairing's SAE was loaded on (where analysis should run)."""
    return str(next(pairing.sae.parameters()).device)


def _device(args: argparse.Namespace) -> str:
    from softsae_vision.devices import resolve_device

    return str(resolve_device(args.device))


def feature_ids(text: str) -> list[int]:
    """Parse "3,17,40-42" into [3, 17, 40, 41, 42]."""
    ids: list[int] = []
    try:
        for part in filter(None, (s.strip() for s in text.split(","))):
            lo, _, hi = part.partition("-")
            ids += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected feature ids like 3,17,40-42, got {text!r}"
        ) from None
    if not ids:
        raise argparse.ArgumentTypeError("no feature ids given")
    return ids
