"""The whole-batch executors (hwkit/backends/finn/batched.py) compute exactly what each node's own
Python execution computes sample by sample: qonnx's Im2Col and XnorPopcountMatMul, FINN's sliding
window, MVAU (integer and XNOR), VVAU, Thresholding and FMPadding, checked bit for bit against
qonnx/finn-plus ``execute_onnx`` run once per sample on real nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from hwkit.backends.finn.batched import BATCHED, im2col, run_batched
from hwkit.backends.finn.execute import _execute_mixed

pytest.importorskip("finn")

FPGA = "finn.custom_op.fpgadataflow"
GENERAL = "qonnx.custom_op.general"


def _model(nodes, tensors: dict[str, tuple[tuple[int, ...], str]], inits: dict[str, np.ndarray]):
    """A batch-1 model: ``tensors`` maps every activation tensor name to (shape, FINN datatype); the first is
    the input, the last the output."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    names = list(tensors)
    vi = {k: helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, (s, _) in tensors.items()}
    graph = helper.make_graph(nodes, "g", [vi[names[0]]], [vi[names[-1]]], value_info=[vi[k] for k in names[1:-1]])
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    for k, (_, dt) in tensors.items():
        model.set_tensor_datatype(k, DataType[dt])
    for k, v in inits.items():
        model.set_initializer(k, v.astype(np.float32))
    return model


