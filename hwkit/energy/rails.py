"""Measured board power from INA226-style rail monitors exposed through Linux hwmon.

On the Zynq UltraScale+ evaluation kits, and other boards whose PMBus/I2C power monitors have a
kernel driver (as on PYNQ images), each monitor appears as ``/sys/class/hwmon/hwmonN`` with a
``name`` such as ``ina226`` and, per the hwmon sysfs ABI, ``power1_input`` in microwatts, or
``curr1_input`` (mA) and ``in1_input``/``in2_input`` (bus voltage, mV). :class:`RailMeter` samples
every matching rail while a workload runs, integrates power over time (trapezoid rule) and reports
the mean power and energy; an idle window measured before gives the workload's increment over idle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HWMON = Path("/sys/class/hwmon")
DRIVERS = ("ina226", "ina219", "ina230", "ina231", "ina3221", "ina238", "ina260")


@dataclass(frozen=True)
class Rail:
    """One monitored rail."""

    name: str
    """Driver name plus label or hwmon directory, e.g. ``ina226:hwmon3``."""
    path: Path
    """The hwmon directory."""

    def power_w(self) -> float:
        """Instantaneous power of the rail in watts."""
        p = self.path / "power1_input"
        if p.is_file():
            return int(p.read_text().strip()) / 1e6
        current_ma = int((self.path / "curr1_input").read_text().strip())
        bus = self.path / "in2_input" if (self.path / "in2_input").is_file() else self.path / "in1_input"
        return current_ma * int(bus.read_text().strip()) / 1e6


@dataclass(frozen=True)
class PowerSample:
    """Result of one measured window."""

    seconds: float
    samples: int
    mean_power_w: float
    energy_j: float
    rails: tuple[str, ...]


class RailMeter:
    """Samples the board's rail monitors in a background thread."""

    def __init__(self, root: Path = HWMON, drivers: Sequence[str] = DRIVERS, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.rails = self._find(root, drivers)

    @staticmethod
    def _find(root: Path, drivers: Sequence[str]) -> list[Rail]:
        rails = []
        for d in sorted(root.glob("hwmon*")):
            try:
                name = (d / "name").read_text().strip()
            except OSError:
                continue
            if name not in drivers:
                continue
            if not ((d / "power1_input").is_file() or (d / "curr1_input").is_file()):
                continue
            label = (d / "label").read_text().strip() if (d / "label").is_file() else d.name
            rails.append(Rail(f"{name}:{label}", d))
        return rails

    @property
    def available(self) -> bool:
        """True when at least one readable rail exists."""
        return bool(self.rails)

    def total_w(self) -> float:
        """Sum of all rails now, in watts."""
        return sum(r.power_w() for r in self.rails)

    def measure(self, work: Callable[[], object] | None = None, seconds: float | None = None) -> PowerSample:
        """Sample while ``work()`` runs (or for ``seconds`` when no work is given)."""
        if not self.rails:
            raise RuntimeError("no readable power rails under hwmon")
        times: list[float] = []
        watts: list[float] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    w = self.total_w()
                except (OSError, ValueError):  # a rail read while its file is rewritten: skip this sample
                    pass
                else:  # time and power appended together: a failed read once left them unequal (IndexError)
                    times.append(t)
                    watts.append(w)
                stop.wait(self.period_s)

        thread = threading.Thread(target=loop, daemon=True)
        t0 = time.perf_counter()
        thread.start()
        try:
            if work is not None:
                work()
            else:
                time.sleep(seconds or 1.0)
        finally:
            stop.set()
            thread.join()
        times.append(time.perf_counter())
        watts.append(self.total_w())
        sampled = times[-1] - times[0]
        energy = sum((times[i + 1] - times[i]) * (watts[i] + watts[i + 1]) / 2 for i in range(len(times) - 1))
        mean = energy / sampled if sampled > 0 else watts[-1]
        span = times[-1] - t0  # the whole window, which the mean power is taken to cover
        return PowerSample(span, len(watts), mean, mean * span, tuple(r.name for r in self.rails))
