"""``hwkit flows``: the known flows and their passes."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    f = sub.add_parser("flows", help="list the known flows and their passes")
    f.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from hwkit.flow import flow_names, load_flow

    flows = [load_flow(n) for n in flow_names()]
    if args.json:
        print(json.dumps([{"name": f.name, "description": f.description, "board_kinds": list(f.board_kinds),
                           "passes": [s.id for s in f.steps]} for f in flows], indent=2))
        return 0
    for f in flows:
        print(f"{f.name} [{', '.join(f.board_kinds) or 'any'}]: {f.description}")
        for s in f.steps:
            print(f"  {s.id:40s} {s.spec.doc}")
    return 0
