#!/usr/bin/env python3
"""Compare a build's report.json with a saved baseline (resources, timing, power) within tolerances.

    python scripts/compare_baseline.py BASELINE CURRENT [--tolerances tol.json] [--strict] [--json]

BASELINE and CURRENT are build directories or report.json files. Exit 0 when nothing regressed beyond
its tolerance, 1 when something did (or a tracked metric disappeared; with --strict also when one
improved beyond tolerance: refresh the baseline then). Tolerances default to hwkit.report.baseline's.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from hwkit.errors import HwkitError
    from hwkit.report.baseline import DEFAULT_TOLERANCES, check, failed, tolerances_from
    from hwkit.report.compare import load_build

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("baseline")
    p.add_argument("current")
    p.add_argument("--tolerances", help='JSON file {"tolerances": [{"pattern", "rel_pct", "abs"}]}')
    p.add_argument("--strict", action="store_true", help="also fail on improvements beyond tolerance")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        base = load_build(Path(args.baseline), complete=False)
        cur = load_build(Path(args.current), complete=False)
        tols = DEFAULT_TOLERANCES
        if args.tolerances:
            tols = tolerances_from(json.loads(Path(args.tolerances).read_text(encoding="utf-8")))
    except (HwkitError, OSError, json.JSONDecodeError) as exc:
        print(f"compare_baseline: error: {exc}", file=sys.stderr)
        return 2
    verdicts = check(base, cur, tols)
    bad = failed(verdicts, args.strict)
    if args.json:
        print(json.dumps({"ok": not bad, "verdicts": [asdict(v) for v in verdicts]}, indent=2, default=str))
    else:
        for v in verdicts:
            print(f"{v.status:9s} {v.metric:45s} {v.baseline:>14.6g} -> {v.current:<14.6g} {v.unit:8s} "
                  f"(allowed {v.allowed})")
        print(f"{len(bad)} of {len(verdicts)} tracked metrics fail" if bad else f"all {len(verdicts)} tracked "
              "metrics within tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
