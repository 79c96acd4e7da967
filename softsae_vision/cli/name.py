"""``softsae name RUN --model open_clip/... --vocab WORDS.txt``: name features with CLIP."""

from __future__ import annotations

import argparse


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="name features by a CLIP model's text embeddings of a vocabulary",
        description=(
            "Write RUN/features.json with a name per feature. For SAEs of a CLIP model's "
            "'embed' layer: the vocabulary entry whose text embedding is nearest the feature's "
            "decoder atom. For other layers (pass --store): the most frequent zero-shot label, "
            "over the vocabulary, of the feature's top-activating images. `softsae report` "
            "shows the names."
        ),
    )
    p.add_argument("run_dir", metavar="RUN", help="SAE run directory")
    p.add_argument("--model", required=True, help="CLIP model: open_clip/<arch>:<tag>")
    p.add_argument("--vocab", required=True, metavar="FILE", help="words or phrases, one a line")
    p.add_argument(
        "--store",
        default=None,
        help="activation store (needed for layers other than embed; default: none)",
    )
    p.add_argument("--top", type=int, default=8, help="top images per feature (default: 8)")
    p.add_argument(
        "--prompt", default="{}", help="text template for each word (default: '{}', the word)"
    )
    p.add_argument("--no-pretrained", action="store_true", help="random CLIP weights (tests)")
    p.add_argument(
        "--checkpoint", default=None, metavar="FILE", help="local CLIP weights (default: none)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from softsae_vision.errors import SoftSAEError

    if "{}" not in args.prompt:
        raise SoftSAEError(f"--prompt {args.prompt!r} must contain {{}} where the word goes")
    # RUN, --vocab and --store were checked by the CLI before any heavy import (cli.check_paths).

    from softsae_vision._io import write_json_atomic
    from softsae_vision.analysis.naming import NAMES_FILE, name_features
    from softsae_vision.devices import resolve_device

    result = name_features(
        args.run_dir,
        args.model,
        args.vocab,
        store=args.store,
        n_top=args.top,
        prompt=args.prompt,
        pretrained=not args.no_pretrained,
        checkpoint=args.checkpoint,
        device=str(resolve_device(args.device)),
    )
    run_dir = Path(args.run_dir)
    run_dir = run_dir.parent if run_dir.suffix == ".safetensors" else run_dir
    write_json_atomic(run_dir / NAMES_FILE, result)
    for entry in result["features"][:10]:
        print(f"feature {entry['feature']:6d}  {entry['name']}  ({entry['score']:.3f})")
    print(f"{len(result['features'])} names ({result['method']}) written to {run_dir / NAMES_FILE}")
    return 0
