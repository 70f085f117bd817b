"""Python execution of FINN/QONNX graphs (finn-plus's ``execute_onnx``), as the hand-off checks need it.

Graphs run batched only when every node is proven batch-agnostic; everything else runs sample by sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _integer_tensor(model: Any) -> str | None:
    """Name of the last integer-typed tensor on the path to the graph output (None if there is none)."""
    name = model.graph.output[0].name
    seen = 0
    while name is not None and seen < 1000:
        seen += 1
        if model.get_tensor_datatype(name).is_integer():
            return name
        producer = model.find_producer(name)
        if producer is None:
            return None
        name = producer.input[0]
    return None


def execute_finn_graph(path: Path, inputs: np.ndarray, work_dir: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Run a FINN/QONNX graph sample by sample in Python; specialised nodes run as their generic op.

    Returns the outputs and the integer-domain tensor (or None).
    """
    from qonnx.core.modelwrapper import ModelWrapper

    from hwkit.backends.finn.passes import ensure_finn

    ensure_finn(work_dir)
    from finn.core.onnx_exec import execute_onnx

    model = ModelWrapper(str(path))
    for node in model.graph.node:
        # _hls/_rtl variants refuse Python execution; the generic op has the same folding and semantics.
        if node.domain.startswith("finn.custom_op.fpgadataflow.") and node.op_type.endswith(("_hls", "_rtl")):
            node.op_type = node.op_type.rsplit("_", 1)[0]
            node.domain = "finn.custom_op.fpgadataflow"
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    int_name = _integer_tensor(model)
    names = [oname] + ([int_name] if int_name else [])
    if _batchable(model):
        batched = _with_batch(model, len(inputs))
        ctx = execute_onnx(batched, {iname: inputs.astype(np.float32)}, return_full_exec_context=True)
        got = [np.asarray(ctx[n]) for n in names]
        return got[0], (got[1] if int_name else None)
    shape = tuple(model.get_tensor_shape(iname))
    per_sample: list[list[np.ndarray]] = [[] for _ in names]
    for x in inputs:
        ctx = execute_onnx(model, {iname: x.reshape(shape).astype(np.float32)}, return_full_exec_context=True)
        for acc, n in zip(per_sample, names):
            acc.append(np.asarray(ctx[n]))
    got = [np.concatenate(acc) for acc in per_sample]
    return got[0], (got[1] if int_name else None)


# Ops whose Python execution is batch-agnostic: standard ONNX (run by onnxruntime node by node) and
# the qonnx/finn general ops (Quant, MultiThreshold, ...). FINN HW layers size their I/O from
# attributes, so graphs with them run sample by sample.
_BATCHABLE_DOMAINS = ("", "ai.onnx", "qonnx.custom_op.general", "finn.custom_op.general")


def _batchable(model: Any) -> bool:
    shape = model.get_tensor_shape(model.graph.input[0].name)
    return bool(shape) and shape[0] == 1 and all(n.domain in _BATCHABLE_DOMAINS for n in model.graph.node)


def _with_batch(model: Any, n: int) -> Any:
    """A copy of ``model`` whose tensors have batch ``n`` instead of 1."""
    from qonnx.core.modelwrapper import ModelWrapper

    batched = ModelWrapper(model.model.__deepcopy__())
    g = batched.graph
    # Only tensors computed from the graph input carry the batch: a (1, C) per-channel scale or the
    # quantised weights of a 1-neuron layer also start with 1 but are constants.
    dynamic = {i.name for i in g.input}
    for node in g.node:  # graphs are topologically sorted
        if any(t in dynamic for t in node.input):
            dynamic.update(node.output)
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.name not in dynamic:
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].dim_value = n
    # Reshape nodes carry their target shape as a constant: a leading 1 becomes -1 (keep the batch).
    for node in g.node:
        if node.op_type == "Reshape" and len(node.input) > 1:
            target = batched.get_initializer(node.input[1])
            if target is not None and len(target) and target[0] == 1:
                fixed = target.copy()
                fixed[0] = -1
                batched.set_initializer(node.input[1], fixed)
    return batched
