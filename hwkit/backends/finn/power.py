"""The analytical FPGA power estimate as a pass (``estimate_power``), cached like every other pass.

It runs after ``finn.generate_estimate_reports`` and turns FINN's resource estimate, the clock and
the board's ``[power]`` section into power and energy-per-inference rows (hwkit/energy/fpga.py),
stored as ``fpga_power`` in the artifact's metadata; the report only shows them.
"""

from __future__ import annotations

from hwkit.artifact import Artifact
from hwkit.board import RESOURCE_KEYS, PowerSection
from hwkit.config import Context
from hwkit.registry import register


@register("estimate_power", uses=("clock_ns", "board"))
def estimate_power(art: Artifact, ctx: Context) -> Artifact:
    """Analytical FPGA power and energy per inference from FINN's resource estimate (a low..high range)."""
    from hwkit.energy.fpga import energy_entries
    from hwkit.energy.fpga import estimate_power as model

    finn = art.meta.get("finn")
    clock = ctx.settings.clock_ns
    power = ctx.board.power
    if not finn or not clock or power is None or power == PowerSection():
        ctx.log.info("no FINN estimate, clock or [power] data: no power estimate")
        return art
    total = (finn["estimates"]["layer_resources"] or {}).get("total", {})
    used = {k: total.get(k) for k in RESOURCE_KEYS}
    net = finn["estimates"]["network_performance"]
    lat_ns = net.get("estimated_latency_ns")
    est = model(used, 1000.0 / clock, ctx.board)
    rows = energy_entries(est, None if lat_ns is None else lat_ns / 1e6, net.get("estimated_throughput_fps"))
    return art.evolve(fpga_power={"energy": rows, "toggle_rate": est.toggle_rate})
