"""``hwkit compare A B``: two builds side by side, with deltas."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hwkit.errors import InputError


@dataclass(frozen=True)
class Row:
    """One compared number."""

    metric: str
    unit: str
    a: float | int | str | None
    b: float | int | str | None
    delta: float | None
    delta_pct: float | None
    source_a: str | None
    source_b: str | None


def load_build(path: Path, complete: bool = True) -> dict[str, Any]:
    """The report.json of a build directory (or the file itself).

    ``complete=False`` accepts any JSON object (a baseline trimmed to the tracked metrics, say);
    by default the document must be a whole hwkit report.
    """
    f = path / "report.json" if path.is_dir() else path
    if not f.is_file():
        raise InputError(f"{path}: no report.json (is it a finished hwkit build directory?)")
    try:
        doc: Any = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{f}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{f}: not UTF-8 text (byte {exc.start}); report.json is UTF-8 JSON") from None
    except RecursionError:
        raise InputError(f"{f}: JSON nested too deeply") from None
    except OSError as exc:
        raise InputError(f"{f}: cannot read ({exc.strerror})") from None
    if not complete:
        if not isinstance(doc, dict):
            raise InputError(f"{f}: not a JSON object")
        return doc
    if not isinstance(doc, dict) or doc.get("schema") != "hwkit-report":
        raise InputError(f"{f}: not a hwkit report (a JSON object with \"schema\": \"hwkit-report\")")
    problem = report_problem(doc)
    if problem:
        raise InputError(f"{f}: not a complete hwkit report ({problem})")
    return doc


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(what)


def report_problem(doc: dict[str, Any]) -> str | None:
    """What makes ``doc`` unusable as a report (a missing field, a wrong type), or None when it is whole."""
    from hwkit.report import Report, strict_json
    from hwkit.report.html import render_html

    try:
        _check(isinstance(doc.get("target"), dict), "'target' must be an object")
        for key in ("performance", "resources"):
            _check(isinstance(doc.get(key), dict), f"'{key}' must be an object")
        for key in ("passes", "layers"):
            _check(isinstance(doc.get(key), list), f"'{key}' must be a list")
        for key in ("energy", "verification", "warnings", "fit_notes"):
            _check(isinstance(doc.get(key, []), list), f"'{key}' must be a list")
        _check(isinstance(doc.get("tools", {}), dict), "'tools' must be an object")
        for name, q in doc["performance"].items():
            _check(isinstance(q, dict) and {"value", "unit", "source"} <= set(q), f"performance.{name} is not a "
                   "quantity (value, unit, source)")
        for name, r in doc["resources"].items():
            _check(isinstance(r, dict) and all(isinstance(r.get(k), dict) and "value" in r[k]
                                               for k in ("used", "available", "utilisation_pct")),
                   f"resources.{name} lacks used/available/utilisation_pct")
        for i, p in enumerate(doc["passes"]):
            _check(isinstance(p, dict) and isinstance(p.get("seconds"), int | float)
                   and not isinstance(p.get("seconds"), bool), f"passes[{i}] lacks a number 'seconds'")
        for i, e in enumerate(doc.get("energy") or []):
            _check(isinstance(e, dict) and isinstance(e.get("name"), str), f"energy[{i}] lacks 'name'")
        rep = Report.from_json(doc)
        rep.to_markdown()
        render_html(strict_json(rep.to_json()))
    except ValueError as exc:
        return str(exc)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _quantities(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for k, q in (doc.get("performance") or {}).items():
        if isinstance(q, dict) and "value" in q:
            out[f"performance.{k}"] = q
    for k, r in (doc.get("resources") or {}).items():
        out[f"resources.{k}.used"] = r["used"]
        out[f"resources.{k}.utilisation_pct"] = r["utilisation_pct"]
    for e in doc.get("energy") or []:
        out[f"energy.{e['name']}"] = e
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    """Rows for every number either build reports, plus the target and the fit verdict."""
    rows = []
    for key in ("board", "part", "clock_ns", "target_fps"):
        va, vb = (a.get("target") or {}).get(key), (b.get("target") or {}).get(key)
        rows.append(Row(f"target.{key}", "", va, vb, _delta(va, vb), _pct(va, vb), None, None))
    qa, qb = _quantities(a), _quantities(b)
    for key in [*qa, *[k for k in qb if k not in qa]]:
        x, y = qa.get(key, {}), qb.get(key, {})
        va, vb = x.get("value"), y.get("value")
        rows.append(Row(key, x.get("unit") or y.get("unit") or "", va, vb, _delta(va, vb), _pct(va, vb),
                        x.get("source"), y.get("source")))
    rows.append(Row("fits", "", a.get("fits"), b.get("fits"), None, None, None, None))
    ta = sum(p["seconds"] for p in a.get("passes") or [])
    tb = sum(p["seconds"] for p in b.get("passes") or [])
    rows.append(Row("build_seconds", "s", round(ta, 3), round(tb, 3), _delta(ta, tb), _pct(ta, tb), None, None))
    return rows


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _delta(a: Any, b: Any) -> float | None:
    return float(b - a) if _is_num(a) and _is_num(b) else None


def _pct(a: Any, b: Any) -> float | None:
    if _is_num(a) and _is_num(b) and a != 0:
        return round(100.0 * (b - a) / abs(a), 3)
    return None


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    """JSON form of the rows."""
    return [asdict(r) for r in rows]
