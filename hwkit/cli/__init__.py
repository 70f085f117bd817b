"""The ``hwkit`` command line: thin, it parses arguments and calls the library.

:data:`COMMANDS` is the one table of subcommands. Each names a module with ``add_parser(sub)`` (registers
the subcommand; imports nothing heavy) and ``run(args) -> int``. Adding a method's command means adding
one line here and a ``cli.py`` in the method's folder.
"""

from __future__ import annotations

import argparse
import errno
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


_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG}
"""OS errors that are the user's environment (a full disk, a read-only file system), not a bug: exit 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    p = argparse.ArgumentParser(prog="hwkit", description="Hardware-aware deployment of neural networks.")
    p.add_argument("--version", action="version", version=f"hwkit {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return p


def _check_single_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """argparse lets ``--flag=--`` through as an empty list, past the flag's type; refuse it (exit 2)."""
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = subs.choices[args.command]
    for action in sub._actions:
        if action.type is not None and action.nargs is None and isinstance(getattr(args, action.dest, None), list):
            sub.error(f"argument {'/'.join(action.option_strings)}: expected one value")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hwkit`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_single_values(parser, args)
    try:
        return int(importlib.import_module(COMMANDS[args.command]).run(args))
    except HwkitError as exc:
        if args.debug:
            raise
        print(f"hwkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if args.debug:
            raise
        if exc.errno in _ENVIRONMENT_ERRNOS:  # a full disk, a read-only file system: one line naming the path
            from hwkit.outdir import os_error_message

            print(f"hwkit: error: {os_error_message(exc.filename or '(output)', exc)}", file=sys.stderr)
            return 2
        print(f"hwkit: internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hwkit: interrupted; finished passes are kept and a re-run resumes after them", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is a bug: one line unless --debug
        if args.debug:
            raise
        print(f"hwkit: internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)",
              file=sys.stderr)
        return 1
