"""``softsae push RUN ORG/REPO``: upload a run's weights, config and a model card to the Hub."""

from __future__ import annotations

import argparse


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="upload a run to the Hugging Face Hub",
        description="Upload sae.safetensors, config.json and a generated model card (README.md) "
        "to a Hub model repo, created if needed; load it back with hf://ORG/REPO.",
    )
    p.add_argument("run_dir", metavar="RUN", help="SAE run directory")
    p.add_argument("repo", metavar="ORG/REPO", help="Hub model repository")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p.add_argument("--message", default="Upload SAE with softsae-vision", help="commit message")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softsae_vision.hub import push_to_hub

    url = push_to_hub(
        args.run_dir,
        args.repo,
        private=args.private,
        revision=args.revision,
        commit_message=args.message,
    )
    print(f"pushed {args.run_dir} to {args.repo}: {url}")
    return 0
