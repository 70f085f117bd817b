"""hwkit's rewrite of Brevitas's multi-head split into the pattern finn-plus's InferMultiHeads matches, on a small
hand-built two-head attention graph of the form a streamlined Brevitas QuantMultiheadAttention has (real qonnx
execution, real finn-plus transformations)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("finn")

TOKENS, HEADS, DIM = 6, 2, 8
DH = DIM // HEADS


def _attention_graph():
    """q, k, v (tokens, 1, dim) INT4 -> per head: Reshape (tokens, heads, dim/heads) -> per-tensor thresholds
    -> Transpose ([1, 0, 2]; the key's [1, 2, 0] is its head transpose and K^T in one) -> QK^T -> thresholds ->
    dequantising Mul -> Softmax -> thresholds -> AV -> Transpose -> Reshape (tokens, 1, dim) -> thresholds -> output
    projection."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import qonnx_make_model

    nodes, inits = [], {}

    def thresholds(name, src, dst, lo, hi, layout):
        inits[f"{name}_t"] = np.linspace(lo, hi, 15, dtype=np.float32)[None, :]
        nodes.append(helper.make_node("MultiThreshold", [src, f"{name}_t"], [dst], name=name,
                                      domain="qonnx.custom_op.general", out_dtype="INT4", out_bias=-8.0,
                                      data_layout=layout))

    head_shape = np.array([TOKENS, HEADS, DH], dtype=np.int64)
    for t, perm in (("q", [1, 0, 2]), ("k", [1, 2, 0]), ("v", [1, 0, 2])):
        inits[f"{t}_shape"] = head_shape
        nodes.append(helper.make_node("Reshape", [t, f"{t}_shape"], [f"{t}_r"], name=f"{t}_reshape"))
        thresholds(f"{t}_quant", f"{t}_r", f"{t}_q", -7.5, 6.5, "WNC")
        nodes.append(helper.make_node("Transpose", [f"{t}_q"], [f"{t}_h"], name=f"{t}_heads", perm=perm))
    nodes.append(helper.make_node("MatMul", ["q_h", "k_h"], ["s"], name="scores"))
    thresholds("s_quant", "s", "s_q", -60.0, 50.0, "NWC")
    inits["s_scale"] = np.array(0.25, dtype=np.float32)
    nodes.append(helper.make_node("Mul", ["s_q", "s_scale"], ["s_f"], name="dequant"))
    nodes.append(helper.make_node("Softmax", ["s_f"], ["a"], name="softmax", axis=-1))
    thresholds("a_quant", "a", "a_q", 0.01, 0.95, "NWC")
    nodes.append(helper.make_node("MatMul", ["a_q", "v_h"], ["o"], name="values"))
    nodes.append(helper.make_node("Transpose", ["o"], ["o_t"], name="merge_transpose", perm=[1, 0, 2]))
    inits["o_shape"] = np.array([TOKENS, 1, DIM], dtype=np.int64)
    nodes.append(helper.make_node("Reshape", ["o_t", "o_shape"], ["o_r"], name="merge_reshape"))
    thresholds("o_quant", "o_r", "o_q", -40.0, 40.0, "WNC")
    inits["w_out"] = np.random.default_rng(1).integers(-8, 8, (DIM, DIM)).astype(np.float32)
    nodes.append(helper.make_node("MatMul", ["o_q", "w_out"], ["out"], name="out_proj"))

    vi = [helper.make_tensor_value_info(t, TensorProto.FLOAT, [TOKENS, 1, DIM]) for t in ("q", "k", "v")]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [TOKENS, 1, DIM])
    graph = helper.make_graph(nodes, "mha", vi, [out],
                              [helper.make_tensor(k, TensorProto.INT64 if v.dtype == np.int64 else TensorProto.FLOAT,
                                                  v.shape, v.flatten().tolist()) for k, v in inits.items()])
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    for t in ("q", "k", "v"):
        model.set_tensor_datatype(t, DataType["INT4"])
    return model.transform(InferShapes()).transform(InferDataTypes())


def _inputs(seed=0):
    """q, k, v: INT4 values, in the graph's input order."""
    rng = np.random.default_rng(seed)
    return [rng.integers(-8, 8, (TOKENS, 1, DIM)).astype(np.float32) for _ in range(3)]


def _run(model, inputs):
    """The graph's output (finn-plus's transformations rename the graph's tensors: inputs go by position)."""
    from qonnx.core.onnx_exec import execute_onnx

    feed = {vi.name: x for vi, x in zip(model.graph.input, inputs, strict=True)}
    return execute_onnx(model, feed)[model.graph.output[0].name]


def test_reshape_moves_past_per_tensor_thresholds_and_keeps_outputs():
    from hwkit.backends.finn.transformer import _transposes

    model = _attention_graph()
    ref = [_run(model, _inputs(s)) for s in range(3)]
    assert np.unique(ref[0]).size > 3  # the thresholds are not all saturated: the comparison means something
    out = _transposes(model)
    # each head split is now a Reshape directly followed by its head Transpose, the thresholds before it
    splits = [n for n in out.graph.node if n.op_type == "Reshape"
              and [s.op_type for s in out.find_direct_successors(n) or []] == ["Transpose"]]
    assert len(splits) == 3
    assert all(out.find_producer(n.input[0]).op_type == "MultiThreshold" for n in splits)
    for s in range(3):
        np.testing.assert_array_equal(_run(out, _inputs(s)), ref[s])


def test_two_heads_map_to_split_attention_merge_only_after_the_rewrite(tmp_path):
    """Without the rewrite finn-plus's attention inference asserts and hwkit stops naming the score MatMul (exit 3);
    with it, the heads become SplitMultiHeads -> one ScaledDotProductAttention per head -> MergeMultiHeads, each
    attention operator computing one head. (finn-plus's MergeMultiHeads cannot run this unsqueezed graph in python:
    the values are checked on a whole encoder, tests/e2e/test_transformer_mha.py.)"""
    from qonnx.custom_op.registry import getCustomOp

    from hwkit.backends.finn.passes import ensure_finn
    from hwkit.backends.finn.transformer import _transposes, attention_to_hw
    from hwkit.errors import UnsupportedLayerError

    model = _attention_graph()
    ensure_finn(tmp_path)
    unmapped = r"node '\w+' \(op MatMul, attention scores\).*2 attention heads"
    with pytest.raises(UnsupportedLayerError, match=unmapped):
        attention_to_hw(_attention_graph())
    hw = attention_to_hw(_transposes(model))
    ops = [n.op_type for n in hw.graph.node]
    assert ops.count("ScaledDotProductAttention") == HEADS
    assert ops.count("SplitMultiHeads") == 3 and ops.count("MergeMultiHeads") == 1
    assert ops.count("MatMul") == 1 and "Softmax" not in ops  # only the output projection is left
    for n in hw.graph.node:
        if n.op_type == "ScaledDotProductAttention":
            assert getCustomOp(n).get_nodeattr("Heads") == 1
    # the split feeds the heads in order (head h of q, k and v into attention operator h), the merge takes them back
    (merge,) = [n for n in hw.graph.node if n.op_type == "MergeMultiHeads"]
    for h, node in enumerate(hw.find_producer(t) for t in merge.input):
        assert node.op_type == "ScaledDotProductAttention"
        splits = [hw.find_producer(t) for t in node.input[:3]]  # q, k, v: head h of three different splits
        assert all(p.op_type == "SplitMultiHeads" for p in splits) and len({p.name for p in splits}) == 3
        assert all(list(p.output).index(t) == h for p, t in zip(splits, node.input[:3], strict=True))
