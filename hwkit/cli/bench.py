"""``hwkit bench MODEL.onnx``: measure an exported ONNX model with ONNX Runtime."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hwkit.cli.args import shape
from hwkit.errors import InputError


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    be = sub.add_parser("bench", help="measure an exported ONNX model with ONNX Runtime on a cpu/gpu target")
    be.add_argument("model", help="ONNX model file (.onnx)")
    be.add_argument("--target", default="cpu", help="cpu/gpu board name or board .toml (default: cpu)")
    be.add_argument("--batch-sizes", type=shape, default=(1, 8, 64, 256), help="e.g. 1,8,64,256")
    be.add_argument("--runs", type=int, default=500, help="timed batch-1 runs (default 500)")
    be.add_argument("--warmup", type=int, default=50, help="untimed warm-up runs (default 50)")
    be.add_argument("--batch-runs", type=int, default=30, help="timed runs per batch size (default 30)")
    be.add_argument("--input-dtype", default="FLOAT32", help="input range to sample: FLOAT32 (normal), UINT8, INT8")
    be.add_argument("--out", help="also write report.json and report.md into this directory")
    be.add_argument("--json", action="store_true", help="print report.json to stdout, nothing else")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwkit.backends.ort import measure_session
    from hwkit.board import load_board
    from hwkit.export.onnx import _input_shape, check_onnx_file, sample_inputs
    from hwkit.flow import file_digest, tool_versions
    from hwkit.report import build_report

    board = load_board(args.target)
    if board.kind not in ("cpu", "gpu"):
        raise InputError(f"hwkit bench runs ONNX Runtime targets; '{board.name}' is a {board.kind} board")
    for flag, v in (("--runs", args.runs), ("--batch-runs", args.batch_runs)):
        if v < 1:
            raise InputError(f"{flag} must be >= 1, got {v}")
    path = Path(args.model)
    if not path.is_file():
        raise InputError(f"{args.model}: model file not found")
    model = check_onnx_file(path)
    in_shape = _input_shape(model)
    x = sample_inputs(in_shape, args.input_dtype.upper(), max(args.batch_sizes), 0)
    res = measure_session(path, board, x, list(args.batch_sizes), max(args.warmup, 0), args.runs, args.batch_runs,
                          energy_runs=200)
    res.update(warmup=args.warmup, eager=None)
    meta = {"measurement": res, "ort": {"providers": res["providers"]}}
    model_meta = {"path": str(path.resolve()), "sha256": file_digest(path), "format": "onnx",
                  "input_shape": list(in_shape), "input_dtype": args.input_dtype.upper()}
    report = build_report(meta, model_meta, board, {"clock_ns": None, "target_fps": None}, "bench", [],
                          tool_versions())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report.write(out)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        from hwkit.cli.console import print_report

        print_report(report, args.out or "(not written; use --out)")
    return 0
