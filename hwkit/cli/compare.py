"""``hwkit compare A B``: two builds side by side, with deltas."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    cmp_ = sub.add_parser("compare", help="two builds side by side, with deltas")
    cmp_.add_argument("a", help="build directory (or report.json) A")
    cmp_.add_argument("b", help="build directory (or report.json) B")
    cmp_.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwkit.report.compare import compare, load_build, rows_json

    rows = compare(load_build(Path(args.a)), load_build(Path(args.b)))
    if args.json:
        print(json.dumps(rows_json(rows), indent=2))
        return 0
    from hwkit.cli.console import print_compare

    print_compare(rows, args.a, args.b)
    return 0
