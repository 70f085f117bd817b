"""CPU energy: the Linux powercap RAPL counters where they are readable, else a documented estimate.

Measured (source ``measured``): the package-level RAPL zones under
``/sys/class/powercap/intel-rapl:N/energy_uj`` (AMD Zen exposes the same interface), read before
and after the timed block, with wrap-around at ``max_energy_range_uj`` handled. The counters cover
the whole package (every process on it), so the number includes whatever else the machine did.

Estimate (source ``analytical-estimate``), when no counter is readable::

    energy_J = tdp_w * utilisation * wall_s,   utilisation = process CPU seconds / (wall_s * cores)

``tdp_w`` and ``cores`` come from the board file's ``[power]`` table (``cores`` defaults to the
host's CPU count). It assumes power scales linearly with utilisation up to TDP and ignores idle,
uncore and DRAM power, so it is a coarse attribution of the package's rated power to this process,
not a measurement.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class EnergyReading:
    """Energy of one timed block."""

    energy_j: float
    """Joules used by the block (measured or estimated)."""
    wall_s: float
    """Wall time of the block in seconds."""
    source: str
    """measured | analytical-estimate."""
    method: str
    """How: which counters, or the estimate's formula with its inputs."""


def rapl_zones(root: Path = POWERCAP) -> list[Path]:
    """Readable package-level RAPL zones (``intel-rapl:N``, not their ``:N:M`` sub-zones)."""
    if not root.is_dir():
        return []
    zones = []
    for z in sorted(root.glob("intel-rapl:*")):
        if z.name.count(":") != 1:
            continue
        f = z / "energy_uj"
        try:
            int(f.read_text().strip())
        except (OSError, ValueError):
            continue
        zones.append(z)
    return zones


def _read_uj(zone: Path) -> int:
    return int((zone / "energy_uj").read_text().strip())


def _range_uj(zone: Path) -> int | None:
    try:
        return int((zone / "max_energy_range_uj").read_text().strip())
    except (OSError, ValueError):
        return None


class RaplMeter:
    """Sum of the package RAPL counters over a block."""

    def __init__(self, root: Path = POWERCAP) -> None:
        self.zones = rapl_zones(root)

    @property
    def available(self) -> bool:
        """True when at least one package counter is readable."""
        return bool(self.zones)

    def measure(self, fn: Callable[[], object]) -> EnergyReading:
        """Run ``fn`` once and return the energy the packages used meanwhile."""
        before = [_read_uj(z) for z in self.zones]
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        after = [_read_uj(z) for z in self.zones]
        total = 0
        for z, b, a in zip(self.zones, before, after):
            delta = a - b
            if delta < 0:  # the counter wrapped
                rng = _range_uj(z)
                delta += rng if rng else 0
            total += max(delta, 0)
        names = ", ".join(f"{z.name} ({_zone_name(z)})" for z in self.zones)
        return EnergyReading(total / 1e6, wall, "measured", f"RAPL energy_uj counters: {names}")


def _zone_name(zone: Path) -> str:
    try:
        return (zone / "name").read_text().strip()
    except OSError:
        return "?"


class UtilisationEstimate:
    """``tdp_w * utilisation * wall`` with utilisation from this process's CPU time."""

    def __init__(self, tdp_w: float, cores: int | None = None) -> None:
        self.tdp_w = float(tdp_w)
        self.cores = int(cores or os.cpu_count() or 1)

    def measure(self, fn: Callable[[], object]) -> EnergyReading:
        """Run ``fn`` once and estimate its energy."""
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        util = min(1.0, cpu / (wall * self.cores)) if wall > 0 else 0.0
        return EnergyReading(
            self.tdp_w * util * wall, wall, "analytical-estimate",
            f"tdp_w {self.tdp_w:g} x utilisation {util:.3f} (process CPU {cpu:.4f} s / (wall {wall:.4f} s x "
            f"{self.cores} cores)) x wall; no readable RAPL counter",
        )
