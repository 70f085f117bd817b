"""How much time hwkit's compile adds on top of raw finn-plus, measured in one process.

What it measures (on one model and target, the bundled ``examples/mlp_w2a2_digits.pt`` on ``zcu104``
unless told otherwise; the same ``--target-fps`` for both sides):

1. **hwkit full compile, cold**: the first ``compile_model`` of the process into a fresh build
   directory A. It pays every import (torch, brevitas, finn-plus) and runs every pass, so it is the
   time a user waits for ``hwkit compile`` minus interpreter start-up. It also exports the QONNX model
   (``A/passes/01-export_qonnx/model.onnx``) that both sides build from.
2. **raw finn-plus**: ``finn.builder.build_dataflow.build_dataflow_cfg`` on that QONNX model with the
   finn-plus steps of the flow (``finn.<x>`` -> ``step_<x>``, in flow order), ``ESTIMATE_REPORTS``,
   the board's part, clock and shell flow, into a fresh output directory each time. hwkit's
   ``ensure_finn`` (finn-plus settings, inside the timed region as hwkit pays it too) and
   ``shield_builder`` make it run without Vivado. Its return code must be 0 and it must write
   ``report/estimate_network_performance.json``.
3. **hwkit from 02**: ``compile_model(..., from_step=<first pass after export>)`` on directory A. It
   re-executes every pass from 02 on (the same finn-plus steps plus hwkit's two ``verify`` passes,
   which raw finn-plus does not do) and reuses the cached export. Compared with (2), this is
   the *overhead ratio* (target <= 1.2).
4. **hwkit warm re-run**: ``compile_model`` on directory A with nothing changed; every pass is
   served from its checkpoint. Compared with (2), this is the *warm re-run ratio* (target <= 0.1).

finn-plus's import cost is paid once per process; a throw-away raw build runs before anything raw is
timed, and the cold compile has already imported everything hwkit needs, so neither side pays imports
in (2)-(4). Measurements (2) and (3) alternate, each ``--repeat`` times (default 3), and the median
is reported. One extra, untimed raw build with each step wrapped in a timer gives the raw per-step
times shown next to hwkit's per-pass times (``report.passes``), so it is visible where the overhead
goes. The script checks that both sides produce the same finn-plus performance estimate.

Run it from the repository root::

    .venv/bin/python benchmarks/compile_overhead.py              # table
    .venv/bin/python benchmarks/compile_overhead.py --json       # the same results as JSON
    .venv/bin/python benchmarks/compile_overhead.py --repeat 5 --keep --workdir /tmp/bench

The targets are not asserted: each ratio is printed with PASS or MISS. The exit code is 0 unless a
build failed or the measurement was invalid (e.g. the warm re-run executed a pass, or the two sides
disagree on the estimate). All numbers depend on the machine (CPU count and speed, disk, load); the
times are small (about a second per FINN run on a 2-core machine), so compare ratios from the same
run, never absolute times from different machines.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from hwkit.api import compile_model  # noqa: E402
from hwkit.backends.finn.passes import ensure_finn, shield_builder  # noqa: E402
from hwkit.board import Board, load_board  # noqa: E402
from hwkit.flow import PASSES_DIR, Flow, load_flow, tool_versions  # noqa: E402
from hwkit.report import Report  # noqa: E402

DEFAULT_MODEL = REPO / "examples" / "mlp_w2a2_digits.pt"
OVERHEAD_TARGET = 1.2
WARM_TARGET = 0.1
ESTIMATE_FILE = "estimate_network_performance.json"


class BenchError(RuntimeError):
    """A build failed or a measurement is not what it claims to be."""


# --------------------------------------------------------------------------------------------------
# raw finn-plus


def finn_steps(flow: Flow) -> list[str]:
    """The finn-plus step function names of a flow's ``finn.*`` passes, in flow order."""
    names = [s.spec.name for s in flow.steps]
    return ["step_" + n.removeprefix("finn.") for n in names if n.startswith("finn.")]



