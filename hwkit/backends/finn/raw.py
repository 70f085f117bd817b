"""Raw finn-plus, as a FINN user runs it, for side-by-side checks (tests, benchmarks): Brevitas's own
QONNX export and ``finn.builder.build_dataflow.build_dataflow_cfg`` with finn-plus's estimate steps.

hwkit's shields make the raw builder run without Vivado (see :mod:`hwkit.backends.finn.passes`);
everything the builder does to the process (stdout tee, root logger, warning capture, rich console)
is undone when it returns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hwkit.backends.finn.passes import ensure_finn, shield_builder
from hwkit.board import Board
from hwkit.errors import ToolError

ESTIMATE_FILES = ("estimate_layer_resources.json", "estimate_layer_cycles.json",
                  "estimate_network_performance.json")


def export_like_finn(module: Any, shape: Sequence[int], input_dtype: str, path: Path) -> Path:
    """Brevitas ``export_qonnx`` (its default exporter), qonnx cleanup, the input's FINN data type."""
    import torch
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    with torch.no_grad():
        export_qonnx(module.eval(), torch.zeros(tuple(shape)), str(path))
    model = cleanup_model(ModelWrapper(str(path)))
    model.set_tensor_datatype(model.graph.input[0].name, DataType[input_dtype])
    model.save(str(path))
    return path


@contextlib.contextmanager
def contained_builder(console_log: Any) -> Iterator[None]:
    """Undo what ``build_dataflow_cfg`` does to the process once it returns.

    The builder replaces sys.stdout/sys.stderr with its own tee (never restored), reconfigures the root
    logger to its build log, turns on warning capture and swaps finn's global rich console; what raw
    finn-plus prints goes to ``console_log``, as hwkit's pass output goes to its pass log.
    """
    import finn.util.logging as finn_logging

    root = logging.getLogger()
    saved = (sys.stdout, sys.stderr, list(root.handlers), root.level, finn_logging.get_console(),
             warnings.showwarning)
    sys.stdout = sys.stderr = console_log
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved[0], saved[1]
        for h in root.handlers:
            if h not in saved[2]:
                with contextlib.suppress(Exception):
                    h.close()
        root.handlers[:] = saved[2]
        root.setLevel(saved[3])
        logging.captureWarnings(False)
        finn_logging.set_console(saved[4])
        warnings.showwarning = saved[5]


def raw_estimate(qonnx: Path, out_dir: Path, board: Board, clock_ns: float | None = None,
                 target_fps: float | None = None, steps: Sequence[str] | None = None,
                 **options: Any) -> tuple[float, dict[str, Any]]:
    """``build_dataflow_cfg`` with finn-plus's ``estimate_only_dataflow_steps`` (unless ``steps``) into
    the fresh ``out_dir``; returns (wall seconds, {estimate file name: its JSON})."""
    from finn.builder.build_dataflow import build_dataflow_cfg
    from finn.builder.build_dataflow_config import (
        DataflowBuildConfig,
        DataflowOutputType,
        estimate_only_dataflow_steps,
    )

    if out_dir.exists():
        raise ToolError(f"{out_dir}: raw finn-plus output directory is not fresh")
    out_dir.mkdir(parents=True)
    with (out_dir / "console.log").open("w", encoding="utf-8") as console, contained_builder(console):
        t0 = time.perf_counter()
        ensure_finn(out_dir)
        shield_builder()
        cfg = DataflowBuildConfig(
            output_dir=str(out_dir / "output"),
            synth_clk_period_ns=clock_ns or board.clock_ns,
            generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS],
            board=board.finn_board, fpga_part=board.part, shell_flow_type=board.shell_flow,
            target_fps=None if target_fps is None else int(round(target_fps)),
            steps=list(steps or estimate_only_dataflow_steps),
            enable_build_pdb_debug=False,
            **options,
        )
        rc = build_dataflow_cfg(str(qonnx), cfg)
        seconds = time.perf_counter() - t0
    if rc != 0:
        raise ToolError(f"raw finn-plus build_dataflow_cfg returned {rc}; see {out_dir / 'output'}")
    rep = out_dir / "output" / "report"
    missing = [f for f in ESTIMATE_FILES if not (rep / f).is_file()]
    if missing:
        raise ToolError(f"raw finn-plus wrote no {', '.join(missing)} in {rep}")
    return seconds, {f: json.loads((rep / f).read_text(encoding="utf-8")) for f in ESTIMATE_FILES}


def hwkit_estimates(out: Path) -> dict[str, Any]:
    """The same estimate files from a hwkit build directory."""
    (d,) = (out / "passes").glob("*-finn.generate_estimate_reports")
    return {f: json.loads((d / "report" / f).read_text(encoding="utf-8")) for f in ESTIMATE_FILES}
