"""Parsers for the Vivado results finn-plus 1.6.1 writes into a step's ``report/`` directory.

Pure functions over files (no finn-plus import), so they are tested on report files written by the
tests in the shapes finn-plus writes them:

- ``ooc_synth_and_timing.json`` (step_out_of_context_synthesis): the dict of
  ``finn.util.vivado.parse_ooc_synth_results`` — LUT, FF, DSP, BRAM_36K, BRAM_18K, URAM, SRL, LUTRAM,
  BRAM (36K tiles), WNS (ns), total_power_W, clk_period_ns, vivado_version, fmax_mhz — plus
  ``estimated_throughput_fps`` (fmax / FINN's max cycles) and two paths.
- ``post_synth_resources.json`` (step_synthesize_bitfile, Zynq): ``{instance: {LUT, SRL, FF, BRAM_36K,
  BRAM_18K, [URAM], DSP}}`` where ``(top)`` is the whole design (shell included).
- ``post_route_timing.rpt`` (step_synthesize_bitfile, Zynq): Vivado's report_timing_summary text.
- ``power_estimate_summary.json`` (step_vivado_power_estimation): ``power_<toggle>_<static prob>_{total,
  static,dynamic}`` in W for toggle rates 12.5, 25, 50, 75, 100 %, and ``power_sim_{total,static,dynamic}``
  when switching activity was simulated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwkit.errors import ToolError

OOC_FILE = "ooc_synth_and_timing.json"
POST_SYNTH_FILE = "post_synth_resources.json"
TIMING_FILE = "post_route_timing.rpt"
POWER_FILE = "power_estimate_summary.json"
RESOURCES = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")


@dataclass(frozen=True)
class PowerPoint:
    """One Vivado report_power result, in W."""

    activity: str
    """``toggle 12.5%`` (fixed toggle rate, static probability 0.5) or ``simulated`` (SAIF)."""
    toggle_pct: float | None
    """Toggle rate in %, None for simulated activity."""
    total_w: float
    static_w: float
    dynamic_w: float


@dataclass(frozen=True)
class VivadoResults:
    """What Vivado reported for one build (each part None when its step did not run)."""

    ooc_resources: dict[str, int] | None = None
    """Out-of-context post-route resources of the accelerator alone."""
    wns_ns: float | None = None
    """Worst negative slack of the out-of-context run, ns (negative: timing not met)."""
    fmax_mhz: float | None = None
    """1000 / (clock period - WNS), as finn-plus computes it."""
    ooc_clock_ns: float | None = None
    ooc_throughput_fps: float | None = None
    """fmax / FINN's max layer cycles."""
    ooc_power_w: float | None = None
    """Total on-chip power of the OOC report_power (default activity)."""
    vivado_version: str | None = None
    design_resources: dict[str, int] | None = None
    """Post-synthesis resources of the whole design ("(top)": accelerator + shell) from the bitfile build."""
    routed_wns_ns: float | None = None
    """WNS of the routed full design (post_route_timing.rpt)."""
    power: list[PowerPoint] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain form for artifact metadata."""
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VivadoResults:
        """Inverse of :meth:`to_json`."""
        return cls(**{**d, "power": [PowerPoint(**p) for p in d.get("power") or []]})


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ToolError(f"{path}: unreadable Vivado report ({exc})") from None


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _resources(d: dict[str, Any]) -> dict[str, int]:
    """LUT/FF/BRAM_18K/URAM/DSP; BRAM_18K counts a RAMB36 as two RAMB18 (as the board totals do)."""
    out: dict[str, int] = {}
    for key in ("LUT", "FF", "URAM", "DSP"):
        v = _num(d.get(key))
        if v is not None:
            out[key] = int(v)
    b18, b36 = _num(d.get("BRAM_18K")), _num(d.get("BRAM_36K"))
    if b18 is not None or b36 is not None:
        out["BRAM_18K"] = int((b18 or 0) + 2 * (b36 or 0))
    return out


def parse_ooc(path: Path) -> dict[str, Any]:
    """``ooc_synth_and_timing.json`` -> resources, WNS, fmax, clock, throughput, power, version."""
    d = _load(path)
    if not isinstance(d, dict) or "fmax_mhz" not in d:
        raise ToolError(f"{path}: not an out-of-context synthesis report (no fmax_mhz)")
    fmax = _num(d.get("fmax_mhz"))
    return {
        "ooc_resources": _resources(d),
        "wns_ns": _num(d.get("WNS")),
        "fmax_mhz": fmax if fmax else None,  # finn-plus writes 0 when WNS >= the clock period
        "ooc_clock_ns": _num(d.get("clk_period_ns")),
        "ooc_throughput_fps": _num(d.get("estimated_throughput_fps")),
        "ooc_power_w": _num(d.get("total_power_W")),
        "vivado_version": str(d["vivado_version"]) if d.get("vivado_version") else None,
    }


def parse_post_synth(path: Path) -> dict[str, int]:
    """``post_synth_resources.json`` -> resources of the whole design (its ``(top)`` row)."""
    d = _load(path)
    top = d.get("(top)") if isinstance(d, dict) else None
    if not isinstance(top, dict):
        raise ToolError(f"{path}: post-synthesis resource report without a '(top)' row")
    return _resources(top)


_WNS_PATTERNS = (
    # header line, an optional line of dashes, then the values (WNS first)
    re.compile(r"WNS\(ns\)\s+TNS\(ns\)[^\n]*\n(?:[ \t]*-{3,}[^\n]*\n)?[ \t]*(-?\d+\.\d+)"),
    re.compile(r"Worst Negative Slack:\s*(-?[\d.]+)\s*ns"),
)


def parse_timing(path: Path) -> float | None:
    """WNS in ns from a Vivado report_timing_summary (``post_route_timing.rpt``)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ToolError(f"{path}: unreadable timing report ({exc.strerror})") from None
    for pat in _WNS_PATTERNS:
        m = pat.search(text)
        if m:
            return float(m.group(1))
    return None


