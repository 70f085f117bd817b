"""Python execution of FINN/QONNX graphs (finn-plus's ``execute_onnx``), as the hand-off checks need it.

Graphs run batched when every node is proven batch-agnostic; otherwise node by node, the batch-agnostic
nodes on the whole batch and every other node sample by sample.
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


def execute_with_host(path: Path, inputs: np.ndarray, work_dir: Path, host: dict[str, Any] | None,
                      root: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the host-side input part (if any), the graph at ``path``, then the host-side output part.

    ``host`` is the artifact's ``host`` metadata (paths relative to ``root``), written when finn-plus's
    dataflow partition leaves nodes at the graph's start/end to software. The integer-domain tensor is
    the last one found along the way.
    """
    host = host or {}
    x = inputs
    ints = None
    for p in (host.get("input"), path, host.get("output")):
        if p is None:
            continue
        x, found = execute_finn_graph(root / p, x, work_dir)
        ints = found if found is not None else ints
    return x, ints


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
    _attention_outputs_as_annotated(model)
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    int_name = _integer_tensor(model)
    names = [oname] + ([int_name] if int_name else [])
    if not batch_leading(model):
        got = _execute_per_sample(model, inputs.astype(np.float32), names)
        return got[0], (got[1] if int_name else None)
    if _batchable(model):
        batched = _with_batch(model, len(inputs))
        ctx = execute_onnx(batched, {iname: inputs.astype(np.float32)}, return_full_exec_context=True)
        got = [np.asarray(ctx[n]) for n in names]
        return got[0], (got[1] if int_name else None)
    got = _execute_mixed(model, inputs.astype(np.float32), names)
    return got[0], (got[1] if int_name else None)


def _attention_outputs_as_annotated(model: Any) -> None:
    """finn-plus's ScaledDotProductAttention executes to (heads, tokens, dim) also where the graph (squeezed,
    heads unrolled) annotates (tokens, dim); MergeMultiHeads then fails to concatenate the heads. A Reshape to
    the annotated shape after each attention node (in the graph run here only) restores what the graph says."""
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    graph = model.graph
    for node in [n for n in graph.node if n.op_type == "ScaledDotProductAttention"]:
        out = node.output[0]
        shape = model.get_tensor_shape(out)
        if shape is None or len(shape) == 3:
            continue
        raw, target = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
        model.set_initializer(target, np.asarray(shape, dtype=np.int64))
        node.output[0] = raw
        model.set_tensor_shape(raw, list(getCustomOp(node).get_normal_output_shape()))
        model.set_tensor_datatype(raw, model.get_tensor_datatype(out))
        graph.node.insert(list(graph.node).index(node) + 1,
                          helper.make_node("Reshape", [raw, target], [out], name=f"{node.name}_as_annotated"))


def execute_values(model: Any, inputs: np.ndarray, names: list[str], work_dir: Path) -> list[np.ndarray]:
    """The named tensors of a (batch-1) QONNX/FINN ``model`` run on ``inputs`` (batched where proven safe)."""
    from hwkit.backends.finn.passes import ensure_finn

    ensure_finn(work_dir)
    if not batch_leading(model):
        return _execute_per_sample(model, inputs.astype(np.float32), names)
    if _batchable(model):
        from finn.core.onnx_exec import execute_onnx

        batched = _with_batch(model, len(inputs))
        ctx = execute_onnx(batched, {model.graph.input[0].name: inputs.astype(np.float32)},
                           return_full_exec_context=True)
        return [np.asarray(ctx[t]) for t in names]
    return _execute_mixed(model, inputs.astype(np.float32), names)


def batch_leading(model: Any) -> bool:
    """True when every tensor computed from the input keeps the batch (of 1) as its leading axis.

    Transformer graphs break this: attention's transposes move the batch axis inward, and finn-plus's
    Squeeze drops it; such graphs run sample by sample as a whole.
    """
    dynamic = dynamic_tensors(model)
    for t in dynamic:
        shape = model.get_tensor_shape(t)
        if shape is not None and (not shape or shape[0] != 1):
            return False
    return True


