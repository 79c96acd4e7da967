"""The ``softsae`` command: one entry point, one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int``. The CLI is
thin: it parses, calls the library and prints. A :class:`SoftSAEError` becomes a one-line
message on stderr and exit status 2, never a traceback.

Building the parser imports no heavy library (torch, timm, open_clip, matplotlib): subcommand
modules import them inside ``run``, and the paths named on the command line are checked here
first, so ``--help``, ``--version`` and mistakes in arguments or paths answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from softsae_vision._version import __version__
from softsae_vision.errors import SoftSAEError

# Subcommand name -> module under softsae_vision.cli.
SUBCOMMANDS: dict[str, str] = {
    "extract": "extract",
    "train": "train",
    "eval": "evaluate",
    "features": "features",
    "kmaps": "kmaps",
    "complexity": "complexity",
    "report": "report",
    "demo": "demo",
    "compare": "compare",
    "downstream": "downstream",
    "name": "name",
    "import": "import_",
    "push": "push",
    "sweep": "sweep",
}

_NEGATIVE_LIST = re.compile(r"^-\d+(\.\d+)?(,\s*-?\w+)*,?$")
"""A value such as ``-1,6`` or ``-2``: argparse would take a leading ``-1,6`` for an option."""


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default, unless the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text.lower()
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or isinstance(action, argparse._VersionAction | argparse._HelpAction)
        ):
            return text
        if isinstance(default, list | tuple):
            default = ",".join(map(str, default))
        shown = str(default).replace("%", "%%")
        return f"{text} (default: {shown})" if text else f"default: {shown}"


def _available_modules() -> dict[str, ModuleType]:
    modules: dict[str, ModuleType] = {}
    for name, module_name in SUBCOMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"softsae_vision.cli.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"softsae_vision.cli.{module_name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="softsae",
        description="SoftSAE sparse autoencoders for vision transformers.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"softsae-vision {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _available_modules().items():
        module.add_parser(sub, name)
        sub.choices[name].formatter_class = HelpFormatter
    return parser


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings (of the parser and its subcommands) that take a value."""
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
    return {
        option
        for p in parsers
        for option, action in p._option_string_actions.items()
        if action.nargs != 0 and option.startswith("--")
    }


def join_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Turn ``--layers -1,6`` into ``--layers=-1,6``, which argparse would read as two options."""
    takes_value = _value_options(parser)
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in takes_value and _NEGATIVE_LIST.match(arg) and arg != "--":
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


# Arguments that name existing paths: dest -> (what it is, how to get one).
_PATH_ARGS: dict[str, tuple[str, str]] = {
    "run_dir": ("RUN", "a run directory made by `softsae train` (or its sae.safetensors)"),
    "store": ("STORE", "an activation store made by `softsae extract`"),
    "data": ("DATA", "a .npy file (N, d) or an activation store made by `softsae extract`"),
    "images": ("IMAGES", "an image folder or a text file of image paths"),
    "checkpoint": ("--checkpoint", "a local weights file for the model"),
    "vocab": ("--vocab", "a text file of words, one per line"),
}


def check_paths(args: argparse.Namespace) -> None:
    """Fail fast, before any heavy import, on a path argument that does not exist."""
    for dest, (label, expected) in _PATH_ARGS.items():
        value = getattr(args, dest, None)
        if not isinstance(value, str | os.PathLike) or str(value).startswith("hf://"):
            continue
        path = Path(value)
        if dest == "checkpoint" and not path.is_file():
            raise SoftSAEError(f"checkpoint file not found: {path}; expected {expected}")
        if not path.exists():
            raise SoftSAEError(f"no such folder or file: {path} ({label}: {expected})")
        if dest == "store" and not (path / "meta.json").is_file():
            raise SoftSAEError(
                f"{path} is not an activation store (no meta.json); make one with `softsae extract`"
            )


class _QuietLibraries(logging.Filter):
    """Drop the INFO chatter that open_clip writes to the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return f"{os.sep}open_clip{os.sep}" not in record.pathname and not record.name.startswith(
            "matplotlib"
        )


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_QuietLibraries())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(join_negative_values(parser, argv))
    _configure_logging(args.verbose)
    try:
        check_paths(args)
        if getattr(args, "run_dir", None):
            from softsae_vision.sae.importers import as_run_dir  # hf:// and other toolkits' files

            args.run_dir = as_run_dir(args.run_dir)
        return int(args.run(args) or 0)
    except SoftSAEError as err:
        print(f"softsae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        detail = f"; {err}" if str(err) else ""
        print(f"softsae {args.command}: interrupted{detail}", file=sys.stderr)
        return 130
    except OSError as err:  # read-only output, full disk, permissions: one line with the path
        where = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
        reason = err.strerror or str(err)
        print(
            f"softsae {args.command}: error: {f'{where}: ' if where else ''}{reason}; check the "
            "path, its permissions and the free disk space",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
