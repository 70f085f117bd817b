"""The ``hwkit`` command line: thin, it parses arguments and calls the library.

:data:`COMMANDS` is the one table of subcommands. Each names a module with ``add_parser(sub)`` (registers
the subcommand; imports nothing heavy) and ``run(args) -> int``. Adding a method's command means adding
one line here and a ``cli.py`` in the method's folder.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hwkit import __version__
from hwkit.errors import HwkitError

COMMANDS: dict[str, str] = {
    "compile": "hwkit.cli.compile",
    "boards": "hwkit.cli.boards",
    "flows": "hwkit.cli.flows",
    "report": "hwkit.cli.report",
    "measure-power": "hwkit.energy.measure",
    "prune": "hwkit.compress.amp.cli",
    "quantize": "hwkit.compress.quantize.cli",
    "shiftadd": "hwkit.compress.shiftadd.cli",
    "compare": "hwkit.cli.compare",
    "bench": "hwkit.cli.bench",
    "train": "hwkit.compress.cqmlp.cli",
    "explore": "hwkit.explore.cli",
    "doctor": "hwkit.cli.doctor",
    "design-hash": "hwkit.cli.design_hash",
}
"""Subcommand -> module with ``add_parser(sub)`` and ``run(args)``, in ``--help`` order."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    p = argparse.ArgumentParser(prog="hwkit", description="Hardware-aware deployment of neural networks.")
    p.add_argument("--version", action="version", version=f"hwkit {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hwkit`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(COMMANDS[args.command]).run(args))
    except HwkitError as exc:
        if args.debug:
            raise
        print(f"hwkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hwkit: interrupted; finished passes are kept and a re-run resumes after them", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is a bug: one line unless --debug
        if args.debug:
            raise
        print(f"hwkit: internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)",
              file=sys.stderr)
        return 1
