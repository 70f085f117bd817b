"""The FINN backend's part of a report: FINN's estimates, the analytical power estimate (pass
``estimate_power``) and, after a bitstream flow, Vivado's numbers."""

from __future__ import annotations

from typing import Any

from hwkit.board import RESOURCE_KEYS, Board
from hwkit.report import LAYER_RESOURCES, LayerRow, Quantity, ResourceUse, Section


def _layers(finn: dict[str, Any]) -> list[LayerRow]:
    est = finn["estimates"]
    res, cyc = est["layer_resources"] or {}, est["layer_cycles"] or {}
    rows = []
    for layer in finn["layers"]:
        name = layer["name"]
        r = res.get(name, {})
        floating = "FLOAT32" in (layer.get("input_dtype"), layer.get("output_dtype"))
        if floating and not any(r.get(k) for k in LAYER_RESOURCES):
            # a FLOAT32 layer finn-plus has no resource model for: its 0 is "unknown", not "free"
            r = {k: None for k in r}
        rows.append(LayerRow(
            name=name, op=layer["op"], torch_layer=layer.get("torch_layer"), pe=layer.get("pe"),
            simd=layer.get("simd"), input_dtype=layer.get("input_dtype"), weight_dtype=layer.get("weight_dtype"),
            output_dtype=layer.get("output_dtype"),
            cycles=Quantity(cyc.get(name), "cycles", "finn-estimate"),
            resources={k: Quantity(r[k], "count", "finn-estimate" if r[k] is not None else "not-estimated")
                       for k in LAYER_RESOURCES if k in r},
        ))
    return rows


def _resources(finn: dict[str, Any], board: Board) -> tuple[dict[str, ResourceUse], bool, list[str]]:
    total = (finn["estimates"]["layer_resources"] or {}).get("total", {})
    uses, notes, fits = {}, [], True
    for key in RESOURCE_KEYS:
        avail = board.resources.get(key, 0)
        used = total.get(key)
        if used is None:
            uses[key] = ResourceUse(Quantity(None, "count", "not-estimated"), Quantity(avail, "count", "board-data"),
                                    Quantity(None, "%", "not-estimated"))
            continue
        pct = (100.0 * used / avail) if avail else (0.0 if used == 0 else float("inf"))
        if used > avail:
            fits = False
            notes.append(f"{key} {used:g} > {avail} available")
        uses[key] = ResourceUse(Quantity(used, "count", "finn-estimate"), Quantity(avail, "count", "board-data"),
                                Quantity(None if pct == float("inf") else round(pct, 3), "%", "derived"))
    return uses, fits, notes


