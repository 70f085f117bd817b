"""Pareto fronts and the choice of one design, on plain trial rows (no optuna needed).

A row is a dict: ``number``, ``state`` (COMPLETE | PRUNED | FAIL | RUNNING | WAITING), ``params``,
``metrics`` (metric -> value), ``feasible`` (all constraints met) and more (see
:func:`hwkit.explore.run.trial_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hwkit.explore.config import METRICS

BEST_RULE = ("the most accurate feasible design on the Pareto front; ties go to the lower value of the next "
             "objective, then to the lower trial number")


def _key(row: dict[str, Any], objectives: Sequence[str]) -> tuple[float, ...]:
    """Objective values turned so that smaller is better."""
    out = []
    for o in objectives:
        v = float(row["metrics"][o])
        out.append(-v if METRICS[o][0] == "maximize" else v)
    return tuple(out)


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere (smaller is better)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def candidates(rows: Sequence[dict[str, Any]], objectives: Sequence[str]) -> list[dict[str, Any]]:
    """Complete, feasible trials with every objective measured."""
    return [r for r in rows if r["state"] == "COMPLETE" and r.get("feasible", True)
            and all(r["metrics"].get(o) is not None for o in objectives)]


def pareto_front(rows: Sequence[dict[str, Any]], objectives: Sequence[str]) -> list[int]:
    """Trial numbers of the non-dominated feasible designs (equal points are all kept)."""
    cand = candidates(rows, objectives)
    keys = {r["number"]: _key(r, objectives) for r in cand}
    return sorted(n for n, k in keys.items() if not any(dominates(o, k) for m, o in keys.items() if m != n))


def pick_best(rows: Sequence[dict[str, Any]], objectives: Sequence[str]) -> dict[str, Any] | None:
    """The design :data:`BEST_RULE` picks, or None when no trial is complete and feasible."""
    front = set(pareto_front(rows, objectives))
    on = [r for r in rows if r["number"] in front]
    if not on:
        return None
    rest = [o for o in objectives if o != "accuracy"]
    return min(on, key=lambda r: (-float(r["metrics"]["accuracy"]), *_key(r, rest), r["number"]))
