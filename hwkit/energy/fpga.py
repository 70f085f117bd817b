"""FPGA power and energy without a board: an analytical model, reported as a range.

    P_PL  = P_static(part) + f_clk[MHz] * (toggle / 12.5 %) * sum_r c_r * N_r  +  P_clock_tree
    P_PS  = processor-system power while it drives the accelerator (Zynq boards)
    board = measured idle board power + the PL's dynamic power (where the board file has it)

``N_r`` are the build's resources (FINN's estimate; FF, which FINN does not estimate, is LUT times
a ratio), ``c_r`` the family's coefficients (``boards/families/<family>.toml``), the static and PS
powers the board's ``[power]`` table. Every coefficient is a [low, value, high] triple; the low and
high ends are combined (all low / all high) to give the range. Sources and their status are in
docs/power-sources.md. Energy per inference is given both ways:

- single-shot: power x latency (one frame through an idle pipeline; FINN's critical-path latency);
- streaming: power / throughput (frames back to back at the estimated rate).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hwkit.board import Board, Span, parse_span
from hwkit.errors import BoardError

RESOURCES = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")
SOURCE = "analytical-estimate"


@dataclass(frozen=True)
class FamilyPower:
    """Dynamic-power coefficients of one device family."""

    family: str
    toggle_rate: float
    """Toggle rate the coefficients are given at."""
    uw_per_mhz: dict[str, Span]
    """Per resource, microwatt per MHz."""
    clock_tree_mw: Span
    """Fixed clock-network power of one clock domain, mW."""
    ff_per_lut: Span
    """FF count per LUT, used when the resource estimate has no FF count."""
    source: str


def load_family(family: str) -> FamilyPower:
    """``boards/families/<family>.toml``."""
    path = Path(str(resources.files("hwkit.boards"))) / "families" / f"{family}.toml"
    if not path.is_file():
        raise BoardError(f"no power data for device family '{family}' (expected {path})")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    where = str(path)
    coeffs = data.get("dynamic_uw_per_mhz", {})
    missing = [r for r in RESOURCES if r not in coeffs]
    if missing:
        raise BoardError(f"{where}: [dynamic_uw_per_mhz] lacks {', '.join(missing)}")
    return FamilyPower(
        family=family,
        toggle_rate=float(data.get("toggle_rate", 0.125)),
        uw_per_mhz={r: parse_span(coeffs[r], f"{where}: {r}") for r in RESOURCES},
        clock_tree_mw=parse_span(data["clock_tree_mw"]["value"], f"{where}: clock_tree_mw"),
        ff_per_lut=parse_span(data["ff_per_lut"]["value"], f"{where}: ff_per_lut"),
        source=where,
    )


@dataclass(frozen=True)
class PowerEstimate:
    """Power tiers of one design, in watts."""

    pl_dynamic_w: Span
    pl_static_w: Span
    ps_w: Span | None
    board_idle_w: float | None
    clock_mhz: float
    toggle_rate: float
    ff_estimated: bool
    """True when FF came from the LUT ratio rather than a resource report."""

    @property
    def pl_w(self) -> Span:
        """Programmable logic: static + dynamic."""
        return self.pl_static_w + self.pl_dynamic_w

    def tiers(self) -> list[tuple[str, str, Span]]:
        """(name, what it includes, power) for each tier the board's data supports."""
        out = [("PL", "programmable logic: device static + design dynamic", self.pl_w)]
        if self.ps_w is not None:
            out.append(("PL+PS", "PL + the processor system driving the accelerator", self.pl_w + self.ps_w))
        if self.board_idle_w is not None:
            out.append(("board", "measured idle board power (incl. static and PS) + design dynamic",
                        Span(self.board_idle_w, self.board_idle_w, self.board_idle_w) + self.pl_dynamic_w))
        return out


def estimate_power(used: dict[str, float | None], clock_mhz: float, board: Board,
                   toggle_rate: float | None = None) -> PowerEstimate:
    """Power of a design using ``used`` resources at ``clock_mhz`` on ``board``."""
    power = board.power
    if power is None or power.static_w is None:
        raise BoardError(f"{board.source}: no [power] table with static_w: cannot estimate FPGA power")
    if board.family is None:
        raise BoardError(f"{board.source}: missing field 'family'")
    fam = load_family(board.family)
    toggle = fam.toggle_rate if toggle_rate is None else toggle_rate
    counts = {r: float(used.get(r) or 0.0) for r in RESOURCES}
    ff_estimated = used.get("FF") is None
    dyn = Span(0.0, 0.0, 0.0)
    for r in RESOURCES:
        if r == "FF" and ff_estimated:
            n = fam.ff_per_lut.scale(counts["LUT"])
            c = fam.uw_per_mhz["FF"]
            dyn = dyn + Span(n.low * c.low, n.value * c.value, n.high * c.high)
        else:
            dyn = dyn + fam.uw_per_mhz[r].scale(counts[r])
    dyn_w = dyn.scale(clock_mhz * toggle / fam.toggle_rate * 1e-6) + fam.clock_tree_mw.scale(1e-3)
    return PowerEstimate(
        pl_dynamic_w=dyn_w,
        pl_static_w=power.static_w,
        ps_w=power.ps_w,
        board_idle_w=power.board_idle_w,
        clock_mhz=clock_mhz,
        toggle_rate=toggle,
        ff_estimated=ff_estimated,
    )


def energy_entries(est: PowerEstimate, latency_ms: float | None, throughput_fps: float | None,
                   source: str = SOURCE) -> list[dict[str, Any]]:
    """Report rows: power of each tier, and energy per inference single-shot and streaming, in mJ."""
    rows: list[dict[str, Any]] = []
    for name, includes, p in est.tiers():
        rows.append({"name": f"{name} power", "basis": "power", "includes": includes, "unit": "W",
                     "low": p.low, "value": p.value, "high": p.high, "source": source})
    for name, includes, p in est.tiers():
        if latency_ms:
            e = p.scale(latency_ms)  # W x ms = mJ
            rows.append({"name": f"{name} energy, single-shot", "basis": "single-shot", "includes": includes,
                         "unit": "mJ/inference", "low": e.low, "value": e.value, "high": e.high, "source": source})
        if throughput_fps:
            e = p.scale(1e3 / throughput_fps)
            rows.append({"name": f"{name} energy, streaming", "basis": "streaming", "includes": includes,
                         "unit": "mJ/inference", "low": e.low, "value": e.value, "high": e.high, "source": source})
    return rows
