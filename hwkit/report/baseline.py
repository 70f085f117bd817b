"""Quality-of-results regression check: a build's report.json against a saved baseline, with tolerances.

Uses :func:`hwkit.report.compare.compare` for the rows and judges each tracked metric in the direction that
matters: more LUTs, power or energy is worse; less fmax, WNS or throughput is worse. A change within
tolerance passes; a worse one beyond it fails; a better one beyond it passes with a note to refresh
the baseline (or fails with ``strict``, so a stale baseline cannot hide a later regression).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from hwkit.report.compare import Row, compare

HIGHER_IS_WORSE = ("resources.*.used", "energy.*", "performance.latency_ms", "performance.finn_estimate_*",
                   "performance.ooc_*")
LOWER_IS_WORSE = ("performance.vivado_fmax_mhz", "performance.vivado_wns_ns", "performance.vivado_routed_wns_ns",
                  "performance.throughput_fps", "performance.vivado_throughput_fps")


@dataclass(frozen=True)
class Tolerance:
    """Allowed change of the metrics matching ``pattern`` (fnmatch over compare's metric names)."""

    pattern: str
    rel_pct: float | None = None
    """Allowed relative change, % of the baseline."""
    abs: float | None = None
    """Allowed absolute change, in the metric's unit (for values near zero such as WNS)."""


DEFAULT_TOLERANCES = (
    Tolerance("resources.*.used", rel_pct=5.0, abs=10),
    Tolerance("performance.vivado_fmax_mhz", rel_pct=5.0),
    Tolerance("performance.vivado_*wns_ns", abs=0.3),
    Tolerance("performance.*throughput_fps", rel_pct=5.0),
    Tolerance("performance.latency_ms", rel_pct=5.0),
    Tolerance("energy.*", rel_pct=10.0),
)


@dataclass(frozen=True)
class Verdict:
    """One checked metric."""

    metric: str
    unit: str
    baseline: float
    current: float
    status: str
    """ok | regressed | improved | missing."""
    allowed: str


def _direction(metric: str) -> int:
    if any(fnmatch.fnmatch(metric, p) for p in LOWER_IS_WORSE):
        return -1
    if any(fnmatch.fnmatch(metric, p) for p in HIGHER_IS_WORSE):
        return 1
    return 0


def _num(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def tolerances_from(data: Mapping[str, Any]) -> tuple[Tolerance, ...]:
    """``{"tolerances": [{"pattern": ..., "rel_pct": ..., "abs": ...}]}`` (a JSON/TOML baseline config)."""
    return tuple(Tolerance(t["pattern"], t.get("rel_pct"), t.get("abs")) for t in data.get("tolerances", []))


def check(baseline: dict[str, Any], current: dict[str, Any],
          tolerances: tuple[Tolerance, ...] = DEFAULT_TOLERANCES) -> list[Verdict]:
    """A verdict for every tracked metric the baseline has (first matching tolerance wins)."""
    rows: list[Row] = compare(baseline, current)
    out = []
    for r in rows:
        tol = next((t for t in tolerances if fnmatch.fnmatch(r.metric, t.pattern)), None)
        if tol is None or not _num(r.a):
            continue
        allowed_parts = [f"{tol.rel_pct:g}%" if tol.rel_pct is not None else "",
                         f"{tol.abs:g} {r.unit}".strip() if tol.abs is not None else ""]
        allowed = " or ".join(p for p in allowed_parts if p)
        if not _num(r.b):
            out.append(Verdict(r.metric, r.unit, float(r.a), float("nan"), "missing", allowed))
            continue
        a, b = float(r.a), float(r.b)
        limit = max(abs(a) * (tol.rel_pct or 0.0) / 100.0, tol.abs or 0.0)
        change = b - a
        direction = _direction(r.metric) or 1
        if abs(change) <= limit:
            status = "ok"
        elif change * direction > 0:
            status = "regressed"
        else:
            status = "improved"
        out.append(Verdict(r.metric, r.unit, a, b, status, allowed))
    return out


def failed(verdicts: list[Verdict], strict: bool = False) -> list[Verdict]:
    """The verdicts that fail the check."""
    bad = {"regressed", "missing"} | ({"improved"} if strict else set())
    return [v for v in verdicts if v.status in bad]