def _execute_per_sample(model: Any, inputs: np.ndarray, names: list[str]) -> list[np.ndarray]:
    from finn.core.onnx_exec import execute_onnx

    iname = model.graph.input[0].name
    shape = tuple(model.get_tensor_shape(iname))
    dynamic = dynamic_tensors(model)
    outs: list[list[np.ndarray]] = [[] for _ in names]
    first: dict[str, np.ndarray] = {}
    for x in inputs:
        ctx = execute_onnx(model, {iname: x.reshape(shape)}, return_full_exec_context=True)
        first = first or {n: np.asarray(ctx[n]) for n in names}
        for acc, n in zip(outs, names, strict=True):
            v = np.asarray(ctx[n])
            acc.append(v if v.ndim and v.shape[0] == 1 else v[None])  # a squeezed tensor gets its batch back
    # constants (a quantiser's scale, say) are the same for every sample: returned once, as batched runs do
    return [np.concatenate(acc) if n in dynamic else first[n] for n, acc in zip(names, outs, strict=True)]


def _execute_mixed(model: Any, inputs: np.ndarray, names: list[str], fast: bool = True) -> list[np.ndarray]:
    """Node by node: batch-agnostic nodes on the whole batch, every other node sample by sample.

    The same arithmetic as running the whole graph once per sample (each node sees exactly the
    values it would), without paying the per-node set-up of every batchable node 32 times. With
    ``fast``, nodes that hwkit/backends/finn/batched.py covers (Im2Col, the sliding window, MVAU/VVAU,
    thresholds, padding) run on the whole batch with the same arithmetic too.
    """
    from qonnx.core.onnx_exec import execute_node
    from qonnx.util.basic import get_preferred_qonnx_opset, get_sanitize_quant_tensors

    from hwkit.backends.finn.batched import run_batched

    n = len(inputs)
    iname = model.graph.input[0].name
    shape = tuple(model.get_tensor_shape(iname))
    batched = _with_batch(model, n)
    dynamic = dynamic_tensors(model)
    ctx = batched.make_empty_exec_context()
    ctx[iname] = inputs.reshape((n, *shape[1:]))
    one_ctx = model.make_empty_exec_context()
    opsets = model.get_opset_imports()
    sanitize = get_sanitize_quant_tensors() != 0
    # a batch of large activations (MobileNet at 224x224) does not fit in memory many times over: each
    # computed tensor is dropped after its last consumer unless it is asked for
    last_use = {t: k for k, node in enumerate(model.graph.node) for t in node.input if t in dynamic}
    keep = set(names) | {o.name for o in model.graph.output}
    produced = {t for node in model.graph.node for t in node.output}
    for k, (node_b, node_1) in enumerate(zip(batched.graph.node, model.graph.node, strict=True)):
        opset = opsets.get(node_b.domain, get_preferred_qonnx_opset())
        if sanitize:  # an input another node produced was sanitized as that node's output already
            _sanitize(batched, [t for t in node_b.input if t not in produced], ctx)
        if batchable_node(node_b) or not any(t in dynamic for t in node_b.input):
            execute_node(node_b, ctx, batched.graph, opset)
        elif fast and run_batched(node_1, ctx, model, n):
            pass
        else:
            outs: list[list[np.ndarray]] = [[] for _ in node_1.output]
            for i in range(n):
                sample = {t: (ctx[t][i:i + 1] if t in dynamic else ctx[t]) for t in node_1.input if t}
                sample.update({t: np.zeros_like(one_ctx[t]) for t in node_1.output})
                execute_node(node_1, sample, model.graph, opset)
                for acc, t in zip(outs, node_1.output, strict=True):
                    acc.append(np.asarray(sample[t]))
            for acc, t in zip(outs, node_1.output, strict=True):
                ctx[t] = np.concatenate(acc)
        if sanitize:
            _sanitize(batched, node_b.output, ctx)
        for t in node_b.input:
            if last_use.get(t) == k and t not in keep and t != iname:
                del ctx[t]
    return [np.asarray(ctx[t]) for t in names]


