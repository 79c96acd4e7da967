"""The README cannot rot: every `softsae` command in it parses with today's CLI, and CI runs
exactly the README's test command."""

import shlex
from pathlib import Path

import pytest

from softsae_vision.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    lines = [line.strip() for line in README.splitlines() if line.startswith("    ")]
    return [line for line in lines if line.startswith("softsae ")]


def test_readme_has_commands_for_every_subcommand():
    used = {shlex.split(cmd)[1] for cmd in readme_commands()}
    assert used >= {"extract", "train", "eval", "features", "kmaps", "complexity", "report", "demo"}
    assert used >= {"compare", "downstream", "name"}


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.run)


def test_ci_runs_the_readme_test_command():
    test_command = next(
        line.strip() for line in README.splitlines() if "pytest" in line and "venv" in line
    )
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/softsae demo" in README  # the first of the two set-up commands


def test_readme_links_point_to_files():
    import re

    for target in re.findall(r"\]\(([^)#]+)\)", README):
        assert (ROOT / target).exists(), target
