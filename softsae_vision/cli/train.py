"""``softsae train DATA --out RUN``: train an SAE on a .npy array or an activation store."""

from __future__ import annotations

import argparse
import json

ARCHES = ("softsae", "topk", "batchtopk", "matryoshka", "relu")
TOKEN_CHOICES = ("patch", "cls", "register", "all", "embed")


def add_store_args(p: argparse.ArgumentParser, layer_help: str, tokens_help: str) -> None:
    """--layer and --tokens, which pick rows from an activation store (train and eval)."""
    p.add_argument("--layer", default=None, help=layer_help)
    p.add_argument("--tokens", default=None, choices=TOKEN_CHOICES, help=tokens_help)


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="train an SAE",
        description="Train an SAE. DATA is a .npy file of shape (N, d) or a store directory.",
    )
    p.add_argument("data", metavar="DATA", help=".npy file (N, d) or activation store directory")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to create")
    p.add_argument("--arch", default="softsae", choices=ARCHES, help="SAE architecture")
    p.add_argument("--k", type=float, default=32, help="target mean number of active latents")
    p.add_argument("--n-latents", type=int, default=4096, help="dictionary size F")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=4096, help="activation vectors per step")
    p.add_argument("--lr", type=float, default=6e-4, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed for init and data order")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    add_store_args(
        p,
        layer_help="store layer: block index or 'embed' (default: the store's only layer)",
        tokens_help="store token type to train on (default: patch, or embed for the embed layer)",
    )
    soft = p.add_argument_group("SoftSAE")
    soft.add_argument("--k-max", type=float, default=None, help="largest k̂ (default 4·k)")
    soft.add_argument(
        "--estimator",
        default="paper",
        choices=("paper", "lean"),
        help="k estimator: 'paper' (MLP on the input, width n_latents) or 'lean' (small MLP on "
        "the encoder's pre-activations, much cheaper)",
    )
    soft.add_argument(
        "--estimator-hidden",
        type=int,
        default=None,
        help="k-estimator hidden width (default: n_latents for paper, 64 for lean)",
    )
    soft.add_argument("--alpha", type=float, default=1e-4, help="final soft top-k temperature")
    soft.add_argument(
        "--alpha-start",
        type=float,
        default=None,
        help="anneal α from this value (default: no annealing)",
    )
    soft.add_argument("--hard-frac", type=float, default=0.15, help="final hard-top-k fraction")
    p.add_argument("--l1-coeff", type=float, default=5e-3, help="L1 weight (relu arch)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)


def build_sae(args: argparse.Namespace, d_in: int):
    """Construct the requested architecture from CLI arguments."""
    from softsae_vision.sae import SAE_REGISTRY

    kwargs: dict = {"seed": args.seed}
    if args.arch == "softsae":
        kwargs.update(
            k=args.k,
            k_max=args.k_max,
            estimator=args.estimator,
            estimator_hidden=args.estimator_hidden,
        )
    elif args.arch == "relu":
        kwargs.update(l1_coeff=args.l1_coeff)
    else:
        if args.k != int(args.k):
            from softsae_vision.errors import SoftSAEError

            raise SoftSAEError(f"--arch {args.arch} needs an integer --k, got {args.k}")
        kwargs.update(k=int(args.k))
    return SAE_REGISTRY[args.arch](d_in, args.n_latents, **kwargs)


def run(args: argparse.Namespace) -> int:
    from softsae_vision.data.sources import open_source
    from softsae_vision.training import TrainConfig, train

    source = open_source(args.data, layer=args.layer, tokens=args.tokens)
    sae = build_sae(args, source.d)
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        alpha=args.alpha,
        alpha_start=args.alpha_start,
        hard_frac=args.hard_frac,
    )
    result = train(
        sae, source, cfg, run_dir=args.out, resume=args.resume, progress=not args.no_progress
    )
    summary = {k: v for k, v in result.final_metrics.items() if k != "phase"}
    print(f"trained {args.arch} SAE saved to {args.out}")
    print(json.dumps({k: round(v, 5) for k, v in summary.items()}))
    return 0
