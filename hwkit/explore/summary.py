"""The exploration's summary: ``summary.json``, ``summary.md`` and a self-contained ``report.html``
with the Pareto front as a table and as plots (accuracy against each cost objective)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hwkit.artifact import write_json_atomic, write_text_atomic
from hwkit.explore.config import METRICS, ExploreConfig
from hwkit.explore.front import BEST_RULE, pareto_front, pick_best
from hwkit.report import svg as svgplot

SUMMARY_SCHEMA = "hwkit-explore-summary"
SUMMARY_VERSION = "1.0"


def build_summary(cfg: ExploreConfig, rows: list[dict[str, Any]], storage: str, tools: dict[str, str]
                  ) -> dict[str, Any]:
    """The summary document: every trial, the front, the design --best would pick, plot rows."""
    front = pareto_front(rows, cfg.objectives)
    best = pick_best(rows, cfg.objectives)
    for r in rows:
        r["on_front"] = r["number"] in front
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    pareto = []
    for cost in (o for o in cfg.objectives if o != "accuracy"):
        pts = [r for r in rows if r["state"] == "COMPLETE" and r["metrics"].get(cost) is not None]
        front2 = set(pareto_front([{**r, "feasible": True} for r in pts if r["feasible"]], ["accuracy", cost]))
        pareto += [{"cost": float(r["metrics"][cost]), "accuracy": float(r["metrics"]["accuracy"]),
                    "label": f"#{r['number']}", "on_front": r["number"] in front2, "cost_name": cost,
                    "trial": r["number"], "feasible": r["feasible"]} for r in pts]
    return {
        "schema": SUMMARY_SCHEMA, "schema_version": SUMMARY_VERSION,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": cfg.source, "study": cfg.study_name(), "storage": storage, "target": cfg.target,
        "hardware": cfg.hardware, "budget": cfg.trials, "objectives": [
            {"name": o, "direction": METRICS[o][0], "unit": METRICS[o][2], "description": METRICS[o][3]}
            for o in cfg.objectives],
        "constraints": {"fits": cfg.constraints.fits, "accuracy_min": cfg.constraints.accuracy_min,
                        **{f"{m}_max": v for m, v in cfg.constraints.max}},
        "states": states, "front": front, "best": None if best is None else best["number"], "best_rule": BEST_RULE,
        "trials": rows, "pareto": pareto, "tools": tools,
    }


def write_summary(doc: dict[str, Any], out: Path) -> list[Path]:
    """Write summary.json, summary.md and report.html into ``out``."""
    paths = [out / "summary.json", out / "summary.md", out / "report.html"]
    write_json_atomic(paths[0], json.loads(json.dumps(doc, default=str)))
    write_text_atomic(paths[1], to_markdown(doc))
    write_text_atomic(paths[2], render_html(doc))
    return paths


def _v(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def _front_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    by = {r["number"]: r for r in doc["trials"]}
    return [by[n] for n in doc["front"]]


def _columns(doc: dict[str, Any]) -> tuple[list[str], list[str]]:
    params: list[str] = []
    for r in doc["trials"]:
        params += [k for k in r["params"] if k not in params]
    return params, [o["name"] for o in doc["objectives"]]


def to_markdown(doc: dict[str, Any]) -> str:
    """summary.md."""
    params, objs = _columns(doc)
    states = ", ".join(f"{n} {k.lower()}" for k, n in sorted(doc["states"].items()))
    lines = [f"# hwkit explore: study {doc['study']}", "",
             f"- config {doc['config']}, target {doc['target']}, hardware {doc['hardware']}, storage {doc['storage']}",
             f"- budget {doc['budget']} finished trials; now: {states or 'no trials'}",
             "- objectives: " + ", ".join(f"{o['name']} ({o['direction']})" for o in doc["objectives"]),
             f"- best (`hwkit explore --best`): {'trial ' + str(doc['best']) if doc['best'] is not None else 'none'}"
             f" — {doc['best_rule']}", "", "## Pareto front (feasible designs)", ""]
    head = ["trial", *params, *objs, "test accuracy"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in _front_rows(doc):
        cells = [str(r["number"]), *[_v(r["params"].get(p)) for p in params], *[_v(r["metrics"].get(o)) for o in objs],
                 _v(r["metrics"].get("test_accuracy"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## All trials", "", "| trial | state | " + " | ".join([*params, *objs]) + " | note |",
              "|" + "---|" * (len(params) + len(objs) + 3)]
    for r in doc["trials"]:
        note = r.get("error") or r.get("pruned") or "; ".join(r.get("violations") or []) or (
            "on front" if r.get("on_front") else "")
        lines.append(f"| {r['number']} | {r['state']} | " + " | ".join(
            [*[_v(r["params"].get(p)) for p in params], *[_v(r["metrics"].get(o)) for o in objs]]) + f" | {note} |")
    return "\n".join(lines) + "\n"


def render_html(doc: dict[str, Any]) -> str:
    """report.html: front table, plots (accuracy vs each cost), all trials."""
    from hwkit.report.html import _CSS, _esc, _figure, _num, _table

    params, objs = _columns(doc)
    title = f"hwkit explore: study {doc['study']}"
    states = ", ".join(f"{n} {k.lower()}" for k, n in sorted(doc["states"].items()))
    parts = [f"<h1>{_esc(title)}</h1>",
             f'<div class="sub">target {_esc(doc["target"])} · hardware {_esc(doc["hardware"])} · budget '
             f'{doc["budget"]} · {_esc(states)} · {_esc(doc["created_utc"])}</div>',
             f"<p>Best design (<code>hwkit explore --best</code>): <b>"
             f"{'trial ' + str(doc['best']) if doc['best'] is not None else 'none yet'}</b> — {_esc(doc['best_rule'])}."
             "</p>", "<h2>Pareto front</h2>"]
    front = _front_rows(doc)
    parts.append(_table(["trial", *params, *objs, "test accuracy"],
                        [[str(r["number"]), *[_num(r["params"].get(p)) for p in params],
                          *[_num(r["metrics"].get(o)) for o in objs], _num(r["metrics"].get("test_accuracy"))]
                         for r in front]) if front else "<p>No complete, feasible trial yet.</p>")
    plots = []
    for o in objs:
        if o == "accuracy":
            continue
        pts = [p for p in doc["pareto"] if p["cost_name"] == o]
        if pts:
            svg = svgplot.scatter([p["cost"] for p in pts], [p["accuracy"] for p in pts], [p["label"] for p in pts],
                                  f"{o} ({METRICS[o][2]})", "validation accuracy", [p["on_front"] for p in pts])
            plots.append(_figure(f"pareto-{o}", svg, f"Accuracy against {o}: every complete trial; the line joins "
                                 "the feasible designs that no other feasible design beats on both axes."))
    if plots:
        parts.append("<h2>Plots</h2>")
        parts.extend(plots)
    parts.append("<h2>All trials</h2>")
    parts.append(_table(["trial", "state", *params, *objs, "note"], [
        [str(r["number"]), _esc(r["state"]), *[_num(r["params"].get(p)) for p in params],
         *[_num(r["metrics"].get(o)) for o in objs],
         _esc(r.get("error") or r.get("pruned") or "; ".join(r.get("violations") or [])
              or ("on front" if r.get("on_front") else ""))] for r in doc["trials"]]))
    parts.append("<h2>Tools</h2><p>" + ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in doc["tools"].items()) + "</p>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")