def _merge_vivado(
    vivado: dict[str, Any], perf: dict[str, Quantity], resources: dict[str, ResourceUse], board: Board,
    energy: list[dict[str, Any]], warnings: list[str], fits: bool | None, notes: list[str], clock: float | None,
) -> tuple[bool | None, list[str]]:
    """Vivado's numbers (source tool-report) beside FINN's estimates and the analytical power model.

    Resources: the whole design after synthesis (accelerator + shell) when the bitfile was built, else
    the accelerator after out-of-context place and route; they replace FINN's estimate in the resource
    table (kept as ``finn_estimate_<R>`` in performance) and decide whether the design fits.
    """
    from hwkit.backends.finn.vivado_reports import VivadoResults

    v = VivadoResults.from_json(vivado)
    for key, q in (("vivado_wns_ns", (v.wns_ns, "ns")), ("vivado_fmax_mhz", (v.fmax_mhz, "MHz")),
                   ("vivado_throughput_fps", (v.ooc_throughput_fps, "frames/s")),
                   ("vivado_routed_wns_ns", (v.routed_wns_ns, "ns"))):
        if q[0] is not None:
            perf[key] = Quantity(q[0], q[1], "tool-report")
    for r, n in (v.ooc_resources or {}).items():
        perf[f"ooc_{r}"] = Quantity(n, "count", "tool-report")
    used = v.design_resources or v.ooc_resources
    if used:
        scope = "whole design after synthesis" if v.design_resources else "accelerator after out-of-context P&R"
        fits, notes = True, []
        for key in RESOURCE_KEYS:
            if key not in used:
                continue
            old = resources.get(key)
            if old is not None and old.used.source != "not-estimated":
                perf[f"finn_estimate_{key}"] = Quantity(old.used.value, "count", old.used.source)
            avail = board.resources.get(key, 0)
            pct = round(100.0 * used[key] / avail, 3) if avail else None
            if used[key] > avail:
                fits = False
                notes.append(f"{key} {used[key]} > {avail} available (Vivado)")
            resources[key] = ResourceUse(Quantity(used[key], "count", "tool-report"),
                                         Quantity(avail, "count", "board-data"), Quantity(pct, "%", "derived"))
        warnings.append(f"resources are Vivado's ({scope}); FINN's estimates are kept as finn_estimate_* rows")
    for wns, what in ((v.wns_ns, "out-of-context"), (v.routed_wns_ns, "routed design")):
        if wns is not None and wns < 0:
            warnings.append(f"timing not met ({what}): WNS {wns:.3f} ns at a {clock} ns clock; raise --clock-ns "
                            "or reduce folding")
    lat = perf.get("latency_ms", Quantity(None, "ms", "")).value
    fps = perf.get("throughput_fps", Quantity(None, "frames/s", "")).value
    points = list(v.power)
    if not points and v.ooc_power_w is not None:
        from hwkit.backends.finn.vivado_reports import PowerPoint

        points = [PowerPoint("default activity (OOC report_power)", None, v.ooc_power_w, float("nan"), float("nan"))]
    for pt in points:
        includes = f"PL, Vivado report_power of the routed accelerator, {pt.activity}"
        for name, basis, unit, k in (("power", "power", "W", 1.0),
                                     ("energy, single-shot", "single-shot", "mJ/inference", lat),
                                     ("energy, streaming", "streaming", "mJ/inference", 1e3 / fps if fps else None)):
            if not k:
                continue
            val = pt.total_w * k
            energy.append({"name": f"PL {name} (Vivado, {pt.activity})", "basis": basis, "includes": includes,
                           "unit": unit, "low": val, "value": val, "high": val, "source": "tool-report"})
    if points:
        warnings.append("Vivado power (tool-report) covers the accelerator's PL only, at the activity named in "
                        "each row; the analytical rows beside it are hwkit's model")
    return fits, notes


def report_section(meta: dict[str, Any], board: Board, settings: dict[str, Any]) -> Section:
    """FINN's estimates (layers, resources, fit), the power rows of ``estimate_power``, Vivado's numbers."""
    sec = Section()
    finn = meta.get("finn")
    perf = sec.performance
    if finn:
        net = finn["estimates"]["network_performance"]
        perf["throughput_fps"] = Quantity(net.get("estimated_throughput_fps"), "frames/s", "finn-estimate")
        lat_ns = net.get("estimated_latency_ns")
        perf["latency_ms"] = Quantity(None if lat_ns is None else lat_ns / 1e6, "ms", "finn-estimate")
        perf["critical_path_cycles"] = Quantity(net.get("critical_path_cycles"), "cycles", "finn-estimate")
        perf["max_cycles"] = Quantity(net.get("max_cycles"), "cycles", "finn-estimate")
        sec.bottleneck_layer = net.get("max_cycles_node_name")
        sec.layers = _layers(finn)
        sec.resources, sec.fits, sec.fit_notes = _resources(finn, board)
        sec.warnings.append("latency is FINN's critical-path estimate (sum of layer cycles, no overlap): pessimistic")
        sec.warnings.append("FINN estimates no flip-flops (FF); FF use is reported as not estimated")
        target_fps = settings.get("target_fps")
        fps = net.get("estimated_throughput_fps")
        if target_fps and fps is not None and fps < target_fps:
            sec.warnings.append(f"estimated throughput {fps:,.0f} fps is below the target {target_fps:,.0f} fps")
    power = meta.get("fpga_power")
    if power:
        sec.energy += power["energy"]
        sec.warnings.append(
            f"power and energy are an analytical model's range (toggle {power['toggle_rate']:.1%}, FF = LUT x "
            "ratio since FINN estimates no FF); see docs/power-sources.md for what each coefficient rests on"
        )
    if meta.get("vivado"):
        clock = settings.get("clock_ns") if board.kind == "fpga" else None
        sec.fits, sec.fit_notes = _merge_vivado(meta["vivado"], perf, sec.resources, board, sec.energy,
                                                sec.warnings, sec.fits, sec.fit_notes, clock)
    return sec
