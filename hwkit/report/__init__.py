"""Typed reports: every number carries its unit and where it came from.

Written as ``report.json`` (schema ``hwkit/schemas/report-1.schema.json``, versioned by
``schema_version``), ``report.md``, and a console table.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hwkit.artifact import thaw
from hwkit.board import Board
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


@dataclass
class Section:
    """What one backend adds to a report; :func:`build_report` merges the sections in a fixed order.

    ``performance`` and ``resources`` update the report's (a later section may replace a resource
    row, e.g. Vivado's numbers over FINN's estimate); ``fits``/``fit_notes`` replace the verdict when
    ``fits`` is not None; lists are appended; ``target`` adds fields to the report's target.
    """

    performance: dict[str, Quantity] = field(default_factory=dict)
    """Named quantities (throughput, latency, accuracy, ...)."""
    layers: list[LayerRow] = field(default_factory=list)
    """Per hardware layer rows (FPGA builds)."""
    resources: dict[str, ResourceUse] = field(default_factory=dict)
    """Use of each resource against the part's total."""
    fits: bool | None = None
    """Whether the design fits the part; None: this section has no verdict."""
    fit_notes: list[str] = field(default_factory=list)
    """Why it does not fit."""
    bottleneck_layer: str | None = None
    """The layer that sets the throughput."""
    energy: list[dict[str, Any]] = field(default_factory=list)
    """Power and energy rows (name, basis, includes, unit, low, value, high, source)."""
    warnings: list[str] = field(default_factory=list)
    """What the reader must know about these numbers."""
    measurement: dict[str, Any] | None = None
    """Raw results of a measured build."""
    target: dict[str, Any] = field(default_factory=dict)
    """Fields added to the report's target (e.g. execution providers)."""

    def merge(self, other: Section) -> None:
        """Fold ``other`` (a later section) into this one."""
        self.performance.update(other.performance)
        self.layers += other.layers
        self.resources.update(other.resources)
        if other.fits is not None:
            self.fits, self.fit_notes = other.fits, list(other.fit_notes)
        self.bottleneck_layer = other.bottleneck_layer or self.bottleneck_layer
        self.energy += other.energy
        self.warnings += other.warnings
        if other.measurement:
            self.measurement = other.measurement
        self.target.update(other.target)


SectionFn = Callable[[dict[str, Any], Board, dict[str, Any]], Section]
"""``(metadata of the last artifact, board, compile settings) -> Section``."""

SECTIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("finn", ("finn", "fpga_power", "vivado"), "hwkit.backends.finn.report:report_section"),
    ("onnxruntime", ("measurement", "ort"), "hwkit.backends.ort:report_section"),
    ("analog", ("analog",), "hwkit.backends.analog:report_section"),
)
"""(backend, the metadata keys its passes write, its section builder). A builder is imported only
when the build's metadata has one of its keys, so the report never imports a backend it did not use."""


def _section_fn(ref: str) -> SectionFn:
    module, _, name = ref.partition(":")
    fn: SectionFn = getattr(importlib.import_module(module), name)
    return fn


def build_report(
    final_meta: dict[str, Any],
    model: dict[str, Any],
    board: Board,
    settings: dict[str, Any],
    flow: str,
    passes: list[PassTiming],
    tools: dict[str, str],
) -> Report:
    """Assemble the report: the board's part, then every backend's section merged in order."""
    meta = thaw(final_meta)
    merged = Section(warnings=list(meta.get("warnings", [])))
    clock = settings.get("clock_ns")
    if board.kind == "fpga":
        merged.performance["clock_ns"] = Quantity(clock, "ns", "setting")
        merged.performance["clock_mhz"] = Quantity(round(1000.0 / clock, 3) if clock else None, "MHz", "derived")
    for _, keys, ref in SECTIONS:
        if any(meta.get(k) for k in keys):
            merged.merge(_section_fn(ref)(meta, board, settings))
    target = {**board.summary(), "board": board.name, "clock_ns": clock, "target_fps": settings.get("target_fps")}
    target.pop("name")
    target.pop("description")
    target.update(merged.target)
    return Report(
        created_utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model=model, target=target, flow=flow, passes=passes,
        verification=meta.get("verification", []), layers=merged.layers, resources=merged.resources,
        fits=merged.fits, fit_notes=merged.fit_notes, performance=merged.performance,
        bottleneck_layer=merged.bottleneck_layer, tools=tools, warnings=merged.warnings,
        measurement=merged.measurement, energy=merged.energy,
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