def _sanitize(model: Any, names: Any, ctx: dict[str, Any]) -> None:
    """qonnx's ``sanitize_quant_values`` (what its execute_onnx does around every node): integer-typed
    tensors that are not integers are rounded, if no further than qonnx's error threshold; with numpy's
    max instead of Python's, which took most of the verification time of large tensors."""
    from qonnx.util.basic import get_execution_error_thresh

    for name in names:
        if not name:
            continue
        dtype = model.get_tensor_datatype(name)
        if not dtype.is_integer():
            continue
        values = ctx[name]
        allowed = dtype.allowed(values)
        if bool(np.all(allowed)):
            continue
        rounded = np.round(values)
        err = float(np.max(np.abs(values - rounded))) if np.size(values) else 0.0
        if not err <= get_execution_error_thresh():
            raise ValueError(f"rounding error {err:g} too high to match the QONNX datatype {dtype.name} of {name}")
        ctx[name] = rounded


def dynamic_tensors(model: Any) -> set[str]:
    """Tensors computed from the graph input (the ones that carry the batch)."""
    dynamic = {i.name for i in model.graph.input}
    for node in model.graph.node:  # graphs are topologically sorted
        if any(t in dynamic for t in node.input):
            dynamic.update(node.output)
    return dynamic


# Ops whose Python execution is proven batch-agnostic (tests/unit/test_execute_batch.py runs each
# batched and sample by sample): standard ONNX ops (run by onnxruntime) and the elementwise qonnx/finn
# general ops. Everything else runs sample by sample: qonnx's Im2Col, for one, handles batch 1 only
# and interleaves the samples of a batch, and FINN HW layers size their I/O from attributes.
_BATCHABLE_DOMAINS = ("", "ai.onnx")
_BATCHABLE_GENERAL = frozenset({"Quant", "IntQuant", "BipolarQuant", "FloatQuant", "Trunc", "MultiThreshold",
                                "MaxPoolNHWC"})
_GENERAL_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general")


def batchable_node(node: Any) -> bool:
    """True when ``node`` computes each sample of a batch independently in Python execution."""
    if node.domain in _BATCHABLE_DOMAINS:
        return True
    return node.domain in _GENERAL_DOMAINS and node.op_type in _BATCHABLE_GENERAL


def _batchable(model: Any) -> bool:
    shape = model.get_tensor_shape(model.graph.input[0].name)
    return bool(shape) and shape[0] == 1 and all(batchable_node(n) for n in model.graph.node)


def _with_batch(model: Any, n: int) -> Any:
    """A copy of ``model`` whose tensors have batch ``n`` instead of 1."""
    from qonnx.core.modelwrapper import ModelWrapper

    batched = ModelWrapper(model.model.__deepcopy__())
    g = batched.graph
    # Only tensors computed from the graph input carry the batch: a (1, C) per-channel scale or the
    # quantised weights of a 1-neuron layer also start with 1 but are constants.
    dynamic = dynamic_tensors(batched)
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.name not in dynamic:
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].dim_value = n
    # Reshape nodes carry their target shape as a constant: a leading 1 of a reshape of a batched
    # tensor is the batch. It becomes n, not -1: ``x.view(x.shape[0], -1)`` exports as [1, -1], and
    # ONNX allows at most one -1.
    for node in g.node:
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[0] in dynamic:
            target = batched.get_initializer(node.input[1])
            if target is not None and len(target) and target[0] == 1:
                fixed = target.copy()
                fixed[0] = n
                batched.set_initializer(node.input[1], fixed)
    return batched
