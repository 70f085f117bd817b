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

    from hwkit.outdir import claim
    from hwkit.report import Report
    from hwkit.report.compare import load_build

    out = Path(args.build_dir)
    if not out.is_dir():
        raise InputError(f"{out}: not a build directory")
    doc = load_build(out)  # checks the document: a report.json that is not a whole report is refused here
    report = Report.from_json(doc)
    # re-render report.md and report.html with this hwkit, in a directory an hwkit run wrote (its report.json
    # is hwkit's); the three files are replaced together
    owned = claim(out, "report", legacy_markers=("report.json",))
    report.write(owned.path)
    if not args.quiet:
        from hwkit.cli.console import print_report

        print_report(report, str(out))
    return 0
