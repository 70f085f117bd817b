"""``hwkit boards``: the known targets."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    b = sub.add_parser("boards", help="list the known targets")
    b.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from hwkit.board import all_boards

    boards = all_boards()
    if args.json:
        print(json.dumps([b.summary() | {"resources": b.resources} for b in boards], indent=2))
        return 0
    from hwkit.cli.console import print_boards

    print_boards(boards)
    return 0
