"""The ``hwkit`` command line: thin, it parses arguments and calls the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from hwkit import __version__
from hwkit.errors import HwkitError, InputError


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape like 1,64") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape of positive integers")
    return dims


def _json_obj(text: str) -> tuple[tuple[str, Any], ...]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return tuple(sorted(obj.items()))


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    p = argparse.ArgumentParser(prog="hwkit", description="Hardware-aware deployment of neural networks.")
    p.add_argument("--version", action="version", version=f"hwkit {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compress, export, build and report a model for a target")
    c.add_argument("model", help="hwkit checkpoint / state dict (.pt), trusted pickle, or QONNX (.onnx)")
    c.add_argument("--target", required=True, help="board name (see `hwkit boards`) or path to a board .toml")
    c.add_argument("--out", default="build", help="build directory (default: build)")
    c.add_argument("--flow", help="flow name or .toml (default: the board's default_flow)")
    c.add_argument("--clock-ns", type=_positive, help="clock period in ns (default: the board's clock_ns)")
    c.add_argument("--target-fps", type=_positive, help="throughput to fold for, frames/s")
    c.add_argument("--input-shape", type=_shape, help="input shape with batch, e.g. 1,64")
    c.add_argument("--input-dtype", help="FINN data type of the input, e.g. UINT8, INT8, FLOAT32")
    c.add_argument("--arch", help="module:function that builds the architecture for a plain state dict")
    c.add_argument("--arch-kwargs", type=_json_obj, help="JSON object of keyword arguments for --arch")
    c.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a full pickle (runs code from the file: only for files you trust)")
    c.add_argument("--golden-batch", type=int, help="samples in the verification batch (default 32)")
    c.add_argument("--from", dest="from_step", help="re-run from this step (number, id or pass name)")
    c.add_argument("--to", dest="to_step", help="stop after this step")
    c.add_argument("--require-fit", action="store_true", help="exit with 6 when the design does not fit the part")
    out = c.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print report.json to stdout, nothing else")
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")

    b = sub.add_parser("boards", help="list the known targets")
    b.add_argument("--json", action="store_true")
    f = sub.add_parser("flows", help="list the known flows and their passes")
    f.add_argument("--json", action="store_true")
    r = sub.add_parser("report", help="print the report of a build directory")
    r.add_argument("build_dir")
    return p


def _compile(args: argparse.Namespace) -> int:
    from hwkit.api import compile_model

    progress = None
    if not (args.json or args.quiet):
        from hwkit.console import RichProgress

        progress = RichProgress()
    report = compile_model(
        args.model, args.target, args.out, flow=args.flow, from_step=args.from_step, to_step=args.to_step,
        progress=progress, clock_ns=args.clock_ns, target_fps=args.target_fps, input_shape=args.input_shape,
        input_dtype=args.input_dtype, arch=args.arch, arch_kwargs=args.arch_kwargs,
        trust_pickle=args.trust_pickle or None, golden_batch=args.golden_batch,
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    elif not args.quiet:
        from hwkit.console import print_report

        print_report(report, args.out)
    return 6 if args.require_fit and report.fits is False else 0


def _boards(args: argparse.Namespace) -> int:
    from hwkit.board import all_boards

    boards = all_boards()
    if args.json:
        print(json.dumps([b.summary() | {"resources": b.resources} for b in boards], indent=2))
        return 0
    from hwkit.console import print_boards

    print_boards(boards)
    return 0


def _flows(args: argparse.Namespace) -> int:
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


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    path = Path(args.build_dir) / "report.md"
    if not path.is_file():
        raise InputError(f"{args.build_dir}: no report.md (is it a finished hwkit build directory?)")
    print(path.read_text(encoding="utf-8"), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hwkit`` console script."""
    args = build_parser().parse_args(argv)
    handlers = {"compile": _compile, "boards": _boards, "flows": _flows, "report": _report}
    try:
        return handlers[args.command](args)
    except HwkitError as exc:
        if args.debug:
            raise
        print(f"hwkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hwkit: interrupted; finished passes are kept and a re-run resumes after them", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is a bug: one line unless --debug
        if args.debug:
            raise
        print(f"hwkit: internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
