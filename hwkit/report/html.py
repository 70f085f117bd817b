"""A self-contained report.html: tables plus inline SVG plots, no scripts or network fetches.

It renders from the report.json document (a dict), so ``hwkit report BUILD_DIR`` can re-render any
build, whatever version of hwkit wrote it within schema 1.x.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwkit.artifact import write_text_atomic
from hwkit.report import svg as svgplot

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;
padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde;
padding-bottom:.2rem}
.sub{color:#556}table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #dde;padding:.25rem .6rem;text-align:right}th{background:#f3f5fa}
td:first-child,th:first-child{text-align:left}
.src{font-size:.75rem;padding:.05rem .4rem;border-radius:.6rem;background:#eef;color:#334;white-space:nowrap}
.src-measured{background:#dfd}.src-finn-estimate,.src-analytical-estimate{background:#ffe9c7}
.src-simulated{background:#e3dcff}.src-tool-report{background:#d6f0ff}.src-not-estimated{background:#eee;color:#888}
.ok{color:#176c2c;font-weight:600}.bad{color:#b3261e;font-weight:600}
figure{margin:1rem 0}figcaption{font-size:.85rem;color:#556}
.verdict{font-size:1.1rem;margin:.8rem 0}ul.warn li{color:#7a5200}
"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return _esc(v)


def _src(source: str) -> str:
    return f'<span class="src src-{_esc(source)}">{_esc(source)}</span>'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _figure(name: str, svg: str, caption: str) -> str:
    return f'<figure data-plot="{_esc(name)}">{svg}<figcaption>{_esc(caption)}</figcaption></figure>'


def _plots(doc: dict[str, Any]) -> list[str]:
    out = []
    layers = doc.get("layers") or []
    if layers:
        names = [r["name"] for r in layers]
        for key in ("LUT", "BRAM_18K", "URAM", "DSP"):
            vals = [float((r["resources"].get(key) or {}).get("value") or 0) for r in layers]
            if any(vals):
                out.append(_figure(f"layer-{key}", svgplot.hbar(names, vals, f"{key} per layer", "count"),
                                   f"Estimated {key} of each hardware layer (finn-estimate)."))
        cycles = [float(r["cycles"]["value"] or 0) for r in layers]
        bottleneck = doc.get("bottleneck_layer")
        colors = ["#d1495b" if n == bottleneck else svgplot.PALETTE[0] for n in names]
        out.append(_figure("layer-cycles", svgplot.hbar(names, cycles, "cycles per frame", "cycles", colors),
                           "Cycles per frame of each layer; red: the bottleneck, which sets the throughput."))
        clock = (doc.get("target") or {}).get("clock_ns")
        if clock:
            out.append(_figure("latency-breakdown", svgplot.stacked(names, [c * clock / 1000 for c in cycles], "µs"),
                               "Latency breakdown: each layer's cycles at the clock, summed without overlap "
                               "(FINN's pessimistic critical-path estimate)."))
    util = [(k, float(r["utilisation_pct"]["value"])) for k, r in (doc.get("resources") or {}).items()
            if r["utilisation_pct"]["value"] is not None]
    if util:
        colors = ["#d1495b" if v > 100 else "#2e9e5b" for _, v in util]
        out.append(_figure("utilisation", svgplot.hbar([k for k, _ in util], [v for _, v in util],
                                                       "utilisation of the part", "%", colors, ref_line=100.0),
                           "Share of the part's resources the design uses (dashed: 100 %)."))
    energy = doc.get("energy") or []
    for i, unit in enumerate(dict.fromkeys(e.get("unit", "") for e in energy)):
        rows = [e for e in energy if e.get("unit", "") == unit]  # one axis per unit (W, mJ/inference)
        out.append(_figure(f"energy-{i}", svgplot.ranges(
            [f"{e['name']} ({e.get('source', '')})" for e in rows], [e.get("low") for e in rows],
            [e.get("high") for e in rows], [e.get("value") for e in rows], unit, width=760),
            f"{'Power' if unit == 'W' else 'Energy'} tiers in {unit}: range (bar) and central estimate (dot)."))
    metrics = ((doc.get("model") or {}).get("checkpoint_meta") or {}).get("metrics") or {}
    cm = metrics.get("confusion_matrix")
    if cm:
        classes = metrics.get("classes") or [str(i) for i in range(len(cm))]
        out.append(_figure("confusion-matrix", svgplot.heatmap(cm, classes),
                           "Confusion matrix of the test split (rows: true class), from training."))
    pareto = doc.get("pareto") or []
    if pareto:
        out.append(_figure("pareto", svgplot.scatter(
            [p["cost"] for p in pareto], [p["accuracy"] for p in pareto], [str(p.get("label", "")) for p in pareto],
            pareto[0].get("cost_name", "cost"), "accuracy", [bool(p.get("on_front", True)) for p in pareto]),
            "Design-space exploration: accuracy against cost; the line joins the Pareto front."))
    return out


def render_html(doc: dict[str, Any]) -> str:
    """The complete report.html text for a report.json document."""
    t = doc.get("target") or {}
    model = doc.get("model") or {}
    title = f"hwkit report: {Path(str(model.get('path', '?'))).name} on {t.get('board', '?')}"
    parts = [f"<h1>{_esc(title)}</h1>",
             f'<div class="sub">{_esc(t.get("part") or t.get("kind"))} · clock {_num(t.get("clock_ns"))} ns · '
             f'flow {_esc(doc.get("flow"))} · {_esc(doc.get("created_utc"))} · schema {_esc(doc.get("schema_version"))}'
             "</div>"]
    fits = doc.get("fits")
    if fits is not None:
        notes = "; ".join(doc.get("fit_notes") or [])
        parts.append(f'<div class="verdict {"ok" if fits else "bad"}">'
                     f'{"Fits" if fits else "Does not fit"} the part{": " + _esc(notes) if notes else ""}</div>')
    perf = doc.get("performance") or {}
    if perf:
        parts.append("<h2>Performance</h2>")
        parts.append(_table(["metric", "value", "unit", "source"],
                            [[_esc(k), _num(q.get("value")), _esc(q.get("unit")), _src(q.get("source", ""))]
                             for k, q in perf.items() if isinstance(q, dict)]))
        if doc.get("bottleneck_layer"):
            parts.append(f"<p>Bottleneck layer: <b>{_esc(doc['bottleneck_layer'])}</b></p>")
    res = doc.get("resources") or {}
    if res:
        parts.append("<h2>Resources</h2>")
        parts.append(_table(["resource", "used", "available", "utilisation %", "source"],
                            [[_esc(k), _num(r["used"]["value"]), _num(r["available"]["value"]),
                              _num(r["utilisation_pct"]["value"]), _src(r["used"]["source"])]
                             for k, r in res.items()]))
    layers = doc.get("layers") or []
    if layers:
        parts.append("<h2>Layers</h2>")
        keys = ("LUT", "BRAM_18K", "URAM", "DSP")
        parts.append(_table(
            ["layer", "op", "PyTorch layer", "PE", "SIMD", "cycles", *keys],
            [[_esc(r["name"]), _esc(r["op"]), _esc(r.get("torch_layer") or "–"), _num(r.get("pe")),
              _num(r.get("simd")), _num(r["cycles"]["value"]),
              *[_num((r["resources"].get(k) or {}).get("value")) for k in keys]] for r in layers]))
    plots = _plots(doc)
    if plots:
        parts.append("<h2>Plots</h2>")
        parts.extend(plots)
    ver = doc.get("verification") or []
    if ver:
        parts.append("<h2>Hand-off verification</h2>")
        parts.append(_table(
            ["hand-off", "samples", "max abs err", "tolerance", "integer exact", "class agreement", "ok"],
            [[f"{_esc(v['reference'])} → {_esc(v['stage'])}", _num(v["samples"]), _num(v.get("max_abs_err")),
              _num(v.get("tolerance")), _num(v.get("int_exact")), _num(v.get("class_agreement")),
              '<span class="ok">✓</span>' if v["ok"] else '<span class="bad">✗</span>'] for v in ver]))
    if doc.get("warnings"):
        parts.append("<h2>Notes</h2><ul class=\"warn\">" +
                     "".join(f"<li>{_esc(w)}</li>" for w in doc["warnings"]) + "</ul>")
    passes = doc.get("passes") or []
    if passes:
        parts.append("<h2>Passes</h2>")
        parts.append(_table(["pass", "seconds", "cached"],
                            [[_esc(p["id"]), f"{p['seconds']:.3f}", _num(p["cached"])] for p in passes]))
    tools = doc.get("tools") or {}
    parts.append("<h2>Tools</h2><p>" + ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in tools.items()) + "</p>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def write_html(doc: dict[str, Any], out_dir: Path) -> Path:
    """Write report.html atomically; returns its path."""
    path = out_dir / "report.html"
    write_text_atomic(path, render_html(doc))
    return path