_POWER_KEY = re.compile(r"^power_(sim|[\d.]+_[\d.]+)_(total|static|dynamic)$")


def parse_power(path: Path) -> list[PowerPoint]:
    """``power_estimate_summary.json`` -> one point per activity setting, simulated first."""
    d = _load(path)
    if not isinstance(d, dict):
        raise ToolError(f"{path}: not a power summary")
    groups: dict[str, dict[str, float]] = {}
    for key, value in d.items():
        m = _POWER_KEY.match(key)
        v = _num(value)
        if m and v is not None:
            groups.setdefault(m.group(1), {})[m.group(2)] = v
    points = []
    for name, g in groups.items():
        if not {"total", "static", "dynamic"} <= set(g):
            continue
        if name == "sim":
            points.append(PowerPoint("simulated", None, g["total"], g["static"], g["dynamic"]))
        else:
            toggle = float(name.split("_")[0])
            points.append(PowerPoint(f"toggle {toggle:g}%", toggle, g["total"], g["static"], g["dynamic"]))
    if not points:
        raise ToolError(f"{path}: no power_<activity>_total/static/dynamic entries")
    return sorted(points, key=lambda p: -1.0 if p.toggle_pct is None else p.toggle_pct)


def read_report_dir(report_dir: Path) -> dict[str, Any]:
    """Every Vivado result present in one ``report/`` directory, as VivadoResults fields."""
    out: dict[str, Any] = {}
    if (report_dir / OOC_FILE).is_file():
        out.update(parse_ooc(report_dir / OOC_FILE))
    if (report_dir / POST_SYNTH_FILE).is_file():
        out["design_resources"] = parse_post_synth(report_dir / POST_SYNTH_FILE)
    if (report_dir / TIMING_FILE).is_file():
        out["routed_wns_ns"] = parse_timing(report_dir / TIMING_FILE)
    if (report_dir / POWER_FILE).is_file():
        out["power"] = [p.__dict__ for p in parse_power(report_dir / POWER_FILE)]
    return out
