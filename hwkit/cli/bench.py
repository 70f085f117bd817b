"""``hwkit bench MODEL.onnx``: measure an exported ONNX model with ONNX Runtime."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hwkit.cli.args import choice_upper, integer, shape
from hwkit.errors import InputError

INPUT_DTYPES = ("FLOAT32", "UINT8", "INT8", "BIPOLAR", "BINARY", "UINT4", "INT4", "UINT2", "INT2", "TERNARY")
"""Input ranges ``--input-dtype`` can sample (hwkit.export.onnx.sample_inputs)."""
DEFAULT_BATCHES = (1, 8, 64, 256)


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    be = sub.add_parser("bench", help="measure an exported ONNX model with ONNX Runtime on a cpu/gpu target")
    be.add_argument("model", help="ONNX model file (.onnx)")
    be.add_argument("--target", default="cpu", help="cpu/gpu board name or board .toml (default: cpu)")
    be.add_argument("--batch-sizes", type=shape, default=DEFAULT_BATCHES, help="e.g. 1,8,64,256")
    be.add_argument("--runs", type=integer(1, 10**7), default=500, help="timed batch-1 runs (default 500)")
    be.add_argument("--warmup", type=integer(0, 10**7), default=50, help="untimed warm-up runs (default 50)")
    be.add_argument("--batch-runs", type=integer(1, 10**7), default=30,
                    help="timed runs per batch size (default 30)")
    be.add_argument("--input-dtype", type=choice_upper(INPUT_DTYPES), default="FLOAT32",
                    help="input range to sample: FLOAT32 (normal), UINT8, INT8, ...")
    be.add_argument("--out", help="also write report.json, report.md and report.html into this directory (new, "
                                  "empty or an earlier hwkit output)")
    be.add_argument("--force", action="store_true", help="write into a non-empty directory hwkit did not create "
                                                         "(what was there is never removed)")
    be.add_argument("--json", action="store_true", help="print report.json to stdout, nothing else")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwkit.board import load_board
    from hwkit.outdir import claim

    board = load_board(args.target)
    if board.kind not in ("cpu", "gpu"):
        raise InputError(f"hwkit bench runs ONNX Runtime targets; '{board.name}' is a {board.kind} board")
    path = Path(args.model)
    if not path.is_file():
        raise InputError(f"{args.model}: model file not found")
    owned = claim(args.out, "bench", force=args.force, legacy_markers=("report.json",)) if args.out else None
    try:
        report = _measure(args, path, board)
        if owned is not None:
            report.write(owned.path)
    except BaseException:
        if owned is not None:
            owned.rollback()
        raise
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        from hwkit.cli.console import print_report

        print_report(report, args.out or "(not written; use --out)")
    return 0


def _measure(args: argparse.Namespace, path: Any, board: Any) -> Any:
    from hwkit.backends.ort import measure_session
    from hwkit.export.onnx import _input_shape, check_onnx_file, fixed_batch, sample_inputs
    from hwkit.flow import file_digest, tool_versions
    from hwkit.report import build_report

    model = check_onnx_file(path)
    in_shape = _input_shape(model)
    batches = list(args.batch_sizes)
    warnings = []
    fixed = fixed_batch(model)
    if fixed is not None and fixed != 1:
        raise InputError(f"{path}: the file fixes the batch dimension to {fixed}; hwkit bench measures batch-1 "
                         "latency, so export with batch 1 or a dynamic batch axis (dynamic_axes={'input': {0: "
                         "'batch'}})")
    if fixed == 1 and batches != [1]:
        warnings.append(f"{path.name} fixes the batch dimension to 1 (torch.onnx.export's default): measured at "
                        f"batch 1 only, not {','.join(map(str, batches))}; export with a dynamic batch axis to "
                        "measure larger batches")
        batches = [1]
    x = sample_inputs(in_shape, args.input_dtype, max(batches), 0)
    res = measure_session(path, board, x, batches, args.warmup, args.runs, args.batch_runs, energy_runs=200)
    res.update(warmup=args.warmup, eager=None)
    meta = {"measurement": res, "ort": {"providers": res["providers"]}, "warnings": warnings}
    model_meta = {"path": str(path.resolve()), "sha256": file_digest(path), "format": "onnx",
                  "input_shape": list(in_shape), "input_dtype": args.input_dtype,
                  "batch_sizes_allowed": [1] if fixed == 1 else "any"}
    return build_report(meta, model_meta, board, {"clock_ns": None, "target_fps": None}, "bench", [],
                        tool_versions())
