"""The ``hwkit`` command line: thin, it parses arguments and calls the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from hwkit import __version__, prune_cli, shiftadd_cli
from hwkit.cliargs import json_object, positive, shape
from hwkit.errors import HwkitError, InputError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    p = argparse.ArgumentParser(prog="hwkit", description="Hardware-aware deployment of neural networks.")
    p.add_argument("--version", action="version", version=f"hwkit {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compress, export, build and report a model for a target")
    c.add_argument("model", help="hwkit checkpoint / state dict (.pt), trusted pickle, or QONNX (.onnx)")
    c.add_argument("--target", required=True, help="board name (see `hwkit boards`) or path to a board .toml")
    c.add_argument("--out", default="build", help="build directory (default: build); must be new, empty or an "
                   "earlier hwkit build")
    c.add_argument("--force", action="store_true",
                   help="build into a non-empty directory hwkit did not create (what was there is never removed)")
    c.add_argument("--flow", help="flow name or .toml (default: the board's default_flow)")
    c.add_argument("--bitstream", action="store_true", help="build the bitstream with Vivado (flow finn-bitstream)")
    c.add_argument("--clock-ns", type=positive, help="clock period in ns (default: the board's clock_ns)")
    c.add_argument("--target-fps", type=positive, help="throughput to fold for, frames/s")
    c.add_argument("--input-shape", type=shape, help="input shape with batch, e.g. 1,64")
    c.add_argument("--input-dtype", help="FINN data type of the input, e.g. UINT8, INT8, FLOAT32")
    c.add_argument("--arch", help="module:function that builds the architecture for a plain state dict")
    c.add_argument("--arch-kwargs", type=json_object, help="JSON object of keyword arguments for --arch")
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
    r = sub.add_parser("report", help="re-render report.md/report.html of a build directory and print it")
    r.add_argument("build_dir")
    r.add_argument("--quiet", action="store_true", help="only re-render the files")
    from hwkit import measure

    measure.add_parser(sub)
    prune_cli.add_parser(sub)  # hwkit prune (issue 5: AMP)
    shiftadd_cli.add_parser(sub)  # hwkit shiftadd (issue 6)
    cmp_ = sub.add_parser("compare", help="two builds side by side, with deltas")
    cmp_.add_argument("a", help="build directory (or report.json) A")
    cmp_.add_argument("b", help="build directory (or report.json) B")
    cmp_.add_argument("--json", action="store_true")

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
    _add_train_parser(sub)
    from hwkit.explore.cli import add_parser as add_explore_parser  # explore (issue 9)

    add_explore_parser(sub)
    from hwkit.doctor import add_parser as add_doctor_parser  # doctor, design-hash (issue 8)

    add_doctor_parser(sub)
    return p


def _compile(args: argparse.Namespace) -> int:
    from hwkit.api import compile_model

    progress = None
    if not (args.json or args.quiet):
        from hwkit.console import RichProgress

        progress = RichProgress()
    if args.bitstream and args.flow:
        raise InputError("--bitstream selects the finn-bitstream flow; leave out --flow")
    report = compile_model(
        args.model, args.target, args.out, flow="finn-bitstream" if args.bitstream else args.flow,
        from_step=args.from_step, to_step=args.to_step,
        progress=progress, force=args.force, clock_ns=args.clock_ns, target_fps=args.target_fps,
        input_shape=args.input_shape,
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

    from hwkit.compare import load_build
    from hwkit.report import Report

    out = Path(args.build_dir)
    doc = load_build(out)
    try:
        report = Report.from_json(doc)
    except (KeyError, TypeError) as exc:
        raise InputError(f"{out / 'report.json'}: not a complete hwkit report ({type(exc).__name__}: {exc})") from None
    report.write(out)  # re-render report.md and report.html with this hwkit
    if not args.quiet:
        from hwkit.console import print_report

        print_report(report, str(out))
    return 0


def _measure_power(args: argparse.Namespace) -> int:
    from hwkit import measure

    return measure.run(args)


def _compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwkit.compare import compare, load_build, rows_json

    rows = compare(load_build(Path(args.a)), load_build(Path(args.b)))
    if args.json:
        print(json.dumps(rows_json(rows), indent=2))
        return 0
    from hwkit.console import print_compare

    print_compare(rows, args.a, args.b)
    return 0


def _bench(args: argparse.Namespace) -> int:
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
        from hwkit.console import print_report

        print_report(report, args.out or "(not written; use --out)")
    return 0


# --- hwkit train (issue 3: CQMLP CAN intrusion detector) --------------------------------------------

def _add_train_parser(sub: Any) -> None:
    """``hwkit train cqmlp``: quantisation-aware training on Car-Hacking data or synthetic traffic."""
    t = sub.add_parser("train", help="quantisation-aware training of a built-in model (cqmlp: CAN-bus IDS)")
    t.add_argument("arch", choices=["cqmlp"], help="model to train")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="directory of Car-Hacking files (DoS_dataset.csv, Fuzzy_dataset.csv, "
                                    "RPM_dataset.csv, normal_run_data.txt; candump .log / .asc / .blf as normal)")
    src.add_argument("--synthetic", action="store_true",
                     help="generate Car-Hacking-style traffic (seeded) and train on it")
    t.add_argument("--synthetic-seconds", type=positive, default=60.0,
                   help="seconds of traffic per synthetic file (default 60)")
    t.add_argument("--synthetic-dir", help="keep the generated files in this directory")
    t.add_argument("--strict", action="store_true", help="stop at the first malformed line instead of skipping it")
    t.add_argument("--bits", type=int, default=2, help="weight and activation bits (default 2, paper: 2)")
    t.add_argument("--depth", type=int, default=4, help="hidden layers from 256-128-64-32 (default 4)")
    t.add_argument("--window", type=int, default=4, help="frames per input block (default 4 -> 40 bytes)")
    t.add_argument("--stride", type=int, default=1, help="window stride in frames (default 1)")
    t.add_argument("--split", choices=["time", "random"], default="time",
                   help="time: consecutive stretches per file, no shared frames (default); random: shuffled windows")
    t.add_argument("--fractions", default="0.85,0.10,0.05", help="train,val,test fractions (default 0.85,0.10,0.05)")
    t.add_argument("--epochs", type=int, default=10, help="maximum epochs (default 10; paper 1000)")
    t.add_argument("--batch-size", type=int, default=256, help="mini-batch (default 256; paper 128)")
    t.add_argument("--lr", type=positive, default=1e-3, help="Adam learning rate (default 1e-3; paper 1e-4)")
    t.add_argument("--schedule", choices=["onecycle", "constant"],
                   help="learning-rate schedule (default onecycle: warm-up then cosine; paper: constant)")
    t.add_argument("--warmup", type=float, help="fraction of steps spent warming up (onecycle; default 0.15)")
    t.add_argument("--weight-decay", type=float, help="Adam weight decay (default 0)")
    t.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                   help="per-output-channel weight scales (default on; paper: per-tensor)")
    t.add_argument("--weight-values", choices=["int", "full", "pow2"],
                   help="int: the narrow symmetric b-bit grid, ternary at 2 bits (default, Brevitas and the paper); "
                        "full: every code of the b-bit type, {-2,-1,0,1} at 2 bits; pow2: 0 and signed powers of "
                        "two only, so every multiplication is a shift (docs/cqmlp.md)")
    t.add_argument("--pretrain-bits", metavar="B[,B...]",
                   help="progressive quantisation: train first at these bit widths, widest first (e.g. 8,3), each "
                        "stage starting from the last one's weights (docs/cqmlp.md)")
    t.add_argument("--pretrain-epochs", metavar="E[,E...]", help="epochs at each --pretrain-bits width (e.g. 14,8)")
    t.add_argument("--patience", type=int, default=3, help="early stop after N epochs without better val loss "
                                                            "(default 3; 0 = off)")
    t.add_argument("--max-train-windows", type=int, help="train on a seeded random subset of this many windows")
    t.add_argument("--seed", type=int, default=0, help="data generation, initialisation and shuffling seed")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for this small MLP)")
    t.add_argument("--out", default="cqmlp.pt", help="checkpoint path (default cqmlp.pt); metrics.json, .png and "
                                                     ".state.pt are written next to it")
    t.add_argument("--resume", nargs="?", const="", default=None,
                   help="continue from a training state (default: the .state.pt next to --out)")
    out = t.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the metrics JSON to stdout, nothing else")
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwkit.train import config_from, paths_for, prepare_data, stages_of, train_cqmlp

    try:
        fractions = tuple(float(f) for f in args.fractions.split(","))
    except ValueError:
        raise InputError(f"--fractions '{args.fractions}' is not three numbers like 0.85,0.10,0.05") from None
    for flag, v in (("--bits", args.bits), ("--depth", args.depth), ("--window", args.window),
                    ("--stride", args.stride), ("--epochs", args.epochs), ("--batch-size", args.batch_size),
                    ("--threads", args.threads)):
        if v < 1:
            raise InputError(f"{flag} must be >= 1, got {v}")
    if not 1 <= args.depth <= 4 or not 1 <= args.bits <= 8:
        raise InputError(f"--depth must be 1..4 and --bits 1..8, got {args.depth} and {args.bits}")
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise InputError(f"--fractions must be three positive numbers summing to 1, got {args.fractions}")
    stages: dict[str, tuple[int, ...]] = {}
    for flag, key in (("--pretrain-bits", "pretrain_bits"), ("--pretrain-epochs", "pretrain_epochs")):
        text = getattr(args, key)
        try:
            stages[key] = tuple(int(v) for v in text.split(",")) if text else ()
        except ValueError:
            raise InputError(f"{flag} '{text}' is not a comma-separated list of integers like 8,3") from None
    cfg = config_from({**vars(args), "fractions": fractions, **stages})
    stages_of(cfg)  # mismatched or impossible --pretrain-* values fail before any data is read
    progress = None
    if not (args.json or args.quiet):
        from hwkit.train import RichTrainProgress

        progress = RichTrainProgress()
    out = Path(args.out)
    resume = None if args.resume is None else Path(args.resume or paths_for(out)[2])
    try:
        split, desc = prepare_data(Path(args.data) if args.data else None,
                                   args.synthetic_seconds if args.synthetic else None, cfg,
                                   Path(args.synthetic_dir) if args.synthetic_dir else None, args.strict, progress)
        if progress:
            s = split.sizes()
            progress.note(f"{split.mode} split: {s['train']:,} train / {s['val']:,} val / {s['test']:,} test windows")
        result = train_cqmlp(split, cfg, out, desc, progress, resume)
    finally:
        if progress:
            progress.stop()
    if args.json:
        print(json.dumps({k: v for k, v in result.summary.items() if k != "history"}, indent=2))
    elif not args.quiet:
        _print_train_summary(result)
    return 0


def _print_train_summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result.summary
    test = s["metrics"]["test"]
    title = (f"Test ({s['split']['mode']} split, {test['samples']:,} windows): accuracy "
             f"{test['accuracy'] * 100:.3f}%, benign FPR {test['benign_fpr'] * 100:.3f}%")
    tab = Table(title=title, title_justify="left")
    for col in ("class", "precision %", "recall %", "F1 %", "FNR %", "support"):
        tab.add_column(col, justify="left" if col == "class" else "right")
    for name, m in test["per_class"].items():
        tab.add_row(name, f"{m['precision'] * 100:.3f}", f"{m['recall'] * 100:.3f}", f"{m['f1'] * 100:.3f}",
                    f"{m['fnr'] * 100:.3f}", f"{m['support']:,}")
    con = Console()
    con.print(tab)
    ttt = s["time_to_val_accuracy_999"]
    con.print(f"best epoch {s['best_epoch']} of {s['epochs_run']} ({s['stopped']}); "
              f"{s['train_samples_per_s']:,.0f} training samples/s; "
              + (f"val accuracy >= 99.9% after {ttt['train_s']:.1f} s of training (epoch {ttt['epoch']})"
                 if ttt else "val accuracy never reached 99.9%"), highlight=False)
    con.print(f"wrote {result.checkpoint}, {result.metrics_path}"
              + (f", {result.plot_path}" if result.plot_path else "") + f", {result.state_path}", highlight=False)


def _doctor_handlers() -> dict[str, Any]:
    from hwkit.doctor import HANDLERS

    return HANDLERS


def _explore(args: argparse.Namespace) -> int:
    from hwkit.explore.cli import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hwkit`` console script."""
    args = build_parser().parse_args(argv)
    handlers = {"compile": _compile, "boards": _boards, "flows": _flows, "report": _report, "compare": _compare,
                "bench": _bench, "train": _train, "explore": _explore,
                "prune": prune_cli.run, "shiftadd": shiftadd_cli.run,
                "measure-power": _measure_power, **_doctor_handlers()}
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
