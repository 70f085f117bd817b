"""``hwkit measure-power``: measure board power on the board itself and add it to a build's report.

Run it on the board (e.g. a Zynq UltraScale+ evaluation kit running PYNQ) while the accelerator runs
in another process::

    hwkit measure-power --idle-seconds 5 --seconds 10 --inferences 91000 --into build/cqmlp

It samples the hwmon rail monitors (hwkit/energy/rails.py): first an idle window, then the
measured window, and writes rows labelled ``measured`` into the build's report.json (mean power,
increment over idle, and energy per inference when ``--inferences`` says how many ran), then
re-renders report.md and report.html.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hwkit.cli.args import integer, number
from hwkit.errors import InputError, ToolError


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    m = sub.add_parser("measure-power", help="measure board power from hwmon rail monitors (run on the board)")
    m.add_argument("--seconds", type=number(0, 86400, lo_open=True), default=10.0,
                   help="length of the measured window (default 10)")
    m.add_argument("--idle-seconds", type=number(0, 86400), default=0.0,
                   help="idle window measured first (default none)")
    m.add_argument("--inferences", type=integer(1), help="inferences the workload ran during the measured window")
    m.add_argument("--into", help="build directory whose report gets the measured rows")
    m.add_argument("--hwmon", default="/sys/class/hwmon", help="hwmon root (default /sys/class/hwmon)")
    m.add_argument("--json", action="store_true")


def rows(mean_w: float, idle_w: float | None, energy_j: float, inferences: int | None,
         rails: list[str]) -> list[dict[str, Any]]:
    """Report energy rows (schema 1.2) for one measurement."""
    includes = f"sum of rails {', '.join(rails)}"
    out = [{"name": "rails power", "basis": "measured", "includes": includes, "unit": "W",
            "low": mean_w, "value": mean_w, "high": mean_w, "source": "measured"}]
    if idle_w is not None:
        d = max(mean_w - idle_w, 0.0)
        out.append({"name": "rails power over idle", "basis": "measured", "includes": includes + " minus idle",
                    "unit": "W", "low": d, "value": d, "high": d, "source": "measured"})
    if inferences:
        e = energy_j / inferences * 1e3
        out.append({"name": "rails energy per inference", "basis": "measured", "includes": includes,
                    "unit": "mJ/inference", "low": e, "value": e, "high": e, "source": "measured"})
    return out


def run(args: argparse.Namespace) -> int:
    """Handler of ``hwkit measure-power``."""
    from hwkit.energy.rails import RailMeter

    if args.seconds <= 0 or args.idle_seconds < 0:
        raise InputError("--seconds must be > 0 and --idle-seconds >= 0")
    if args.inferences is not None and args.inferences <= 0:
        raise InputError(f"--inferences must be > 0, got {args.inferences}")
    into = Path(args.into) if args.into else None
    if into is not None:
        from hwkit.report.compare import load_build

        load_build(into)  # a missing, non-UTF-8 or incomplete report.json fails before measuring
    meter = RailMeter(Path(args.hwmon))
    if not meter.available:
        raise ToolError(f"{args.hwmon}: no readable INA2xx power monitors (run this on a board whose rail "
                        "monitors have a hwmon driver, e.g. a PYNQ image on an evaluation kit)")
    idle = meter.measure(seconds=args.idle_seconds) if args.idle_seconds else None
    busy = meter.measure(seconds=args.seconds)
    new = rows(busy.mean_power_w, idle.mean_power_w if idle else None, busy.energy_j, args.inferences,
               list(busy.rails))
    if into is not None:
        from hwkit.outdir import claim
        from hwkit.report import Report
        from hwkit.report.compare import load_build

        doc = load_build(into)
        claim(into, "report", legacy_markers=("report.json",))
        doc["energy"] = [e for e in doc.get("energy", []) if e.get("source") != "measured"] + new
        doc["schema_version"] = max(doc.get("schema_version", "1.2"), "1.2")
        Report.from_json(doc).write(into)
    if args.json:
        print(json.dumps({"seconds": busy.seconds, "samples": busy.samples, "rows": new}, indent=2))
    else:
        for r in new:
            print(f"{r['name']}: {r['value']:.4g} {r['unit']} (measured; {r['includes']})")
    return 0
