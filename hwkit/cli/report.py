"""``hwkit report BUILD``: re-render and print a build's report."""

from __future__ import annotations

import argparse
from typing import Any

from hwkit.errors import InputError


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    r = sub.add_parser("report", help="re-render report.md/report.html of a build directory and print it")
    r.add_argument("build_dir")
    r.add_argument("--quiet", action="store_true", help="only re-render the files")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwkit.report import Report
    from hwkit.report.compare import load_build

    out = Path(args.build_dir)
    doc = load_build(out)
    try:
        report = Report.from_json(doc)
    except (KeyError, TypeError) as exc:
        raise InputError(f"{out / 'report.json'}: not a complete hwkit report ({type(exc).__name__}: {exc})") from None
    report.write(out)  # re-render report.md and report.html with this hwkit
    if not args.quiet:
        from hwkit.cli.console import print_report

        print_report(report, str(out))
    return 0
