"""``softsae train DATA --out RUN``: train an SAE on a .npy array or an activation store."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os

from softsae_vision.sae_configs import ARCH_CONFIGS
from softsae_vision.vocab import TOKEN_CHOICES

ARCHES = tuple(ARCH_CONFIGS)


# Numeric flags of `train` and the range each must lie in: (low, high, low excluded).
NUMBER_RULES: dict[str, tuple[float | None, float | None, bool]] = {
    "k": (None, None, False),  # range checked by the architecture ("0 < k < n_latents")
    "n_latents": (1, None, False),
    "steps": (1, None, False),
    "batch_size": (1, None, False),
    "lr": (0, None, True),
    "seed": (0, 2**32 - 1, False),
    "checkpoint_every": (1, None, False),
    "k_max": (0, None, True),
    "estimator_hidden": (1, None, False),
    "alpha": (0, None, True),
    "alpha_start": (0, None, True),
    "hard_frac": (0, 1, False),
    "l1_coeff": (0, None, False),
}


def check_numbers(args: argparse.Namespace, rules: dict) -> None:
    """Raise a one-line SoftSAEError for a numeric flag that is not finite or out of range."""
    from softsae_vision.errors import SoftSAEError

    for name, (low, high, strict) in rules.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        bound = []
        if low is not None:
            bound.append(f"{'>' if strict else '>='} {low}")
        if high is not None:
            bound.append(f"<= {high}")
        wanted = f"a finite number {' and '.join(bound)}".rstrip()
        if (
            not math.isfinite(value)
            or (low is not None and (value <= low if strict else value < low))
            or (high is not None and value > high)
        ):
            raise SoftSAEError(f"{flag} must be {wanted}, got {value}")


def add_store_args(p: argparse.ArgumentParser, layer_help: str, tokens_help: str) -> None:
    """--layer and --tokens, which pick rows from an activation store (train and eval)."""
    p.add_argument("--layer", default=None, help=layer_help)
    p.add_argument("--tokens", default=None, choices=TOKEN_CHOICES, help=tokens_help)


def add_parser(sub, name: str) -> None:
    from softsae_vision.cli.config_flags import add_config_flags, add_dataclass_flags
    from softsae_vision.training.config import TrainConfig

    p = sub.add_parser(
        name,
        help="train an SAE",
        description="Train an SAE. DATA is a .npy file of shape (N, d) or a store directory. "
        "The architecture flags come from the architectures' config dataclasses "
        "(softsae_vision.sae_configs), the training flags from TrainConfig.",
    )
    p.add_argument("data", metavar="DATA", help=".npy file (N, d) or activation store directory")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to create")
    p.add_argument("--arch", default="softsae", choices=ARCHES, help="SAE architecture")
    p.add_argument("--n-latents", type=int, default=4096, help="dictionary size F")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    add_store_args(
        p,
        layer_help="store layer: block index or 'embed' (default: the store's only layer)",
        tokens_help="store token type to train on (default: patch, or embed for the embed layer)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: log a plain progress line now and then (the default when stderr "
        "is not a terminal)",
    )
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.add_argument(
        "--log",
        action="append",
        default=[],
        choices=("tensorboard", "wandb"),
        help="also send the metrics.jsonl lines to TensorBoard (RUN/tensorboard) or Weights & "
        "Biases; repeat for both (off by default; needs the package)",
    )
    add_config_flags(p, ARCH_CONFIGS)
    add_dataclass_flags(p.add_argument_group("training (TrainConfig)"), TrainConfig)
    p.set_defaults(run=run)


def build_sae(args: argparse.Namespace, d_in: int):
    """Construct the requested architecture from CLI arguments (its config from the flags)."""
    from softsae_vision.cli.config_flags import config_from_args
    from softsae_vision.sae import SAE_REGISTRY

    cls = SAE_REGISTRY[args.arch]
    config = config_from_args(cls.config_class, args, owner=f"--arch {args.arch}")
    return cls.from_config(d_in, args.n_latents, config, seed=args.seed)


# Final-batch metrics worth a summary line, and the architectures they apply to (None: all).
SUMMARY_FIELDS: dict[str, tuple[str, ...] | None] = {
    "loss": None,
    "mse": None,
    "aux": None,
    "l0_mean": None,
    "l0_std": None,
    "dead_frac": None,
    "k_hat_mean": ("softsae",),
    "k_hat_std": ("softsae",),
    "k_hat_min": ("softsae",),
    "k_hat_max": ("softsae",),
    "loss_k": ("softsae",),
}


def summary(arch: str, metrics: dict, aux_used: bool = True) -> dict:
    """The final metrics that apply to ``arch``, rounded for display."""
    out = {}
    for key, arches in SUMMARY_FIELDS.items():
        if key in metrics and (arches is None or arch in arches) and (key != "aux" or aux_used):
            out[key] = round(float(metrics[key]), 5)
    return out


def format_summary(arch: str, out: str, result, fields: dict) -> str:
    """A few readable lines: what was trained, where it is, its last-batch metrics, what next."""
    took = f" in {result.seconds:.1f} s" if result.steps_run else ""
    lines = [f"trained {arch} SAE: {result.steps_run} steps{took}, saved to {out}"]
    parts = [f"mse {fields['mse']:.4g}"] if "mse" in fields else []
    if "l0_mean" in fields:
        parts.append(f"L0 {fields['l0_mean']:.1f} ± {fields.get('l0_std', 0):.1f}")
    if "dead_frac" in fields:
        parts.append(f"dead {100 * fields['dead_frac']:.1f}%")
    if "k_hat_mean" in fields:
        parts.append(
            f"k̂ {fields['k_hat_mean']:.1f} (range {fields['k_hat_min']:.1f}-"
            f"{fields['k_hat_max']:.1f})"
        )
    if parts:
        lines.append("  last batch: " + ", ".join(parts))
    lines.append(f"  evaluate it: softsae eval {out} DATA")
    return "\n".join(lines)


def build_config(args: argparse.Namespace):
    """The TrainConfig the CLI flags describe (shared by train and sweep)."""
    from softsae_vision.cli.config_flags import config_from_args
    from softsae_vision.training import TrainConfig

    return config_from_args(TrainConfig, args, owner="TrainConfig")


def quiet_unless_main_rank() -> bool:
    """Under torchrun only rank 0 logs progress and prints the summary; True on rank 0."""
    if os.environ.get("RANK", "0") == "0":
        return True
    logging.getLogger("softsae_vision").setLevel(logging.WARNING)
    return False


def run(args: argparse.Namespace) -> int:
    check_numbers(args, NUMBER_RULES)
    from softsae_vision.data.source import open_source
    from softsae_vision.training import train

    main_rank = quiet_unless_main_rank()
    cfg = build_config(args)
    source = open_source(args.data, layer=args.layer, tokens=args.tokens)
    sae = build_sae(args, source.d)
    result = train(
        sae,
        source,
        cfg,
        run_dir=args.out,
        resume=args.resume,
        progress=not args.no_progress,
        log_to=args.log,
    )
    fields = summary(args.arch, result.final_metrics, aux_used=cfg.aux_coeff > 0)
    if not main_rank:
        return 0
    if args.json:
        done = {"already_complete": True} if result.already_complete else {}
        print(json.dumps({"run": str(args.out), "steps_run": result.steps_run, **done, **fields}))
    elif result.already_complete:
        print(
            f"{args.out} is already complete ({cfg.steps} steps); nothing to do. "
            f"Evaluate it with: softsae eval {args.out} DATA"
        )
    else:
        print(format_summary(args.arch, args.out, result, fields))
    return 0
