"""``softsae eval RUN DATA``: pooled held-out metrics in raw activation space."""

from __future__ import annotations

import argparse
import json
import sys

from softsae_vision.cli.train import add_store_args, check_numbers


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="evaluate an SAE run on held-out data",
        description=(
            "Reconstruction and sparsity metrics of a trained SAE on activations it did not "
            "train on (FVU, cosine similarity, mean L0, dead latents; k̂ statistics for a "
            "SoftSAE), pooled over DATA and, for a store, per token type. DATA is read at the "
            "run's layer and token type unless --layer/--tokens say otherwise."
        ),
    )
    p.add_argument("run_dir", metavar="RUN", help="run directory (or its sae.safetensors)")
    p.add_argument("data", metavar="DATA", help=".npy file (N, d) or activation store directory")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_store_args(
        p,
        layer_help="store layer (default: the run's)",
        tokens_help="store token type (default: the run's)",
    )
    p.add_argument(
        "--batch-size", type=int, default=4096, help="rows per evaluation batch (default 4096)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(run=run)


def format_metrics(metrics: dict, indent: str = "") -> str:
    """Human-readable metrics, one per line, groups indented below."""
    lines = []
    for key, value in metrics.items():
        if key == "groups":
            for group, sub in value.items():
                lines.append(f"{indent}[{group}]")
                lines.append(format_metrics(sub, indent + "  "))
        elif isinstance(value, float):
            lines.append(f"{indent}{key:<14} {value:.5g}")
        else:
            lines.append(f"{indent}{key:<14} {value}")
    return "\n".join(lines)


def data_warnings(trained_on: dict, source_description: dict) -> list[str]:
    """Ways the evaluation data differ from what the SAE was trained on (layer, tokens)."""
    if trained_on.get("kind") != "store" or source_description.get("kind") != "store":
        return []
    out = []
    for key, flag in (("layer", "--layer"), ("tokens", "--tokens")):
        was, now = trained_on.get(key), source_description.get(key)
        if was is not None and now is not None and was != now:
            out.append(
                f"the SAE was trained on {key} {was!r} but is evaluated on {key} {now!r} "
                f"({flag}); its metrics there measure transfer, not fit"
            )
    return out


def run(args: argparse.Namespace) -> int:
    check_numbers(args, {"batch_size": (1, None, False)})
    from pathlib import Path

    from softsae_vision.data.sources import open_source
    from softsae_vision.errors import SoftSAEError
    from softsae_vision.sae import load_run
    from softsae_vision.training import evaluate

    loaded = load_run(args.run_dir)
    sae, trained_on = loaded.sae, loaded.data
    layer, tokens = args.layer, args.tokens
    if Path(args.data).is_dir() and trained_on.get("kind") == "store":
        layer = layer if layer is not None else trained_on.get("layer")
        tokens = tokens or trained_on.get("tokens")
    source = open_source(args.data, layer=layer, tokens=tokens)
    if source.d != sae.d_in:
        raise SoftSAEError(
            f"data width d={source.d} does not match the SAE's d_in={sae.d_in}; "
            "evaluate on activations from the layer the SAE was trained on"
        )
    warnings = data_warnings(trained_on, source.describe())
    metrics = evaluate(sae, source.iter_eval(args.batch_size), device=args.device)
    fvu = metrics.get("fvu")
    if isinstance(fvu, float) and fvu > 1:
        warnings.append(
            f"FVU {fvu:.3g} > 1: the SAE reconstructs these activations worse than their mean "
            "does; check that DATA comes from the layer and token type it was trained on"
        )
    for text in warnings:
        print(f"softsae eval: warning: {text}", file=sys.stderr)
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))
    return 0
