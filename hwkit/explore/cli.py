"""``hwkit explore``: the subcommand's arguments and handler (hwkit/cli/__init__.py registers them)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hwkit.cli.args import integer
from hwkit.errors import InputError


def add_parser(sub: Any) -> None:
    """``hwkit explore CONFIG``: multi-objective search over compression and hardware settings."""
    e = sub.add_parser("explore", help="design-space exploration: search bits/depth/widths/folding/clock for the "
                                       "best accuracy-cost trade-offs (Optuna, many workers)")
    e.add_argument("config", help="explore config (.toml), e.g. examples/explore-cqmlp.toml")
    e.add_argument("--out", help="output directory: explore.db, trials/<n>/, summary, report.html, best/ "
                                 "(default: explore/<study name>)")
    e.add_argument("--storage", help="shared study storage, e.g. postgresql://user@host:5432/db "
                                     "(default: SQLite OUT/explore.db)")
    e.add_argument("--study-name", help="study name in the storage (default: the config's study.name or file stem)")
    e.add_argument("--trials", type=integer(1, 10**7),
                   help="budget: finished trials in the study, all workers together (default: the config's trials)")
    e.add_argument("--workers", type=integer(1, 256), default=1, help="worker processes on this machine (default 1)")
    e.add_argument("--worker-index", type=integer(0, 10**6), default=0, help="offsets the sampler seed of this worker")
    e.add_argument("--force", action="store_true", help="write into a non-empty --out that hwkit did not create "
                                                        "(what was there is never removed)")
    e.add_argument("--no-summary", action="store_true", help="run trials only; write no summary")
    e.add_argument("--best", action="store_true", help="run no trials: export the best design to OUT/best/ and "
                                                       "compile it (the most accurate feasible design on the front)")
    e.add_argument("--pick", type=integer(0), help="with --best: export this trial number instead")
    out = e.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the summary JSON (with --best: the choice) to "
                                                         "stdout, nothing else")
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    """The handler."""
    from hwkit.explore import load_config, with_overrides

    cfg = with_overrides(load_config(args.config), args.trials, args.study_name)
    out = Path(args.out) if args.out else Path("explore") / cfg.study_name()
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.pick is not None and not args.best:
        raise InputError("--pick needs --best")
    from hwkit.outdir import claim

    owned = claim(out, "explore", force=args.force, legacy_markers=("explore.db", "summary.json"))
    try:
        return _run(args, cfg, out)
    except InputError:
        if owned.created is not None or not owned.before:
            owned.rollback()  # a new or empty directory: leave nothing of a run that failed on bad input
        raise


def _run(args: argparse.Namespace, cfg: Any, out: Path) -> int:
    quiet = args.quiet or args.json

    def log(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    if args.best:
        from hwkit.explore import best, summarize

        doc = summarize(cfg, out, args.storage)
        record, report = best(cfg, out, args.storage, args.pick, log)
        if args.json:
            print(json.dumps(record, indent=2, default=str))
        elif not args.quiet:
            from hwkit.cli.console import print_report

            print_report(report, str(out / "best" / "build"))
            print(f"chosen: trial {record['trial']} ({record['rule']}); study {doc['states']}; wrote {out / 'best'}")
        return 0
    return _run_workers(args, cfg, out, log)


def _run_workers(args: argparse.Namespace, cfg: Any, out: Path, log: Any) -> int:
    import subprocess

    from hwkit.explore import explore, summarize
    from hwkit.explore.run import open_study, storage_url

    out.mkdir(parents=True, exist_ok=True)
    url = storage_url(out, args.storage)
    children: list[subprocess.Popen[bytes]] = []
    if args.workers > 1:
        open_study(cfg, url, args.worker_index)  # create it once, so the extra workers load it
    for i in range(1, args.workers):
        cmd = [sys.executable, "-m", "hwkit.cli", "explore", args.config, "--out", str(out), "--storage", url,
               "--study-name", cfg.study_name(), "--trials", str(cfg.trials),
               "--worker-index", str(args.worker_index + i), "--no-summary", "--quiet"]
        children.append(subprocess.Popen(cmd))
    try:
        result = explore(cfg, out, url, log, args.worker_index)
        codes = [c.wait() for c in children]
    except KeyboardInterrupt:
        print(f"hwkit: interrupted; finished trials are kept in the study (storage {url.split('@')[-1]}); run the "
              "same command to continue", file=sys.stderr)
        return 130
    finally:
        for c in children:
            if c.poll() is None:
                c.terminate()
                c.wait()
    log(f"this worker: {result.ran} trials finished, {result.failed} failed, {result.seconds:.1f} s")
    if any(codes):
        raise InputError(f"{sum(1 for c in codes if c)} of {len(codes)} extra workers failed (exit codes {codes})")
    if args.no_summary:
        return 0
    doc = summarize(cfg, out, args.storage)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    elif not args.quiet:
        _print_front(doc, out)
    return 0


def _print_front(doc: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from hwkit.explore.summary import _columns, _v

    params, objs = _columns(doc)
    by = {r["number"]: r for r in doc["trials"]}
    tab = Table(title=f"Pareto front of study {doc['study']} ({doc['states']})", title_justify="left")
    for col in ("trial", *params, *objs):
        tab.add_column(col, justify="right")
    for n in doc["front"]:
        r = by[n]
        tab.add_row(f"{n}{' *' if n == doc['best'] else ''}", *[_v(r["params"].get(p)) for p in params],
                    *[_v(r["metrics"].get(o)) for o in objs])
    con = Console()
    con.print(tab)
    con.print(f"* best ({doc['best_rule']}); `hwkit explore CONFIG --best` exports and compiles it. "
              f"Wrote {out}/summary.json, summary.md, report.html", highlight=False)
