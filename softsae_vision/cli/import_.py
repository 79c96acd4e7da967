"""``softsae import SRC --out RUN``: convert another toolkit's SAE file into a native run."""

from __future__ import annotations

import argparse

FORMAT_HELP = (
    "source layout (default: detected): dictionary_learning[:softsae|:topk|:batchtopk], "
    "saelens, sparsify, saev"
)


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="import an SAE from another toolkit",
        description="Read an SAE saved by dictionary_learning (incl. the SoftSAE paper's code), "
        "SAELens, sparsify or saev — a path or hf://ORG/REPO[/SUBDIR][@REV] — and write a "
        "softsae_vision run directory that every command accepts.",
    )
    p.add_argument("source", metavar="SRC", help="file or folder in another toolkit's format")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--format", default=None, help=FORMAT_HELP)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from softsae_vision.errors import SoftSAEError
    from softsae_vision.sae.importers import import_sae, resolve_source

    out = Path(args.out)
    if (out / "config.json").exists():
        raise SoftSAEError(f"{out} already holds a run; choose another --out")
    local, fmt = resolve_source(args.source, args.format)
    if fmt == "native":
        raise SoftSAEError(f"{args.source} is already a softsae_vision run; use it directly")
    sae, info = import_sae(local, fmt)
    info = {**info, "source": str(args.source)}
    sae.save(out, extra_config={"imported_from": info, "data": {"kind": "imported"}})
    print(
        f"imported {info['format']} SAE ({sae.architecture}, d={sae.d_in}, F={sae.n_latents}) "
        f"to {out}"
    )
    return 0
