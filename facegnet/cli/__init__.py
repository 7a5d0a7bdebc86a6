"""The ``facegnet`` command line: a thin layer over the Python API.

Each sub-command lives in its own module that exposes ``register(subparsers)``; the parser it adds sets
``func=run`` where ``run(args) -> int`` does the work through the API and returns the exit code.
Errors the user can cause are :class:`facegnet.errors.FacegnetError`: they become one line on stderr
and a non-zero exit code, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from facegnet.errors import FacegnetError

# Sub-command modules, in the order ``facegnet --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "facegnet.cli.verify",
    "facegnet.cli.evaluate",
    "facegnet.cli.gallery",
    "facegnet.cli.prepare",
    "facegnet.cli.train",
    "facegnet.cli.export",
    "facegnet.cli.serve",
    "facegnet.cli.cluster",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command registered."""
    from facegnet import __version__

    parser = argparse.ArgumentParser(
        prog="facegnet",
        description="Face detection, verification and identification with a GhostNet embedding network.",
    )
    parser.add_argument("--version", action="version", version=f"facegnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FacegnetError as exc:
        print(f"facegnet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("facegnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `facegnet identify ... | head`
        return 0


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
