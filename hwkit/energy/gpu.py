"""GPU energy: the NVML total-energy counter through pynvml when it is installed, else an estimate.

Measured (source ``measured``): ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the
driver loaded, Volta and newer) before and after the timed block, for the device ONNX Runtime runs
on (``device_id`` of the CUDA provider, default 0). pynvml is optional: hwkit never installs it.

Estimate (source ``analytical-estimate``) without NVML: ``tdp_w * wall_s`` with ``tdp_w`` from the
board file's ``[power]`` table, i.e. the GPU assumed at its rated board power for the whole block.
Host CPU energy is not included. It is an upper bound for a busy GPU, not a measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hwkit.energy.cpu import EnergyReading


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError when there is no driver / no GPU
        return None
    return pynvml


class NvmlMeter:
    """Energy counter of one NVIDIA GPU."""

    def __init__(self, device_id: int = 0) -> None:
        self.nvml = _nvml()
        self.handle = None
        if self.nvml is not None:
            try:
                self.handle = self.nvml.nvmlDeviceGetHandleByIndex(device_id)
                self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            except Exception:  # counter not supported on this GPU
                self.handle = None
        self.device_id = device_id

    @property
    def available(self) -> bool:
        """True when the energy counter is readable."""
        return self.handle is not None

    def measure(self, fn: Callable[[], object]) -> EnergyReading:
        """Run ``fn`` once and return the GPU's energy meanwhile."""
        assert self.nvml is not None and self.handle is not None
        before = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        after = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        return EnergyReading((after - before) / 1e3, wall, "measured",
                             f"NVML total energy counter of GPU {self.device_id}")


class BoardPowerEstimate:
    """``tdp_w * wall``: the GPU at its rated power for the whole block."""

    def __init__(self, tdp_w: float) -> None:
        self.tdp_w = float(tdp_w)

    def measure(self, fn: Callable[[], object]) -> EnergyReading:
        """Run ``fn`` once and estimate its energy."""
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        return EnergyReading(self.tdp_w * wall, wall, "analytical-estimate",
                             f"tdp_w {self.tdp_w:g} x wall {wall:.4f} s (GPU at rated power; no NVML counter)")
