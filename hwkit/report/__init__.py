"""Typed reports: every number carries its unit and where it came from.

Written as ``report.json`` (schema ``hwkit/schemas/report-1.schema.json``, versioned by
``schema_version``), ``report.md``, and a console table.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hwkit.artifact import thaw
from hwkit.board import RESOURCE_KEYS, Board
from hwkit.errors import InputError

REPORT_FILES = ("report.json", "report.md", "report.html")
"""The three files of a report; they are written together or not at all."""
SCHEMA_VERSION = "1.2"
"""1.1 added the optional ``measurement`` (ONNX Runtime builds); 1.2 the optional ``energy`` rows."""
LAYER_RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
"""What finn-plus estimates per layer (it has no flip-flop estimate)."""
SOURCES = (
    "finn-estimate",        # finn-plus analytical estimate (step_generate_estimate_reports)
    "analytical-estimate",  # hwkit's own model
    "board-data",           # boards/<name>.toml
    "setting",              # a compile setting (clock, target fps)
    "derived",              # computed from other numbers in this report
    "measured",             # measured on this machine / board
    "simulated",            # cycle-accurate or device simulation
    "tool-report",          # Vivado / Vitis reports
    "not-estimated",        # no tool gives this number for this flow
)


@dataclass(frozen=True)
class Quantity:
    """A number with its unit and its source (one of :data:`SOURCES`)."""

    value: float | int | None
    unit: str
    source: str


@dataclass(frozen=True)
class LayerRow:
    """One hardware layer."""

    name: str
    op: str
    torch_layer: str | None
    pe: int | None
    simd: int | None
    input_dtype: str | None
    weight_dtype: str | None
    output_dtype: str | None
    cycles: Quantity
    resources: dict[str, Quantity]


@dataclass(frozen=True)
class ResourceUse:
    """Use of one resource against the part's total."""

    used: Quantity
    available: Quantity
    utilisation_pct: Quantity


@dataclass(frozen=True)
class PassTiming:
    """How long one pass of the flow took."""

    id: str
    seconds: float
    cached: bool