def _per_sample(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """finn-plus's execute_onnx once per sample: every tensor of the graph, stacked."""
    from finn.core.onnx_exec import execute_onnx

    iname = model.graph.input[0].name
    runs = [execute_onnx(model, {iname: x[i:i + 1]}, return_full_exec_context=True) for i in range(len(x))]
    dynamic = {t for node in model.graph.node for t in node.output}
    return {t: np.concatenate([np.asarray(r[t]) for r in runs]) for t in dynamic}


def _check(model, x: np.ndarray, expect_fast: set[str]) -> None:
    """Every node's batched output equals the per-sample reference bit for bit, and the nodes listed in
    ``expect_fast`` really ran on the whole batch."""
    ref = {model.graph.input[0].name: x, **_per_sample(model, x)}
    names = [n.output[0] for n in model.graph.node]
    got = _execute_mixed(model, x, names)
    for name, out in zip(names, got, strict=True):
        assert out.shape == ref[name].shape, name
        assert np.array_equal(out, ref[name]), f"{name}: max diff {np.abs(out - ref[name]).max()}"
    # each listed op has a whole-batch executor that accepts this node
    ran = set()
    for node in model.graph.node:
        if node.op_type in expect_fast:
            ctx = {**{k: model.get_initializer(k) for k in node.input[1:]}, node.input[0]: ref[node.input[0]]}
            assert run_batched(node, ctx, model, len(x)), node.op_type
            assert np.array_equal(ctx[node.output[0]], ref[node.output[0]]), node.op_type
            ran.add(node.op_type)
    assert ran == expect_fast


def _ints(rng, shape, lo, hi) -> np.ndarray:
    return rng.integers(lo, hi + 1, size=shape).astype(np.float32)


def _thresholds(rng, channels: int, steps: int, lo: int, hi: int) -> np.ndarray:
    return np.sort(rng.integers(lo, hi, size=(channels, steps)), axis=1).astype(np.float32)


@pytest.mark.parametrize(("hw", "k", "stride", "dil", "pad", "pad_value"), [
    ((7, 7), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 0),
    ((9, 6), (3, 2), (2, 1), (1, 1), (0, 1, 2, 0), 3),
    ((8, 8), (3, 3), (1, 2), (2, 1), (0, 0, 0, 0), 0),
    ((5, 1), (3, 1), (1, 1), (1, 1), (1, 0, 1, 0), 0),
])
def test_im2col_matches_qonnx_per_sample(hw, k, stride, dil, pad, pad_value):
    """qonnx's Im2Col (batch 1 only) against the whole-batch im2col, for padding, strides, dilation,
    non-square and 1-D inputs; and the batched qonnx op really is wrong for a batch (why this exists)."""
    rng = np.random.default_rng(0)
    c = 3
    h, w = hw
    oh = (h + pad[0] + pad[2] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
    ow = (w + pad[1] + pad[3] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
    node = helper.make_node("Im2Col", ["x"], ["y"], domain=GENERAL, kernel_size=list(k), stride=list(stride),
                            dilations=list(dil), pad_amount=list(pad), pad_value=pad_value,
                            input_shape=f"(1,{h},{w},{c})")
    model = _model([node], {"x": ((1, h, w, c), "UINT4"), "y": ((1, oh, ow, k[0] * k[1] * c), "UINT4")}, {})
    x = _ints(rng, (5, h, w, c), 0, 15)
    _check(model, x, {"Im2Col"})
    direct = im2col(x, k, stride, dil, pad, pad_value)
    assert direct.shape == (5, oh, ow, k[0] * k[1] * c)
    from qonnx.custom_op.registry import getCustomOp

    ctx = {"x": x, "y": np.zeros_like(direct)}
    getCustomOp(node).execute_node(ctx, model.graph)  # qonnx's own op given the whole batch
    assert not np.array_equal(ctx["y"], direct)


def test_xnor_popcount_matches_per_sample():
    rng = np.random.default_rng(1)
    node = helper.make_node("XnorPopcountMatMul", ["x", "w"], ["y"], domain=GENERAL)
    model = _model([node], {"x": ((1, 3, 3, 18), "BINARY"), "y": ((1, 3, 3, 7), "UINT32")},
                   {"w": _ints(rng, (18, 7), 0, 1)})
    from qonnx.core.datatype import DataType

    model.set_tensor_datatype("w", DataType["BINARY"])
    _check(model, _ints(rng, (6, 3, 3, 18), 0, 1), {"XnorPopcountMatMul"})


def _conv_chain(rng):
    """FMPadding -> sliding window (stride 2) -> MVAU with thresholds -> Thresholding, as convert_to_hw
    builds a padded 3x3 convolution followed by a standalone activation."""
    c, h, mh = 4, 7, 6
    nodes = [
        helper.make_node("FMPadding", ["x"], ["p"], domain=FPGA, backend="fpgadataflow", ImgDim=[h, h],
                         Padding=[1, 1, 1, 1], NumChannels=c, SIMD=1, inputDataType="INT4"),
        helper.make_node("ConvolutionInputGenerator", ["p"], ["s"], domain=FPGA, backend="fpgadataflow",
                         ConvKernelDim=[3, 3], IFMChannels=c, IFMDim=[h + 2, h + 2], OFMDim=[4, 4], SIMD=1,
                         Stride=[2, 2], Dilation=[1, 1], inputDataType="INT4", outputDataType="INT4"),
        helper.make_node("MVAU", ["s", "w", "t"], ["m"], domain=FPGA, backend="fpgadataflow", MW=9 * c, MH=mh,
                         SIMD=1, PE=1, inputDataType="INT4", weightDataType="INT3", outputDataType="UINT3",
                         ActVal=0, binaryXnorMode=0, noActivation=0, numInputVectors=[1, 4, 4]),
        helper.make_node("Thresholding", ["m", "t2"], ["y"], domain=FPGA, backend="fpgadataflow", NumChannels=mh,
                         PE=1, numSteps=3, inputDataType="UINT3", weightDataType="UINT3", outputDataType="INT2",
                         ActVal=-2),
    ]
    tensors = {"x": ((1, h, h, c), "INT4"), "p": ((1, h + 2, h + 2, c), "INT4"), "s": ((1, 4, 4, 9 * c), "INT4"),
               "m": ((1, 4, 4, mh), "UINT3"), "y": ((1, 4, 4, mh), "INT2")}
    inits = {"w": _ints(rng, (9 * c, mh), -4, 3), "t": _thresholds(rng, mh, 7, -120, 120),
             "t2": _thresholds(rng, mh, 3, 0, 7)}
    return _model(nodes, tensors, inits), _ints(rng, (6, h, h, c), -8, 7)


def test_conv_hw_layers_match_per_sample():
    rng = np.random.default_rng(2)
    model, x = _conv_chain(rng)
    _check(model, x, {"FMPadding", "ConvolutionInputGenerator", "MVAU", "Thresholding"})


def test_depthwise_and_xnor_hw_layers_match_per_sample():
    """Sliding window with dilation -> VVAU with thresholds (depthwise); a binary XNOR MVAU on a vector
    and a MVAU without activation."""
    rng = np.random.default_rng(3)
    c = 5
    nodes = [
        helper.make_node("ConvolutionInputGenerator", ["x"], ["s"], domain=FPGA, backend="fpgadataflow",
                         ConvKernelDim=[3, 3], IFMChannels=c, IFMDim=[8, 8], OFMDim=[4, 4], SIMD=1, Stride=[1, 1],
                         Dilation=[2, 2], inputDataType="UINT4", outputDataType="UINT4", depthwise=1),
        helper.make_node("VVAU", ["s", "w", "t"], ["y"], domain=FPGA, backend="fpgadataflow", PE=1, Dim=[4, 4],
                         Channels=c, Kernel=[3, 3], inputDataType="UINT4", weightDataType="INT4",
                         outputDataType="UINT4", ActVal=0, noActivation=0),
    ]
    model = _model(nodes, {"x": ((1, 8, 8, c), "UINT4"), "s": ((1, 4, 4, 9 * c), "UINT4"),
                           "y": ((1, 4, 4, c), "UINT4")},
                   {"w": _ints(rng, (c, 1, 3, 3), -8, 7), "t": _thresholds(rng, c, 15, -200, 200)})
    _check(model, _ints(rng, (4, 8, 8, c), 0, 15), {"ConvolutionInputGenerator", "VVAU"})

    nodes = [
        helper.make_node("MVAU", ["x", "w", "t"], ["b"], domain=FPGA, backend="fpgadataflow", MW=32, MH=8, SIMD=1,
                         PE=1, inputDataType="BINARY", weightDataType="BINARY", outputDataType="BINARY", ActVal=0,
                         binaryXnorMode=1, noActivation=0, numInputVectors=[1]),
        helper.make_node("MVAU", ["b", "w2"], ["y"], domain=FPGA, backend="fpgadataflow", MW=8, MH=3, SIMD=1,
                         PE=1, inputDataType="BINARY", weightDataType="INT8", outputDataType="INT32", ActVal=0,
                         binaryXnorMode=0, noActivation=1, numInputVectors=[1]),
    ]
    model = _model(nodes, {"x": ((1, 32), "BINARY"), "b": ((1, 8), "BINARY"), "y": ((1, 3), "INT32")},
                   {"w": _ints(rng, (32, 8), 0, 1), "t": _thresholds(rng, 8, 1, 8, 24),
                    "w2": _ints(rng, (8, 3), -128, 127)})
    from qonnx.core.datatype import DataType

    model.set_tensor_datatype("w", DataType["BINARY"])
    _check(model, _ints(rng, (7, 32), 0, 1), {"MVAU"})


def test_wide_sums_fall_back_to_per_sample():
    """A product whose float32 sums might not be exact (|x| * sum|w| >= 2**24) is left to the node's own
    per-sample execution, so results never depend on how the batch is summed."""
    rng = np.random.default_rng(4)
    node = helper.make_node("MVAU", ["x", "w"], ["y"], domain=FPGA, backend="fpgadataflow", MW=64, MH=2, SIMD=1,
                            PE=1, inputDataType="INT16", weightDataType="INT16", outputDataType="INT32",
                            ActVal=0, binaryXnorMode=0, noActivation=1, numInputVectors=[1])
    model = _model([node], {"x": ((1, 64), "INT16"), "y": ((1, 2), "INT32")},
                   {"w": _ints(rng, (64, 2), -30000, 30000)})
    x = _ints(rng, (3, 64), -30000, 30000)
    ctx = {"x": x, "w": model.get_initializer("w")}
    assert not run_batched(node, ctx, model, 3)
    assert "y" not in ctx
    (got,) = _execute_mixed(model, x, ["y"])
    assert np.array_equal(got, _per_sample(model, x)["y"])


def test_every_executor_is_tested():
    """A new entry in BATCHED needs a case above."""
    text = Path(__file__).read_text(encoding="utf-8")
    assert all(f'"{op}"' in text for op in BATCHED)
