"""The ``softsae`` command: one entry point, one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int``. The CLI is
thin: it parses, calls the library and prints. A :class:`SoftSAEError` becomes a one-line
message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from softsae_vision._version import __version__
from softsae_vision.errors import SoftSAEError

# Subcommand name -> module under softsae_vision.cli (imported lazily: torch is slow to import).
SUBCOMMANDS: dict[str, str] = {
    "extract": "extract",
    "train": "train",
    "eval": "evaluate",
    "features": "features",
    "kmaps": "kmaps",
    "complexity": "complexity",
    "report": "report",
    "demo": "demo",
}


def _available_modules() -> dict[str, object]:
    modules = {}
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
        prog="softsae", description="SoftSAE sparse autoencoders for vision transformers."
    )
    parser.add_argument("--version", action="version", version=f"softsae-vision {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _available_modules().items():
        module.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
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
