"""``hwkit doctor --target BOARD``: is this machine ready to build bitstreams?"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hwkit.doctor import run_checks
from hwkit.errors import ToolError


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    d = sub.add_parser("doctor", help="check Vivado, license, board files, RAM/disk and libraries for bitstreams")
    d.add_argument("--target", required=True, help="board to check for (see `hwkit boards`)")
    d.add_argument("--xilinx-path", help="Xilinx install root (holds Vivado/<ver> or <ver>/Vivado)")
    d.add_argument("--out", default="build", help="where builds go (for the disk check; default: build)")
    d.add_argument("--json", action="store_true", help="print the checks as JSON")


def run(args: argparse.Namespace) -> int:
    """Print the checks; exit 1 when any fails."""
    from hwkit.board import load_board

    board = load_board(args.target)
    if board.kind != "fpga":
        raise ToolError(f"hwkit doctor checks FPGA bitstream builds; '{board.name}' is a {board.kind} board")
    checks = run_checks(board, xilinx_path=args.xilinx_path, build_dir=Path(args.out))
    failed = [c for c in checks if c.status == "fail"]
    if args.json:
        print(json.dumps({"target": board.name, "part": board.part, "ok": not failed,
                          "checks": [asdict(c) for c in checks]}, indent=2))
        return 1 if failed else 0
    from rich.console import Console
    from rich.table import Table

    style = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
    tab = Table(title=f"hwkit doctor: bitstreams for {board.name} ({board.part})", title_justify="left")
    for col in ("check", "status", "detail", "fix"):
        tab.add_column(col, overflow="fold")
    for c in checks:
        tab.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail, c.fix)
    con = Console()
    con.print(tab)
    for c in checks:
        if c.status in ("fail", "warn") and c.fix:
            con.print(f"fix {c.name}: {c.fix}", highlight=False, soft_wrap=True)
    con.print("[bold red]not ready[/]: fix the failed checks above" if failed else "[green]ready to build bitstreams",
              highlight=False)
    return 1 if failed else 0