def raw_build(qonnx: Path, out_dir: Path, board: Board, clock_ns: float, target_fps: float,
              steps: list[str | Callable[..., Any]], console_log: Any) -> tuple[float, dict[str, Any]]:
    """One raw ``build_dataflow_cfg`` into the fresh ``out_dir``; returns (seconds, network estimate)."""
    from finn.builder.build_dataflow import build_dataflow_cfg
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType

    if out_dir.exists():
        raise BenchError(f"{out_dir}: raw output directory is not fresh")
    from hwkit.backends.finn.raw import contained_builder

    with contained_builder(console_log):
        t0 = time.perf_counter()
        ensure_finn(out_dir)  # FINN_BUILD_DIR = out_dir/finn_build (hwkit's passes pay this call too)
        cfg = DataflowBuildConfig(
            output_dir=str(out_dir / "output"),
            synth_clk_period_ns=clock_ns,
            generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS],
            board=board.finn_board,
            fpga_part=board.part,
            shell_flow_type=board.shell_flow,
            target_fps=int(round(target_fps)),
            steps=steps,
            enable_build_pdb_debug=False,
        )
        rc = build_dataflow_cfg(str(qonnx), cfg)
        seconds = time.perf_counter() - t0
    log = out_dir / "output" / "build_dataflow.log"
    if rc != 0:
        raise BenchError(f"raw finn-plus build_dataflow_cfg returned {rc}; see {log}")
    est = out_dir / "output" / "report" / ESTIMATE_FILE
    if not est.is_file():
        raise BenchError(f"raw finn-plus wrote no {est}; see {log}")
    return seconds, json.loads(est.read_text(encoding="utf-8"))