@dataclass(frozen=True)
class Report:
    """Everything a build tells the user."""

    created_utc: str
    model: dict[str, Any]
    target: dict[str, Any]
    flow: str
    passes: list[PassTiming]
    verification: list[dict[str, Any]]
    layers: list[LayerRow]
    resources: dict[str, ResourceUse]
    fits: bool | None
    fit_notes: list[str]
    performance: dict[str, Quantity]
    bottleneck_layer: str | None
    tools: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    measurement: dict[str, Any] | None = None
    """Raw results of a measured build (runs, spread, batch sweep, eager, memory/energy method); 1.1."""
    energy: list[dict[str, Any]] = field(default_factory=list)
    """Power and energy rows (name, basis, includes, unit, low, value, high, source); 1.2."""
    schema_version: str = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The report.json document."""
        body = asdict(self)
        if body["measurement"] is None:
            body.pop("measurement")
        if not body["energy"]:
            body.pop("energy")
        return {"schema": "hwkit-report", "schema_version": body.pop("schema_version"), **body}

    def to_markdown(self) -> str:
        """The report.md document."""
        t = self.target
        lines = [f"# hwkit report: {Path(self.model.get('path', '?')).name} on {t['board']}", ""]
        if t["kind"] == "fpga":
            lines.append(f"- target: {t['board']} ({t.get('part') or t['kind']}), clock {t.get('clock_ns')} ns, "
                         f"target fps {t.get('target_fps') or 'none (minimal folding)'}")
        else:
            lines.append(f"- target: {t['board']} ({t['kind']}), execution providers "
                         f"{', '.join(t.get('execution_providers') or []) or '-'}")
        lines.append(f"- flow: {self.flow}; created {self.created_utc}")
        if self.fits is not None:
            verdict = "FITS" if self.fits else "DOES NOT FIT"
            lines.append(f"- **{verdict}** the part" + (f": {'; '.join(self.fit_notes)}" if self.fit_notes else ""))
        lines += ["", "## Performance", "", "| metric | value | unit | source |", "|---|---|---|---|"]
        for k, q in self.performance.items():
            lines.append(f"| {k} | {_fmt(q.value)} | {q.unit} | {q.source} |")
        if self.bottleneck_layer:
            lines += ["", f"Bottleneck layer (sets the throughput): {self.bottleneck_layer}"]
        if self.measurement:
            lines += ["", *_measurement_md(self.measurement)]
        if self.energy:
            lines += ["", "## Power and energy", "", "| quantity | low | value | high | unit | source |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {e['name']} | {_fmt(e['low'])} | {_fmt(e['value'])} | {_fmt(e['high'])} | {e['unit']} | "
                      f"{e['source']} |" for e in self.energy]
            lines += ["", "Single-shot: power x latency (one frame through an idle pipeline); streaming: power / "
                      "throughput. Ranges combine the low and high ends of every coefficient (boards/families/, "
                      "docs/power-sources.md)."]
        if self.resources:
            lines += ["", "## Resources", "", "| resource | used | available | utilisation % | source |",
                      "|---|---|---|---|---|"]
            for k, r in self.resources.items():
                lines.append(f"| {k} | {_fmt(r.used.value)} | {_fmt(r.available.value)} | "
                             f"{_fmt(r.utilisation_pct.value)} | {r.used.source} |")
        if self.layers:
            lines += ["", "## Layers", "",
                      "| layer | op | PyTorch layer | PE | SIMD | cycles | " + " | ".join(LAYER_RESOURCES) + " |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for row in self.layers:
                res = [_fmt(row.resources[k].value) if k in row.resources else "-"
                       for k in LAYER_RESOURCES]
                lines.append(f"| {row.name} | {row.op} | {row.torch_layer or '-'} | {_fmt(row.pe)} | "
                             f"{_fmt(row.simd)} | {_fmt(row.cycles.value)} | " + " | ".join(res) + " |")
            lines.append("")
            lines.append("Layer cycles and resources: finn-estimate (finn-plus analytical models; no FF estimate).")
        if self.verification:
            lines += ["", "## Hand-off verification (golden batch)", "",
                      "| reference -> stage | samples | max abs err | tolerance | integer exact "
                      "| class agreement | ok |",
                      "|---|---|---|---|---|---|---|"]
            for v in self.verification:
                lines.append(f"| {v['reference']} -> {v['stage']} | {v['samples']} | {_fmt(v['max_abs_err'])} | "
                             f"{_fmt(v['tolerance'])} | {_fmt(v.get('int_exact'))} | {_fmt(v.get('class_agreement'))} "
                             f"| {v['ok']} |")
        lines += ["", "## Passes", "", "| pass | seconds | cached |", "|---|---|---|"]
        lines += [f"| {p.id} | {p.seconds:.3f} | {p.cached} |" for p in self.passes]
        lines += ["", "## Tools", ""] + [f"- {k} {v}" for k, v in self.tools.items()]
        if self.warnings:
            lines += ["", "## Warnings", ""] + [f"- {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path) -> None:
        """Write report.json, report.md and report.html together: all three or none.

        Each is written to a temporary first and the three are renamed at the end, so a failure
        (a full disk, a read-only file system, an interrupt) leaves no report file behind.
        report.json is strict JSON: a non-finite number is written as null (see :func:`strict_json`).
        """
        from hwkit.outdir import os_error_message, replace_all
        from hwkit.report.html import render_html

        doc = strict_json(self.to_json())
        texts = {"report.json": json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n",
                 "report.md": self.to_markdown(), "report.html": render_html(doc)}
        pairs: list[tuple[Path, Path]] = []
        try:
            for name, text in texts.items():
                tmp = out_dir / f".{name}.tmp"
                pairs.append((tmp, out_dir / name))
                tmp.write_text(text, encoding="utf-8")
            replace_all(pairs)
        except OSError as exc:
            for tmp, final in pairs:
                tmp.unlink(missing_ok=True)
                final.unlink(missing_ok=True)  # never a mix of this run's and an older run's files
            raise InputError(os_error_message(exc.filename or out_dir, exc)) from None
        except BaseException:
            for tmp, _ in pairs:
                tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Report:
        """Rebuild a report from its report.json document (to re-render it)."""
        def q(d: dict[str, Any]) -> Quantity:
            return Quantity(d["value"], d["unit"], d["source"])

        body = {k: v for k, v in doc.items() if k != "schema"}
        body["passes"] = [PassTiming(**p) for p in doc["passes"]]
        body["layers"] = [LayerRow(**{**r, "cycles": q(r["cycles"]),
                                      "resources": {k: q(v) for k, v in r["resources"].items()}})
                          for r in doc["layers"]]
        body["resources"] = {k: ResourceUse(q(r["used"]), q(r["available"]), q(r["utilisation_pct"]))
                             for k, r in doc["resources"].items()}
        body["performance"] = {k: q(v) for k, v in doc["performance"].items()}
        return cls(**body)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _measurement_md(m: dict[str, Any]) -> list[str]:
    lat = m["latency_b1"]
    lines = ["## Measurement (this machine)", "",
             f"Batch 1: {lat['runs']} timed runs after {m.get('warmup')} warm-up runs; p50 {_fmt(lat['p50_ms'])} ms, "
             f"p90 {_fmt(lat['p90_ms'])} ms, p99 {_fmt(lat['p99_ms'])} ms, stdev {_fmt(lat['stdev_ms'])} ms.", "",
             "| batch | runs | samples/s (median) | p10..p90 samples/s | PyTorch eager samples/s | ratio |",
             "|---|---|---|---|---|---|"]
    eager = {r["batch"]: r for r in (m.get("eager") or {}).get("throughput", [])}
    for r in m["throughput"]:
        e = eager.get(r["batch"])
        ratio = r["samples_per_s"] / e["samples_per_s"] if e else None
        lines.append(f"| {r['batch']} | {r['runs']} | {_fmt(r['samples_per_s'])} | {_fmt(r['p10_samples_per_s'])}.."
                     f"{_fmt(r['p90_samples_per_s'])} | {_fmt(e['samples_per_s'] if e else None)} | {_fmt(ratio)} |")
    lines += ["", f"Peak memory: {m['memory']['method']}."]
    if m.get("energy"):
        lines.append(f"Energy ({m['energy']['source']}): {m['energy']['method']}.")
    return lines


def _ort_performance(m: dict[str, Any]) -> dict[str, Quantity]:
    """Performance quantities of an ONNX Runtime build (``measurement`` metadata of ort.measure)."""
    perf: dict[str, Quantity] = {}
    lat = m["latency_b1"]
    for q in ("p50", "p90", "p99"):
        perf[f"latency_{q}_ms"] = Quantity(lat[f"{q}_ms"], "ms", "measured")
    perf["latency_runs"] = Quantity(lat["runs"], "count", "setting")
    perf["latency_stdev_ms"] = Quantity(lat["stdev_ms"], "ms", "measured")
    for r in m["throughput"]:
        perf[f"throughput_b{r['batch']}_samples_per_s"] = Quantity(r["samples_per_s"], "samples/s", "measured")
    best = next(r for r in m["throughput"] if r["batch"] == m["best_batch"])
    perf["best_batch"] = Quantity(m["best_batch"], "samples", "measured")
    perf["throughput_samples_per_s"] = Quantity(best["samples_per_s"], "samples/s", "measured")
    eager = m.get("eager")
    if eager:
        perf["eager_latency_p50_ms"] = Quantity(eager["latency_b1"]["p50_ms"], "ms", "measured")
        perf["eager_over_ort_latency_ratio_b1"] = Quantity(m["eager_ratio_b1"], "x", "derived")
        perf["ort_over_eager_throughput_ratio_best_batch"] = Quantity(
            m["eager_throughput_ratio"][str(m["best_batch"])], "x", "derived")
    mem = m["memory"]
    perf["peak_memory_mib"] = Quantity(mem.get("peak_mib"), "MiB", "measured" if mem.get("peak_mib") is not None
                                       else "not-estimated")
    e = m.get("energy")
    if e:
        perf["energy_per_inference_b1_mj"] = Quantity(e["j_per_inference_b1"] * 1e3, "mJ", e["source"])
        perf["energy_per_sample_best_batch_mj"] = Quantity(e["j_per_sample_best_batch"] * 1e3, "mJ", e["source"])
    else:
        perf["energy_per_inference_b1_mj"] = Quantity(None, "mJ", "not-estimated")
    return perf


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
    energy: list[dict[str, Any]], warnings: list[str], fits: bool | None, notes: list[str],
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
            clock = perf["clock_ns"].value if "clock_ns" in perf else None
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


def build_report(
    final_meta: dict[str, Any],
    model: dict[str, Any],
    board: Board,
    settings: dict[str, Any],
    flow: str,
    passes: list[PassTiming],
    tools: dict[str, str],
) -> Report:
    """Assemble the report from the last artifact's metadata."""
    meta = thaw(final_meta)
    finn = meta.get("finn")
    bottleneck: str | None = None
    perf: dict[str, Quantity] = {}
    layers: list[LayerRow] = []
    resources: dict[str, ResourceUse] = {}
    fits: bool | None = None
    notes: list[str] = []
    warnings: list[str] = list(meta.get("warnings", []))
    clock = settings.get("clock_ns")
    if board.kind == "fpga":
        perf["clock_ns"] = Quantity(clock, "ns", "setting")
        perf["clock_mhz"] = Quantity(round(1000.0 / clock, 3) if clock else None, "MHz", "derived")
    if finn:
        net = finn["estimates"]["network_performance"]
        perf["throughput_fps"] = Quantity(net.get("estimated_throughput_fps"), "frames/s", "finn-estimate")
        lat_ns = net.get("estimated_latency_ns")
        perf["latency_ms"] = Quantity(None if lat_ns is None else lat_ns / 1e6, "ms", "finn-estimate")
        perf["critical_path_cycles"] = Quantity(net.get("critical_path_cycles"), "cycles", "finn-estimate")
        perf["max_cycles"] = Quantity(net.get("max_cycles"), "cycles", "finn-estimate")
        bottleneck = net.get("max_cycles_node_name")
        layers = _layers(finn)
        resources, fits, notes = _resources(finn, board)
        warnings.append("latency is FINN's critical-path estimate (sum of layer cycles, no overlap): pessimistic")
        warnings.append("FINN estimates no flip-flops (FF); FF use is reported as not estimated")
        target_fps = settings.get("target_fps")
        fps = net.get("estimated_throughput_fps")
        if target_fps and fps is not None and fps < target_fps:
            warnings.append(f"estimated throughput {fps:,.0f} fps is below the target {target_fps:,.0f} fps")
    energy: list[dict[str, Any]] = []
    if finn and clock and board.extra.get("power"):
        from hwkit.energy.fpga import energy_entries, estimate_power

        used = {k: r.used.value for k, r in resources.items()}
        est = estimate_power(used, 1000.0 / clock, board)
        energy = energy_entries(est, perf["latency_ms"].value, perf["throughput_fps"].value)
        warnings.append(
            f"power and energy are an analytical model's range (toggle {est.toggle_rate:.1%}, FF = LUT x "
            "ratio since FINN estimates no FF); see docs/power-sources.md for what each coefficient rests on"
        )
    if meta.get("vivado"):
        fits, notes = _merge_vivado(meta["vivado"], perf, resources, board, energy, warnings, fits, notes)
    measurement = meta.get("measurement")
    if measurement:
        perf.update(_ort_performance(measurement))
        if (measurement.get("energy") or {}).get("source") == "analytical-estimate":
            warnings.append("energy is an analytical estimate (no readable energy counter): "
                            + measurement["energy"]["method"])
    analog = meta.get("analog") or {}
    if analog.get("performance"):  # analog crossbar builds (hwkit/backends/analog.py)
        perf.update({k: Quantity(q["value"], q["unit"], q["source"]) for k, q in analog["performance"].items()})
        energy = energy + list(analog.get("energy", []))
    target = {**board.summary(), "board": board.name, "clock_ns": clock, "target_fps": settings.get("target_fps")}
    target.pop("name")
    target.pop("description")
    if "ort" in meta:
        target["execution_providers"] = meta["ort"]["providers"]
    return Report(
        created_utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model=model, target=target, flow=flow, passes=passes,
        verification=meta.get("verification", []), layers=layers, resources=resources, fits=fits,
        fit_notes=notes, performance=perf, bottleneck_layer=bottleneck, tools=tools, warnings=warnings,
        measurement=measurement or None, energy=energy,
    )


def load_report_json(path: Path) -> dict[str, Any]:
    """Read a report.json (for re-rendering and comparisons)."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def report_schema() -> dict[str, Any]:
    """The JSON Schema of report.json for this schema version (shipped in the package)."""
    from importlib import resources

    text = (resources.files("hwkit.schemas") / "report-1.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, so ``json.dumps(allow_nan=False)`` holds.

    A quantity (a dict with ``value`` and ``source``) whose value is not finite keeps its source and
    gains a ``note`` saying what the value was, so a reader sees why it is null.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        out = {k: strict_json(v) for k, v in obj.items()}
        v = obj.get("value")
        if isinstance(v, float) and not math.isfinite(v) and "source" in obj:
            out["note"] = f"{obj['source']} gave a non-finite value ({v}); written as null"
        return out
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj
