"""ONNX (ONNX Runtime) and QONNX (FINN) forms of a shift / binary-coded model.

* ONNX: the layers are materialised as ordinary Linear / Conv2d layers whose fp32 weights are the exact shift
  values (``s * 2**p``) or dequantised BCQ weights, then exported with ``torch.onnx.export``; ONNX Runtime runs it
  as Gemm/MatMul/Conv. This is a float graph that computes what the shift model computes; it does not execute shifts.
* QONNX: every shift weight initialiser of that graph (Linear and Conv) gets a QONNX ``Quant`` node (signed,
  scale ``2**pmin``, zero point 0, bit width ``-pmin + 2``), the integer-weight form FINN's QONNX import reads
  (``IntegerWeight``); the batch is fixed at 1 and the shape arithmetic folded.
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any

from hwkit.errors import UnsupportedLayerError


def dense_copy(model: Any) -> Any:
    """A copy of ``model`` with shift layers materialised and BCQ layers replaced by fp32 Linear layers of the
    same (reconstructed) weights: what the ONNX export and the saved plain checkpoint hold."""
    import torch

    from hwkit.compress.shiftadd import bcq, shift

    m = shift.materialise(copy.deepcopy(model))
    for n, sub in list(m.named_modules()):
        if bcq.is_bcq(sub):
            lin = torch.nn.Linear(sub.in_features, sub.out_features, bias=sub.bias is not None)
            with torch.no_grad():
                lin.weight.copy_(sub.weight)
                if sub.bias is not None:
                    lin.bias.copy_(sub.bias)
            shift.set_module(m, n, lin)
    return m


def export_onnx(model: Any, shape: tuple[int, ...], out: Path) -> Path:
    """Export a copy of ``model`` with shift/BCQ layers materialised as fp32 Linear / Conv2d layers."""
    import torch

    m = dense_copy(model).eval()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress
            torch.onnx.export(m, (torch.zeros(shape),), str(out), input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              optimize=False)  # keep BatchNorm unfused: weights stay powers of two
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        text = str(exc).strip().splitlines()
        raise UnsupportedLayerError(f"cannot export the shift model to ONNX: {type(exc).__name__}: "
                                    f"{text[0] if text else ''}") from exc
    return out


def run_ort(path: Path, x: Any) -> Any:
    """Outputs of the ONNX file on the CPU execution provider."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: np.asarray(x, dtype=np.float32)})[0]


def to_qonnx(onnx_path: Path, model: Any, out: Path) -> dict[str, Any]:
    """Insert a QONNX ``Quant`` on each shift layer's weight initialiser; returns the per-layer integer widths."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from hwkit.compress.shiftadd import shift

    layers = [(n, m) for n, m in model.named_modules() if shift.is_shift(m)]
    if not layers:
        raise UnsupportedLayerError("to_qonnx needs shift layers (mode q or ps)")
    g = onnx.load(str(onnx_path))
    inits = {i.name: i for i in g.graph.initializer}
    by_values: list[tuple[str, Any]] = [(name, numpy_helper.to_array(i)) for name, i in inits.items()]
    info: dict[str, Any] = {}
    new_nodes = []
    for lname, m in layers:
        iw = shift.integer_weight(m)
        w = (iw.values.astype(np.float64) * iw.scale).astype(np.float32)
        match = next((n for n, a in by_values if a.shape in (w.shape, w.T.shape)
                      and (np.array_equal(a, w) or np.array_equal(a, w.T))), None)
        if match is None:
            raise UnsupportedLayerError(f"cannot find the weight of '{lname}' in the exported graph")
        qname = f"{match}_quant"
        consts = [numpy_helper.from_array(np.array(v, dtype=np.float32), f"{match}_{k}")
                  for k, v in (("scale", iw.scale), ("zeropt", 0.0), ("bitwidth", float(iw.bit_width)))]
        g.graph.initializer.extend(consts)
        new_nodes.append(helper.make_node("Quant", [match, *(c.name for c in consts)], [qname],
                                          domain="qonnx.custom_op.general", signed=1, narrow=0,
                                          rounding_mode="ROUND", name=f"Quant_{lname}"))
        for node in g.graph.node:
            node.input[:] = [qname if i == match else i for i in node.input]
        info[lname] = {"initializer": match, "scale": iw.scale, "bit_width": iw.bit_width,
                       "int_min": int(iw.values.min()), "int_max": int(iw.values.max())}
    for vi in (*g.graph.input, *g.graph.output):  # FINN works on a fixed batch of 1
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = 1
    del g.graph.value_info[:]
    nodes = list(g.graph.node)
    del g.graph.node[:]
    g.graph.node.extend(new_nodes + nodes)
    g.opset_import.append(helper.make_opsetid("qonnx.custom_op.general", 1))
    onnx.save(g, str(out))
    _fold_shapes(out)
    return info


def _fold_shapes(path: Path) -> None:
    """Fold the batch-dependent shape arithmetic (``Shape -> ... -> Reshape`` of a Flatten) now that the batch is
    fixed at 1, so every tensor has a static shape; Quant nodes are not folded (qonnx's default)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.infer_shapes import InferShapes

    ModelWrapper(str(path)).transform(InferShapes()).transform(FoldConstants()).save(str(path))


def run_qonnx(path: Path, x: Any) -> Any:
    """Outputs of a QONNX file through qonnx's reference executor (Quant nodes executed)."""
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    mw = ModelWrapper(str(path)).transform(InferShapes())
    iname, oname = mw.graph.input[0].name, mw.graph.output[0].name
    return np.concatenate([execute_onnx(mw, {iname: np.asarray(x[i:i + 1], dtype=np.float32)})[oname]
                           for i in range(len(x))])


def qonnx_cost(path: Path) -> dict[str, Any]:
    """qonnx's ``inference_cost`` of a QONNX file (MACs by operand types, weight bits, bit-operations)."""
    from qonnx.util.inference_cost import inference_cost

    res = inference_cost(str(path), output_json=None, output_onnx=None, preprocess=True, discount_sparsity=True)
    total = res.get("total_cost", res)
    return {k: (float(v) if isinstance(v, int | float) else str(v)) for k, v in total.items()}