def timed_steps(names: list[str], sink: dict[str, float]) -> list[Callable[..., Any]]:
    """The step functions, each wrapped to record its wall time in ``sink`` (names kept)."""
    from finn.builder.build_dataflow_steps import build_dataflow_step_lookup

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(model: Any, cfg: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(model, cfg)
            sink[fn.__name__] = time.perf_counter() - t0
            return out

        return run

    return [wrap(build_dataflow_step_lookup[n]) for n in names]


# --------------------------------------------------------------------------------------------------
# hwkit


def hwkit_compile(model: Path, target: str, out: Path, target_fps: float,
                  from_step: str | None = None) -> tuple[float, Report]:
    t0 = time.perf_counter()
    report = compile_model(model, target, out, from_step=from_step, target_fps=target_fps)
    return time.perf_counter() - t0, report


def hwkit_estimate(out: Path) -> dict[str, Any]:
    """finn-plus's network estimate as hwkit's estimate pass wrote it."""
    hits = sorted((out / PASSES_DIR).glob(f"*-finn.generate_estimate_reports/report/{ESTIMATE_FILE}"))
    if len(hits) != 1:
        raise BenchError(f"expected one {ESTIMATE_FILE} under {out / PASSES_DIR}, found {len(hits)}")
    return json.loads(hits[0].read_text(encoding="utf-8"))


def check_passes(report: Report, expect_cached: Callable[[int], bool], what: str) -> None:
    wrong = [p.id for i, p in enumerate(report.passes) if p.cached != expect_cached(i)]
    if wrong:
        raise BenchError(f"{what}: unexpected cache state for pass(es) {', '.join(wrong)}")


# --------------------------------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio <= target else "MISS"


def run(args: argparse.Namespace, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    model = Path(args.model).resolve()
    board = load_board(args.target)
    flow = load_flow(board.default_flow)
    clock_ns = board.clock_ns if board.clock_ns is not None else 5.0
    fps = float(args.target_fps)  # the CLI passes a float too (and hwkit's cache key tells 1e5 from 100000)
    steps = finn_steps(flow)
    first, rest = flow.steps[0], flow.steps[1:]
    if first.spec.name != "export_qonnx" or any(s.spec.name not in ("verify",) and
                                                 not s.spec.name.startswith("finn.") for s in rest):
        raise BenchError(f"flow '{flow.name}' is not export_qonnx followed by finn.* and verify passes")
    from_step = rest[0].spec.name
    dir_a = work / "hwkit"
    console_log = (work / "raw_console.log").open("w", encoding="utf-8")
    raw_dirs = iter(work / f"raw-{i:02d}" for i in range(1000))

    try:
        say(f"[1/5] hwkit full compile, cold, into {dir_a} ...")
        cold_s, cold_report = hwkit_compile(model, args.target, dir_a, fps)
        check_passes(cold_report, lambda i: False, "cold compile")
        qonnx_src = dir_a / PASSES_DIR / first.id / "model.onnx"
        if not qonnx_src.is_file():
            raise BenchError(f"hwkit exported no QONNX model at {qonnx_src}")
        qonnx = work / "qonnx_input.onnx"  # raw builds read a copy, never hwkit's checkpoint
        shutil.copyfile(qonnx_src, qonnx)

        say("[2/5] raw finn-plus warm-up build (pays finn-plus builder imports; not timed) ...")
        shield_builder()
        raw_build(qonnx, next(raw_dirs), board, clock_ns, fps, list(steps), console_log)

        say(f"[3/5] raw finn-plus vs hwkit from '{from_step}', {args.repeat} time(s) each, alternating ...")
        raw_s: list[float] = []
        from02_s: list[float] = []
        from02_reports: list[Report] = []
        raw_est: dict[str, Any] = {}
        for i in range(args.repeat):
            for side in (("raw", "hwkit") if i % 2 == 0 else ("hwkit", "raw")):
                if side == "raw":
                    s, raw_est = raw_build(qonnx, next(raw_dirs), board, clock_ns, fps, list(steps),
                                           console_log)
                    raw_s.append(s)
                else:
                    s, rep = hwkit_compile(model, args.target, dir_a, fps, from_step=from_step)
                    check_passes(rep, lambda j: j == 0, f"hwkit from {from_step}")
                    from02_s.append(s)
                    from02_reports.append(rep)

        say(f"[4/5] hwkit warm re-run (nothing changed), {args.repeat} time(s) ...")
        warm_s: list[float] = []
        for _ in range(args.repeat):
            s, rep = hwkit_compile(model, args.target, dir_a, fps)
            check_passes(rep, lambda j: True, "warm re-run")
            warm_s.append(s)

        say("[5/5] one raw finn-plus build with per-step timers (for the breakdown; not in the ratios) ...")
        raw_steps: dict[str, float] = {}
        raw_build(qonnx, next(raw_dirs), board, clock_ns, fps, timed_steps(steps, raw_steps), console_log)
    finally:
        console_log.close()

    hw_est = hwkit_estimate(dir_a)
    if hw_est != raw_est:
        raise BenchError(f"hwkit and raw finn-plus disagree on the estimate: {hw_est} vs {raw_est}")

    # Per-pass medians of the from-02 runs, next to the raw step times.
    passes = []
    for j, p in enumerate(from02_reports[0].passes[1:], start=1):
        sec = median([r.passes[j].seconds for r in from02_reports])
        name = p.id.split("-", 1)[1]
        raw_name = "step_" + name.removeprefix("finn.") if name.startswith("finn.") else None
        raw_sec = raw_steps.get(raw_name) if raw_name else None
        passes.append({"id": p.id, "hwkit_s": sec, "raw_step_s": raw_sec})
    finn_sum = sum(p["hwkit_s"] for p in passes if p["raw_step_s"] is not None)
    verify_sum = sum(p["hwkit_s"] for p in passes if p["raw_step_s"] is None)
    raw_med, from02_med, warm_med = median(raw_s), median(from02_s), median(warm_s)
    overhead = from02_med / raw_med
    warm_ratio = warm_med / raw_med
    return {
        "model": str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
        "target": args.target,
        "flow": flow.name,
        "target_fps": fps,
        "clock_ns": clock_ns,
        "repeat": args.repeat,
        "finn_steps": steps,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "tools": tool_versions()},
        "seconds": {
            "hwkit_cold_full": {"median": cold_s, "runs": [cold_s]},
            "raw_finn_plus": {"median": raw_med, "runs": raw_s},
            "hwkit_from_02": {"median": from02_med, "runs": from02_s},
            "hwkit_warm_rerun": {"median": warm_med, "runs": warm_s},
        },
        "hwkit_from_02_passes": passes,
        "hwkit_from_02_breakdown": {
            "finn_passes_s": finn_sum,
            "verify_passes_s": verify_sum,
            "outside_passes_s": from02_med - finn_sum - verify_sum,
            "raw_steps_sum_s": sum(raw_steps.values()),
        },
        "ratios": {
            "overhead": {"value": overhead, "target": OVERHEAD_TARGET,
                         "verdict": verdict(overhead, OVERHEAD_TARGET)},
            "warm_rerun": {"value": warm_ratio, "target": WARM_TARGET,
                           "verdict": verdict(warm_ratio, WARM_TARGET)},
            "finn_passes_only": finn_sum / raw_med,
        },
        "estimate": raw_est,
        "estimates_identical": True,
        "workdir": str(work),
    }


def print_table(r: dict[str, Any]) -> None:
    s = r["seconds"]
    m = r["machine"]
    n = r["repeat"]
    tools = m["tools"]
    print(f"hwkit compile overhead: {r['model']} on {r['target']} (flow {r['flow']}), "
          f"target_fps {r['target_fps']:g}, clock {r['clock_ns']:g} ns, median of {n}")
    print(f"machine: {m['platform']}, {m['cpus']} CPUs, Python {m['python']}; "
          f"hwkit {tools.get('hwkit')}, finn-plus {tools.get('finn-plus')}")
    print()
    rows = [
        ("hwkit full compile, cold (first in process)", s["hwkit_cold_full"]),
        (f"raw finn-plus build_dataflow_cfg ({len(r['finn_steps'])} steps)", s["raw_finn_plus"]),
        (f"hwkit from 02 ({len(r['finn_steps'])} finn steps + verify passes)", s["hwkit_from_02"]),
        ("hwkit warm re-run (all passes cached)", s["hwkit_warm_rerun"]),
    ]
    print(f"{'measurement':<52} {'median s':>9}   runs (s)")
    for label, d in rows:
        print(f"{label:<52} {d['median']:>9.3f}   " + " ".join(f"{x:.3f}" for x in d["runs"]))
    print()
    print(f"hwkit from-02 passes (median of {n} runs) vs raw finn-plus steps (one timed-step run):")
    print(f"{'pass':<44} {'hwkit s':>8} {'raw s':>8} {'hwkit-raw':>10}")
    for p in r["hwkit_from_02_passes"]:
        raw = p["raw_step_s"]
        raw_txt = "-" if raw is None else f"{raw:.3f}"
        diff = p["hwkit_s"] - (raw or 0.0)
        print(f"{p['id']:<44} {p['hwkit_s']:>8.3f} {raw_txt:>8} {diff:>+10.3f}")
    b = r["hwkit_from_02_breakdown"]
    print(f"{'sum of finn passes / raw steps':<44} {b['finn_passes_s']:>8.3f} {b['raw_steps_sum_s']:>8.3f} "
          f"{b['finn_passes_s'] - b['raw_steps_sum_s']:>+10.3f}")
    print(f"{'sum of verify passes':<44} {b['verify_passes_s']:>8.3f}")
    print(f"{'hwkit outside passes (runner, API, report)':<44} {b['outside_passes_s']:>8.3f}")
    print()
    est = r["estimate"]
    print(f"estimates identical: yes (throughput {est.get('estimated_throughput_fps'):,.1f} fps, "
          f"max_cycles {est.get('max_cycles')}, critical path {est.get('critical_path_cycles')} cycles)")
    ov, wr = r["ratios"]["overhead"], r["ratios"]["warm_rerun"]
    print("finn passes only (hwkit sum of finn passes / raw finn-plus) = "
          f"{r['ratios']['finn_passes_only']:.2f}")
    print(f"overhead ratio (hwkit/raw finn-plus) = {ov['value']:.2f} (target <= {ov['target']}) "
          f"{ov['verdict']}")
    print(f"warm re-run ratio (hwkit warm / raw finn-plus) = {wr['value']:.3f} (target <= {wr['target']}) "
          f"{wr['verdict']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model file (default: the bundled example)")
    p.add_argument("--target", default="zcu104", help="hwkit target board (default: zcu104)")
    p.add_argument("--target-fps", type=float, default=100000.0,
                   help="throughput to fold for, frames/s (default: 100000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per timed measurement; the median is used")
    p.add_argument("--workdir", help="where builds go (default: a fresh temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the build directories")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.target_fps <= 0:
        p.error("--target-fps must be positive")

    if args.workdir:
        work = Path(args.workdir).resolve()
        if work.exists() and any(work.iterdir()):
            p.error(f"--workdir {work} must be empty or absent (builds must start fresh)")
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="hwkit-overhead-"))

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        result = run(args, work, say)
    except Exception as exc:  # report any failure, keep the builds for a look
        print(f"benchmark failed: {type(exc).__name__}: {exc} (builds kept in {work})", file=sys.stderr)
        return 1
    result["benchmark_wall_s"] = time.perf_counter() - t0
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        result["workdir"] = None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
        print(f"(benchmark wall time {result['benchmark_wall_s']:.1f} s"
              + (f"; builds kept in {work})" if args.keep else ")"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
