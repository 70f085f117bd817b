"""Console output with rich: progress while passes run, tables when they are done."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from hwkit.board import Board
from hwkit.flow import FlowStep
from hwkit.report import LAYER_RESOURCES, Report, _fmt


def _console() -> Console:
    """stdout console; when it is not a terminal, wide enough that tables keep their columns."""
    con = Console()
    return con if con.is_terminal else Console(width=160)


class RichProgress:
    """Pass i/N with the running pass's name and elapsed time, on stderr."""

    def __init__(self) -> None:
        self.console = Console(file=sys.stderr)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self._task: TaskID | None = None

    def start(self, total: int) -> None:
        """Begin a flow of ``total`` passes."""
        self._progress.start()
        if self._task is not None:  # a second flow (chosen from the graph after the export) replaces the bar
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task("starting", total=total)

    def pass_started(self, step: FlowStep) -> None:
        """Show the pass now running."""
        if self._task is not None:
            self._progress.update(self._task, description=f"{step.id}")

    def pass_done(self, step: FlowStep, seconds: float, cached: bool) -> None:
        """Advance the bar; log each pass with its time."""
        note = "cached" if cached else f"{seconds:.2f} s"
        self._progress.console.print(f"  {'·' if cached else '✓'} {step.id} [dim]{note}[/dim]", highlight=False)
        if self._task is not None:
            self._progress.advance(self._task)

    def note(self, text: str) -> None:
        """A line between passes (e.g. the flow chosen from the graph)."""
        self.console.print(f"[yellow]note:[/] {text}", highlight=False)

    def stop(self, ok: bool) -> None:
        """Finish the bar."""
        if self._task is not None:
            self._progress.update(self._task, description="done" if ok else "[red]failed[/]")
        self._progress.stop()


def print_report(report: Report, out_dir: str) -> None:
    """Summary tables of a report on stdout."""
    con = _console()
    t = report.target
    title = (f"{t['board']} ({t.get('part') or t['kind']}) @ {t.get('clock_ns')} ns" if t["kind"] == "fpga"
             else f"{t['board']} ({t['kind']}: {', '.join(t.get('execution_providers') or []) or '-'})")
    perf = Table(title=f"Performance: {title}", title_justify="left")
    for col in ("metric", "value", "unit", "source"):
        perf.add_column(col)
    for k, q in report.performance.items():
        perf.add_row(k, _fmt(q.value), q.unit, q.source)
    con.print(perf)
    if report.layers:
        lay = Table(title="Layers (finn-estimate)", title_justify="left")
        for col in ("layer", "op", "torch", "PE", "SIMD", "cycles", "LUT", "BRAM_18K", "URAM", "DSP"):
            lay.add_column(col, justify="right" if col not in ("layer", "op", "torch") else "left")
        for row in report.layers:
            res = [_fmt(row.resources[k].value) if k in row.resources else "-" for k in LAYER_RESOURCES]
            lay.add_row(row.name, row.op, row.torch_layer or "-", _fmt(row.pe), _fmt(row.simd),
                        _fmt(row.cycles.value), *res)
        con.print(lay)
    if report.resources:
        res_t = Table(title="Resources vs part", title_justify="left")
        for col in ("resource", "used", "available", "util %", "source"):
            res_t.add_column(col, justify="right" if col != "resource" else "left")
        for k, r in report.resources.items():
            res_t.add_row(k, _fmt(r.used.value), _fmt(r.available.value), _fmt(r.utilisation_pct.value), r.used.source)
        con.print(res_t)
    if report.energy:
        en = Table(title="Power and energy (range; single-shot = power x latency, streaming = power / throughput)",
                   title_justify="left")
        for col in ("quantity", "low", "value", "high", "unit", "source"):
            en.add_column(col, justify="left" if col in ("quantity", "unit", "source") else "right")
        for e in report.energy:
            en.add_row(e["name"], _fmt(e["low"]), _fmt(e["value"]), _fmt(e["high"]), e["unit"], e["source"])
        con.print(en)
    if report.verification:
        ver = Table(title="Hand-off verification (golden batch)", title_justify="left")
        for col in ("hand-off", "samples", "max abs err", "int exact", "class agree", "ok"):
            ver.add_column(col)
        for v in report.verification:
            ver.add_row(f"{v['reference']} -> {v['stage']}", str(v["samples"]), _fmt(v["max_abs_err"]),
                        _fmt(v.get("int_exact")), _fmt(v.get("class_agreement")), "✓" if v["ok"] else "✗")
        con.print(ver)
    if report.fits is not None:
        if report.fits:
            con.print(f"[green bold]fits[/] the {t.get('part')}")
        else:
            con.print(f"[red bold]DOES NOT FIT[/] the {t.get('part')}: {'; '.join(report.fit_notes)}")
    for w in report.warnings:
        con.print(f"[yellow]note:[/] {w}")
    con.print("tools: " + ", ".join(f"{k} {v}" for k, v in report.tools.items()), highlight=False)
    con.print(f"report: {out_dir}/report.json, {out_dir}/report.md, {out_dir}/report.html")


def print_boards(boards: list[Board]) -> None:
    """The table of ``hwkit boards``."""
    table = Table(title="Targets")
    for col in ("name", "kind", "part", "clock ns", "LUT", "BRAM_18K", "URAM", "DSP", "default flow"):
        table.add_column(col)
    for b in boards:
        r = b.resources
        table.add_row(b.name, b.kind, b.part or "-", _fmt(b.clock_ns), _fmt(r.get("LUT")), _fmt(r.get("BRAM_18K")),
                      _fmt(r.get("URAM")), _fmt(r.get("DSP")), b.default_flow)
    _console().print(table)


def print_compare(rows: list[Any], a: str, b: str) -> None:
    """The table of ``hwkit compare``."""
    table = Table(title=f"A = {a}   B = {b}", title_justify="left")
    for col in ("metric", "A", "B", "delta", "delta %", "unit", "source"):
        table.add_column(col, justify="left" if col in ("metric", "unit", "source") else "right")
    for r in rows:
        src = r.source_a if r.source_a == r.source_b else f"{r.source_a or '-'} / {r.source_b or '-'}"
        pct = "" if r.delta_pct is None else f"{r.delta_pct:+.1f}"
        delta = "" if r.delta is None else f"{r.delta:+,.4g}"
        style = "bold" if r.a != r.b else ""
        table.add_row(r.metric, _fmt(r.a), _fmt(r.b), delta, pct, r.unit, src or "", style=style)
    _console().print(table)
