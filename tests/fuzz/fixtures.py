"""Small input files for the fuzz suite: checkpoints, ONNX graphs, boards, reports, CAN logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, make_qmlp

ZCU104 = ROOT / "boards" / "zcu104.toml"
CQMLP = ROOT / "examples" / "cqmlp_w2a2_synthetic.pt"


def tiny_checkpoint_dict() -> dict[str, Any]:
    """A 16-16-8-4 w2a2 qmlp as a hwkit checkpoint dict."""
    model = make_qmlp()
    return {"hwkit_checkpoint": 1, "arch": "qmlp",
            "arch_kwargs": {"in_features": 16, "hidden": [16, 8], "out_features": 4, "weight_bits": 2, "act_bits": 2},
            "state_dict": model.state_dict(), "input_shape": [1, 16], "input_dtype": "UINT8"}


def save_pt(path: Path, obj: Any) -> Path:
    """torch.save ``obj`` to ``path``."""
    import torch

    torch.save(obj, path)
    return path


def onnx_model(path: Path, batch: int | str | None = 1, inputs: bool = True, nodes: bool = True,
               features: int = 16) -> Path:
    """A float MatMul+Relu graph; ``batch`` a number, a symbolic name, or None (no inputs at all)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((features, 4)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])
    if not inputs:
        c = numpy_helper.from_array(np.ones((1, features), dtype=np.float32), "c")
        graph = helper.make_graph([helper.make_node("MatMul", ["c", "w"], ["y"])], "noinput", [], [y], [w, c])
    elif not nodes:
        graph = helper.make_graph([], "empty", [x], [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                [batch, features])])
    else:
        nodes_ = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
        graph = helper.make_graph(nodes_,
                                  "mlp", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def board_text(**fields: str) -> str:
    """zcu104.toml with top-level ``fields`` replaced by the given TOML value texts."""
    lines = ZCU104.read_text(encoding="utf-8").splitlines()
    out = []
    for ln in lines:
        key = ln.split("=", 1)[0].strip()
        if "=" in ln and key in fields:
            out.append(f"{key} = {fields.pop(key)}")
        else:
            out.append(ln)
    head = [f"{k} = {v}" for k, v in fields.items()]
    return "\n".join(head + out) + "\n"


def report_doc() -> dict[str, Any]:
    """A complete, minimal hwkit report document (what an ONNX Runtime bench writes, trimmed)."""
    return {
        "schema": "hwkit-report", "schema_version": "1.2",
        "model": {"path": "m.onnx", "sha256": "0" * 64, "format": "onnx"},
        "target": {"board": "cpu", "kind": "cpu", "part": None, "clock_ns": None, "target_fps": None,
                   "execution_providers": ["CPUExecutionProvider"]},
        "created_utc": "2026-01-01T00:00:00Z", "bottleneck_layer": None,
        "flow": "bench", "passes": [{"id": "01-x", "seconds": 0.5, "cached": False}],
        "performance": {"latency_ms": {"value": 1.0, "unit": "ms", "source": "measured"}},
        "resources": {}, "layers": [], "energy": [], "verification": [], "fits": None, "fit_notes": [],
        "warnings": [], "tools": {"hwkit": "test"},
    }


def write_json(path: Path, obj: Any) -> Path:
    """``obj`` as JSON at ``path``."""
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


CSV_OK = "1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R\n"
"""One well-formed Car-Hacking CSV row."""
