"""The command line answers at once: no torch for --help or path errors; flags say defaults."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time

import pytest

from softsae_vision.cli import HelpFormatter, _QuietLibraries, build_parser, main

PROBE = """
import sys, time
start = time.perf_counter()
from softsae_vision.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(f"RESULT {code} {'torch' in sys.modules} {time.perf_counter() - start:.3f}", file=sys.stderr)
"""


def _probe(*argv: str) -> tuple[int, bool, float, str]:
    """Run the CLI in a fresh interpreter: (exit code, torch imported?, wall seconds, stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=60
    )
    wall = time.perf_counter() - start
    code, torch_loaded, _ = proc.stderr.strip().splitlines()[-1].split()[1:]
    return int(code), torch_loaded == "True", wall, proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["features", "--help"],
        ["features", "/no/such/run", "/no/such/store", "--out", "x"],
        ["kmaps", "hf://org/repo", "/no/such/store", "--out", "x"],
        ["train", "/no/such/data.npy", "--out", "x"],
        ["eval", "/no/such/run", "/no/such/data.npy"],
        ["extract", "timm/test_vit", "/no/such/folder", "--out", "x"],
        ["extract", "timm/test_vit", "/", "--out", "x", "--checkpoint", "/no/such.pth"],
        ["name", "/", "--model", "open_clip/ViT-B-32", "--vocab", "/no/such/words.txt"],
    ],
)
def test_help_and_path_errors_do_not_import_torch(argv):
    code, torch_loaded, wall, stderr = _probe(*argv)
    assert not torch_loaded, f"{argv} imported torch"
    assert code == (0 if argv[-1] in ("--help", "--version") else 2), stderr
    assert wall < 10  # well under 2 s on an idle machine; generous for a loaded CI runner
    if code == 2:
        message = [line for line in stderr.splitlines() if "error:" in line]
        assert len(message) == 1 and "/no/such" in message[0], stderr


def test_store_without_meta_is_refused_before_loading(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["kmaps", str(tmp_path / "run"), str(tmp_path), "--out", "x"]) == 2
    assert "not an activation store (no meta.json)" in capsys.readouterr().err


def test_negative_layer_lists_work_as_typed(tmp_path):
    parser = build_parser()
    from softsae_vision.cli import join_negative_values

    argv = ["extract", "m", "imgs", "--out", "s", "--layers", "-1,6", "--batch-size", "4"]
    args = parser.parse_args(join_negative_values(parser, argv))
    assert args.layers == ["-1", "6"] and args.batch_size == 4
    argv = ["extract", "m", "imgs", "--layers", "-2", "--out", "s", "--no-progress"]
    assert parser.parse_args(join_negative_values(parser, argv)).layers == ["-2"]
    argv = ["train", "d.npy", "--out", "r", "--layer", "-1"]
    assert parser.parse_args(join_negative_values(parser, argv)).layer == "-1"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_says_its_default_and_every_command_has_help():
    missing = []
    for name, sub in _subparsers(build_parser()).items():
        assert sub.description, f"`softsae {name}` has no description"
        formatter = HelpFormatter(name)
        for action in sub._actions:
            if (
                not action.option_strings
                or action.required
                or isinstance(action, argparse._HelpAction)
            ):
                continue
            if action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction):
                continue  # a plain switch: off unless given
            text = formatter._expand_help(action) if action.help else ""
            if "default" not in text.lower():
                missing.append(f"{name} {action.option_strings[0]}: {text!r}")
    assert not missing, missing


def test_help_shows_numeric_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 0)" in out and "(default: 4096)" in out and "(default: softsae)" in out


def test_open_clip_info_lines_are_dropped():
    quiet = _QuietLibraries()
    path = os.path.join("site-packages", "open_clip", "factory.py")
    info = logging.LogRecord("root", logging.INFO, path, 1, "Loaded ViT config", None, None)
    warning = logging.LogRecord("root", logging.WARNING, path, 1, "careful", None, None)
    ours = logging.LogRecord("softsae_vision.x", logging.INFO, "x.py", 1, "hi", None, None)
    assert not quiet.filter(info) and quiet.filter(warning) and quiet.filter(ours)
