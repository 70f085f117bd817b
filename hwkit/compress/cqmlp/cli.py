"""``hwkit train cqmlp``: quantisation-aware training of the CQMLP CAN-bus intrusion detector."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from hwkit.cli.args import integer, number
from hwkit.errors import InputError


def add_parser(sub: Any) -> None:
    """Register ``hwkit train``."""
    t = sub.add_parser("train", help="quantisation-aware training of a built-in model (cqmlp: CAN-bus IDS)")
    t.add_argument("arch", choices=["cqmlp"], help="model to train")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="directory of Car-Hacking files (DoS_dataset.csv, Fuzzy_dataset.csv, "
                                    "RPM_dataset.csv, normal_run_data.txt; candump .log / .asc / .blf as normal)")
    src.add_argument("--synthetic", action="store_true",
                     help="generate Car-Hacking-style traffic (seeded) and train on it")
    t.add_argument("--synthetic-seconds", type=number(0, 86400, lo_open=True), default=60.0,
                   help="seconds of traffic per synthetic file (default 60)")
    t.add_argument("--synthetic-dir", help="keep the generated files in this directory")
    t.add_argument("--strict", action="store_true", help="stop at the first malformed line instead of skipping it")
    t.add_argument("--bits", type=integer(1, 8), default=2, help="weight and activation bits (default 2, paper: 2)")
    t.add_argument("--depth", type=integer(1, 4), default=4, help="hidden layers from 256-128-64-32 (default 4)")
    t.add_argument("--window", type=integer(1, 4096), default=4, help="frames per input block (default 4 -> 40 bytes)")
    t.add_argument("--stride", type=integer(1, 4096), default=1, help="window stride in frames (default 1)")
    t.add_argument("--split", choices=["time", "random"], default="time",
                   help="time: consecutive stretches per file, no shared frames (default); random: shuffled windows")
    t.add_argument("--fractions", default="0.85,0.10,0.05", help="train,val,test fractions (default 0.85,0.10,0.05)")
    t.add_argument("--epochs", type=integer(1, 10**6), default=10, help="maximum epochs (default 10; paper 1000)")
    t.add_argument("--batch-size", type=integer(1, 1 << 24), default=256, help="mini-batch (default 256; paper 128)")
    t.add_argument("--lr", type=number(0, 10, lo_open=True), default=1e-3,
                   help="Adam learning rate (default 1e-3; paper 1e-4)")
    t.add_argument("--schedule", choices=["onecycle", "constant"],
                   help="learning-rate schedule (default onecycle: warm-up then cosine; paper: constant)")
    t.add_argument("--warmup", type=number(0, 1, hi_open=True),
                   help="fraction of steps spent warming up, 0 <= f < 1 (onecycle; default 0.15)")
    t.add_argument("--weight-decay", type=number(0, 10), help="Adam weight decay, >= 0 (default 0)")
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
    t.add_argument("--weight-scaling", choices=["max", "mean", "learned"],
                   help="weight scales: max-abs statistic (default), mean-abs statistic, or learned parameters "
                        "initialised from max-abs (LSQ-style; per output channel with --per-channel)")
    d = t.add_argument_group("distillation from the float twin (docs/cqmlp.md)")
    d.add_argument("--teacher", metavar="CKPT", help="distil from this trained CQMLP checkpoint (e.g. a float twin)")
    d.add_argument("--distill", action="store_true",
                   help="train the float twin first (OUT stem + .teacher.pt, reused if present for the same "
                        "data and settings) and distil from it")
    d.add_argument("--teacher-epochs", type=integer(1, 10**6),
                   help="epochs of the float twin --distill trains (default 4)")
    d.add_argument("--float-twin", action="store_true", help="train the unquantised twin itself (a teacher)")
    d.add_argument("--ce-weight", type=number(0, 1e6),
                   help="weight of the label cross-entropy when distilling (default 1)")
    d.add_argument("--kd-weight", type=number(0, 1e6), help="weight of the T^2-scaled KL to the teacher (default 1)")
    d.add_argument("--kd-temperature", type=number(0, 1e3, lo_open=True),
                   help="distillation softmax temperature (default 2)")
    d.add_argument("--feature-weight", type=number(0, 1e6),
                   help="weight of hidden-feature matching (MSE of the BatchNorm outputs; default 0 = off)")
    d.add_argument("--init-from-teacher", action="store_true",
                   help="start from the teacher's weights, then anneal through --pretrain-bits to --bits")
    t.add_argument("--init-from", metavar="CKPT",
                   help="start from this trained CQMLP checkpoint (same topology; e.g. continue the bundled model "
                        "with a distillation tail)")
    t.add_argument("--bn-recalibrate", type=integer(0), metavar="N",
                   help="before every validation, re-estimate the BatchNorm statistics over N seeded training "
                        "windows with the current weights (default 0 = off)")
    t.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                   help="where to train (default cpu; auto = cuda when torch sees a GPU)")
    t.add_argument("--patience", type=integer(0, 10**6), default=3,
                   help="early stop after N epochs without better val loss "
                                                            "(default 3; 0 = off)")
    t.add_argument("--max-train-windows", type=integer(1), help="train on a seeded random subset of this many windows")
    t.add_argument("--seed", type=integer(0, 2**32 - 1), default=0,
                   help="data generation, initialisation and shuffling seed")
    t.add_argument("--threads", type=integer(1, 1024), default=1,
                   help="torch threads (default 1: fastest for this small MLP)")
    t.add_argument("--out", default="cqmlp.pt", help="checkpoint path (default cqmlp.pt); metrics.json, .png and "
                                                     ".state.pt are written next to it")
    t.add_argument("--resume", nargs="?", const="", default=None,
                   help="continue from a training state (default: the .state.pt next to --out)")
    out = t.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the metrics JSON to stdout, nothing else")
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwkit.compress.cqmlp.train import config_from, paths_for, read_state, stages_of
    from hwkit.outdir import claim, claim_file_parent

    try:
        fractions = tuple(float(f) for f in args.fractions.split(","))
    except ValueError:
        raise InputError(f"--fractions '{args.fractions}' is not three numbers like 0.85,0.10,0.05") from None
    if args.float_twin and (args.distill or args.teacher or args.init_from_teacher):
        raise InputError("--float-twin trains the teacher itself; it takes no --teacher, --distill or "
                         "--init-from-teacher")
    if args.init_from and (args.init_from_teacher or args.float_twin):
        raise InputError("--init-from sets the starting weights; it takes no --init-from-teacher or --float-twin")
    if args.init_from and not Path(args.init_from).is_file():
        raise InputError(f"--init-from {args.init_from}: no checkpoint there")
    if args.init_from_teacher and not (args.distill or args.teacher):
        raise InputError("--init-from-teacher needs --teacher CKPT or --distill")
    # the integer flags are range-checked by argparse (hwkit.cli.args.integer)
    if len(fractions) != 3 or not all(math.isfinite(f) and f > 0 for f in fractions) \
            or abs(sum(fractions) - 1) > 1e-6:
        raise InputError(f"--fractions must be three positive numbers summing to 1, got {args.fractions}")
    stages: dict[str, tuple[int, ...]] = {}
    for flag, key in (("--pretrain-bits", "pretrain_bits"), ("--pretrain-epochs", "pretrain_epochs")):
        text = getattr(args, key)
        try:
            stages[key] = tuple(int(v) for v in text.split(",")) if text else ()
        except ValueError:
            raise InputError(f"{flag} '{text}' is not a comma-separated list of integers like 8,3") from None
    cfg = config_from({**vars(args), "fractions": fractions, **stages,
                       "distill": args.distill or None, "float_twin": args.float_twin or None,
                       "init_from_teacher": args.init_from_teacher or None})
    stages_of(cfg)  # mismatched or impossible --pretrain-* values fail before any data is read
    out = Path(args.out)
    resume = None if args.resume is None else Path(args.resume or paths_for(out)[2])
    if resume is not None:
        read_state(resume)  # a missing, forged or corrupt state fails before any data is read
    if args.data and not Path(args.data).is_dir():
        raise InputError(f"--data {args.data}: data directory not found")
    # --synthetic-dir is an output directory too (its CAN files are read back): new, empty or hwkit's
    synth = claim(args.synthetic_dir, "synthetic-data", legacy_markers=("normal_run_data.txt",)) \
        if args.synthetic and args.synthetic_dir else None
    try:
        created = claim_file_parent(out)  # missing parents are created now and removed again if the run fails
    except InputError:
        if synth is not None and (synth.created is not None or not synth.before):
            synth.rollback()
        raise
    try:
        return _train(args, cfg, fractions, out, resume)
    except InputError:
        for owned in (synth, created):
            if owned is not None and (owned.created is not None or not owned.before):
                owned.rollback()
        raise


def _train(args: argparse.Namespace, cfg: Any, fractions: tuple[float, ...], out: Any, resume: Any) -> int:
    from pathlib import Path

    from hwkit.compress.cqmlp.train import prepare_data, train_cqmlp

    progress = None
    if not (args.json or args.quiet):
        from hwkit.compress.cqmlp.train import RichTrainProgress

        progress = RichTrainProgress()
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
