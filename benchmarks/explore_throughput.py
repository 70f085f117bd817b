"""Trials per hour of ``hwkit explore`` on this machine, and the speed-up of 2 workers over 1.

Both runs use the same CQMLP search space (bits 2/3/4, depth 1..4, width scale 0.25/0.5, zcu104 at
100k fps, objectives accuracy / LUT / latency / energy) with real training on synthetic CAN data and
a real FINN-estimate compile in every trial, on one SQLite study file:

1. study ``w1``: ``hwkit explore --workers 1`` with a budget of ``--trials`` (default 6);
2. study ``w2``: ``hwkit explore --workers 2`` with twice that budget (two processes sharing the study).

Each run is timed from the command's start to its end (process start-up, imports and data
generation included: what a user waits for) and, from the study's own timestamps, from the first
trial's start to the last trial's end (steady-state trials per hour). It prints both rates and the
2-vs-1 ratio; nothing is asserted (other load on the machine changes it).

    .venv/bin/python benchmarks/explore_throughput.py [--trials 6] [--out /tmp/explore-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
model = "cqmlp"
target = "zcu104"
hardware = "finn-estimate"
trials = {trials}
objectives = ["accuracy", "LUT", "latency_ms", "energy_mj"]
[space]
bits = [2, 3, 4]
depth = [1, 2, 3, 4]
width_scale = [0.25, 0.5]
target_fps = [100000]
[data]
synthetic_seconds = 20
[train]
epochs = 2
max_train_windows = 10000
patience = 0
[study]
name = "{name}"
sampler = "nsga2"
population = 4
seed = 0
"""


def run(out: Path, name: str, trials: int, workers: int) -> dict[str, float]:
    cfg = out / f"{name}.toml"
    cfg.write_text(CONFIG.format(trials=trials, name=name))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hwkit.cli", "explore", str(cfg), "--out", str(out / name),
                           "--workers", str(workers), "--json"], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"explore with {workers} worker(s) failed: {proc.stderr[-2000:]}")
    doc = json.loads(proc.stdout)
    done = [r for r in doc["trials"] if r["state"] in ("COMPLETE", "PRUNED")]
    from datetime import datetime

    starts = [datetime.fromisoformat(r["started_utc"]) for r in done]
    ends = [s.timestamp() + r["seconds"] for s, r in zip(starts, done)]
    span = max(ends) - min(s.timestamp() for s in starts)
    per_trial = sorted(r["seconds"] for r in done)
    return {"trials": len(done), "wall_s": wall, "span_s": span, "per_hour_wall": 3600 * len(done) / wall,
            "per_hour_span": 3600 * len(done) / span, "median_trial_s": per_trial[len(per_trial) // 2],
            "median_train_s": sorted(r["metrics"]["train_s"] for r in done)[len(done) // 2],
            "median_compile_s": sorted(r["metrics"].get("compile_s", 0.0) for r in done)[len(done) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6, help="budget of the 1-worker run (2 workers get twice it)")
    ap.add_argument("--out", default="/tmp/hwkit-explore-bench")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print(f"machine: {os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}")
    one = run(out, "w1", args.trials, 1)
    two = run(out, "w2", 2 * args.trials, 2)
    for label, r in (("1 worker ", one), ("2 workers", two)):
        print(f"{label}: {r['trials']} trials in {r['wall_s']:.1f} s wall ({r['per_hour_wall']:.0f} trials/h); "
              f"first start to last end {r['span_s']:.1f} s ({r['per_hour_span']:.0f} trials/h); median trial "
              f"{r['median_trial_s']:.1f} s (train {r['median_train_s']:.1f} s, compile {r['median_compile_s']:.1f} s)")
    print(f"speed-up 2 workers / 1 worker: {two['per_hour_wall'] / one['per_hour_wall']:.2f}x wall, "
          f"{two['per_hour_span'] / one['per_hour_span']:.2f}x steady-state")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
