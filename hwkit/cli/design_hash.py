"""``hwkit design-hash MODEL --target BOARD``: the CI cache key of a bitstream."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hwkit.api import design_hash
from hwkit.cli.args import number
from hwkit.doctor import Probe, find_vivado


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    h = sub.add_parser("design-hash", help="print the hash of everything a bitstream depends on (CI cache key)")
    h.add_argument("model")
    h.add_argument("--target", required=True)
    h.add_argument("--flow", default="finn-bitstream", help="flow name or .toml (default: finn-bitstream)")
    h.add_argument("--clock-ns", type=number(0, 1e6, lo_open=True))
    h.add_argument("--target-fps", type=number(1, 1e12))
    h.add_argument("--vivado-version", help="default: from `vivado -version` / XILINX_VIVADO ('none' if absent)")


def run(args: argparse.Namespace) -> int:
    """Print the design hash (one line)."""
    from hwkit.errors import ModelLoadError

    model = Path(args.model)
    if not model.is_file():
        raise ModelLoadError(f"{args.model}: model file not found")
    vivado = args.vivado_version
    if vivado is None:
        inst = find_vivado(Probe())
        vivado = (inst.version if inst else None) or "none"
    print(design_hash(model, args.target, args.flow, vivado, clock_ns=args.clock_ns, target_fps=args.target_fps))
    return 0
