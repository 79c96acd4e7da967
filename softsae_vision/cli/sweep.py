"""``softsae sweep DATA --out DIR --arch A,B --k K1,K2``: several SAEs on one pass over the data.

Takes every flag of ``softsae train``; ``--arch`` and ``--k`` take comma-separated lists and
every combination is trained on the same batches (read once), each in ``DIR/<arch>-k<K>/``.
"""

from __future__ import annotations

import argparse
import copy
import json

from softsae_vision.cli import train as train_cli


def _list(kind):
    def parse(text: str) -> list:
        items = [t.strip() for t in str(text).split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of {kind.__name__}: {text!r}") from None

    return parse


def add_parser(sub, name: str) -> None:
    train_cli.add_parser(sub, name)  # the same flags as `softsae train`, then adapted
    p = sub.choices[name]
    p.description = (
        "Train several SAEs on the same batches, read once: every combination of --arch and "
        "--k, each in DIR/<arch>-k<K>/. DATA is a .npy file of shape (N, d) or a store."
    )
    for action in p._actions:
        if action.dest == "arch":
            action.type, action.choices, action.default = _list(str), None, ["softsae"]
            action.help = f"comma-separated architectures from {', '.join(train_cli.ARCHES)}"
            action.metavar = "A,B"
        elif action.dest == "k":
            action.type, action.default = _list(float), [32.0]
            action.help = "comma-separated target mean numbers of active latents"
            action.metavar = "K1,K2"
        elif action.dest == "out":
            action.metavar, action.help = "DIR", "folder for the member runs"
        elif action.dest == "resume":
            action.help = "continue an interrupted sweep in --out"
    sub._choices_actions[-1].help = "train several SAEs on one pass over the data"
    p.set_defaults(run=run)


def member_name(arch: str, k: float) -> str:
    """DIR/<arch>-k<K>: the run folder of one member."""
    return f"{arch}-k{k:g}"


def run(args: argparse.Namespace) -> int:
    from softsae_vision.data.source import open_source
    from softsae_vision.errors import SoftSAEError
    from softsae_vision.training.sweep import train_many

    bad = [a for a in args.arch if a not in train_cli.ARCHES]
    if bad:
        raise SoftSAEError(
            f"--arch: unknown architecture(s) {', '.join(bad)}; use {', '.join(train_cli.ARCHES)}"
        )
    rules = dict(train_cli.NUMBER_RULES)
    k_rule = {"k": rules.pop("k")}
    train_cli.check_numbers(args, rules)
    for k in args.k:
        train_cli.check_numbers(argparse.Namespace(k=k), k_rule)
    main_rank = train_cli.quiet_unless_main_rank()
    source = open_source(args.data, layer=args.layer, tokens=args.tokens)
    saes = {}
    for arch in dict.fromkeys(args.arch):
        for k in dict.fromkeys(args.k):
            one = copy.copy(args)
            one.arch, one.k = arch, k
            saes[member_name(arch, k)] = train_cli.build_sae(one, source.d)
    results = train_many(
        saes,
        source,
        train_cli.build_config(args),
        out=args.out,
        resume=args.resume,
        progress=not args.no_progress,
    )
    cfg = train_cli.build_config(args)
    for name, result in results.items():
        if not main_rank:
            break
        arch = saes[name].architecture
        fields = train_cli.summary(arch, result.final_metrics, aux_used=cfg.aux_coeff > 0)
        if args.json:
            print(json.dumps({"run": str(result.run_dir), "steps_run": result.steps_run, **fields}))
        elif result.already_complete:
            print(f"{result.run_dir} is already complete; nothing to do")
        else:
            print(train_cli.format_summary(arch, str(result.run_dir), result, fields))
    return 0
