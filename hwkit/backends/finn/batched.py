"""Whole-batch numpy executors for the nodes whose own Python execution handles one sample at a time.

qonnx's ``Im2Col`` handles batch 1 only (a batch comes out interleaved), and FINN's HW layers size their
tensors from attributes (batch 1), so the hand-off checks ran them sample by sample: for CNNs the
verification dominated the build (cnv_1w1a: 114 s of 206 s). The functions here compute, for a whole
batch, exactly what each node's own ``execute_node`` computes for one sample: the same arithmetic in the
same dtype, only with a leading batch axis (tests/unit/test_batched_exec.py checks every one against the
node's own per-sample execution, and whole HW graphs against sample-by-sample execution, bit for bit).
Matrix products here are of integer-valued tensors, which float32 sums exactly in any order while the
sums stay below 2**24; a node whose sums could exceed that runs sample by sample instead.

Each executor takes ``(node, ctx, model, n)``: the node, the execution context whose dynamic tensors
carry the batch ``n`` on axis 0, and the batch-1 model (shapes, attributes, initializers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

_EXACT = float(2**24)
"""float32 represents every integer up to this exactly: integer sums below it do not depend on order."""


def im2col(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
           pad: tuple[int, int, int, int] = (0, 0, 0, 0), pad_value: float = 0) -> np.ndarray:
    """NHWC ``x`` -> (N, OH, OW, KH*KW*C) patches in qonnx's order (kernel row, kernel column, channel).

    ``pad`` is qonnx's ``pad_amount``: (top, left, bottom, right).
    """
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    top, left, bottom, right = pad
    if any(pad):
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="constant", constant_values=pad_value)
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    cols = [x[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)]
    return np.stack(cols, axis=3).reshape(n, oh, ow, kh * kw * c)


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _out_shape(model: Any, node: Any, n: int) -> tuple[int, ...]:
    return (n, *model.get_tensor_shape(node.output[0])[1:])


def _im2col_node(node: Any, ctx: dict[str, Any], model: Any, n: int) -> bool:
    x = ctx[node.input[0]]
    pad = tuple(_attr(node, "pad_amount", [0, 0, 0, 0]))
    if len(pad) != 4:
        return False
    ctx[node.output[0]] = im2col(x, tuple(_attr(node, "kernel_size")), tuple(_attr(node, "stride")),
                                 tuple(_attr(node, "dilations", [1, 1])), pad, _attr(node, "pad_value", 0))
    return True


def _swg(node: Any, ctx: dict[str, Any], model: Any, n: int) -> bool:
    """FINN's ConvolutionInputGenerator: an unpadded Im2Col with its attributes (as its execute_node builds)."""
    x = ctx[node.input[0]]
    ifm, ch = _attr(node, "IFMDim"), _attr(node, "IFMChannels")
    x = x.reshape(n, ifm[0], ifm[1], ch)
    out = im2col(x, tuple(_attr(node, "ConvKernelDim")), tuple(_attr(node, "Stride")), tuple(_attr(node, "Dilation")))
    ctx[node.output[0]] = out.reshape(_out_shape(model, node, n))
    return True


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """``a @ b`` over a's last axis, or None when the sums might not be exact in float32."""
    if not (np.array_equal(a, np.round(a)) and np.array_equal(b, np.round(b))):
        return None
    bound = float(np.abs(a).max(initial=0)) * float(np.abs(b).sum(axis=0).max(initial=0))
    if bound >= _EXACT:
        return None
    flat = np.ascontiguousarray(a).reshape(-1, a.shape[-1])
    return (flat @ b).reshape(*a.shape[:-1], b.shape[-1])


def _xnor(node: Any, ctx: dict[str, Any], model: Any, n: int) -> bool:
    """qonnx's XnorPopcountMatMul: bipolar matmul of {0, 1} operands, then (out + K) / 2."""
    a, b = ctx[node.input[0]], ctx[node.input[1]]
    prod = _exact_matmul(2.0 * a - 1.0, 2.0 * b - 1.0)
    if prod is None:
        return False
    ctx[node.output[0]] = (prod + a.shape[-1]) * 0.5
    return True


def _threshold(inst: Any, result: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """The thresholding tail of MVAU/VVAU (NHWC in and out, as their execute_node does it)."""
    from qonnx.custom_op.general.multithreshold import multithreshold

    bipolar = inst.get_nodeattr("outputDataType") == "BIPOLAR"
    scale, bias = (2, -1) if bipolar else (1, inst.get_nodeattr("ActVal"))
    if result.ndim == 4:
        return multithreshold(result.transpose((0, 3, 1, 2)), thr, scale, bias).transpose((0, 2, 3, 1))
    return multithreshold(result, thr, scale, bias)


def _mvau(node: Any, ctx: dict[str, Any], model: Any, n: int) -> bool:
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    x = ctx[node.input[0]].reshape((n, *inst.get_normal_input_shape()[1:]))
    w = ctx[node.input[1]]
    if inst.get_nodeattr("binaryXnorMode"):
        a, b = x, w
    elif inst.get_nodeattr("inputDataType") == "BIPOLAR" and inst.get_nodeattr("weightDataType") == "BIPOLAR":
        a, b = (x + 1) / 2, (w + 1) / 2
    else:
        a = b = None
    if a is not None:
        prod = _exact_matmul(2.0 * a - 1.0, 2.0 * b - 1.0)
        result = None if prod is None else (prod + a.shape[-1]) * 0.5
    else:
        result = _exact_matmul(x, w)
    if result is None:
        return False
    if inst.get_nodeattr("noActivation") == 0:
        result = _threshold(inst, result, ctx[node.input[2]])
    ctx[node.output[0]] = result.reshape(_out_shape(model, node, n))
    return True


def _vvau(node: Any, ctx: dict[str, Any], model: Any, n: int) -> bool:
    """FINN's VVAU (depthwise): per channel, the sum over the kernel window of input x weight."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    x = ctx[node.input[0]]
    _, h, w, _ = x.shape
    kh, kw = inst.get_nodeattr("Kernel")
    ch = inst.get_nodeattr("Channels")
    producer = model.find_producer(node.input[0])
    pe = ch if producer is not None and producer.op_type.startswith(("Im2Col", "ConvolutionInputGenerator")) \
        else inst.get_nodeattr("PE")
    # the same untangling of the SWG's PE interleave as execute_node, then (kernel position, channel)
    x = x.reshape(n, h, w, ch // pe, kh * kw, pe).transpose(0, 1, 2, 4, 3, 5).reshape(n, h, w, kh * kw, ch)
    wconv = model.get_initializer(node.input[1])  # (ch, 1, kh, kw)
    if wconv is None or not (np.array_equal(x, np.round(x)) and np.array_equal(wconv, np.round(wconv))):
        return False
    wk = wconv.reshape(ch, kh * kw).T.astype(np.float32)  # (kernel position, channel)
    if float(np.abs(x).max(initial=0)) * float(np.abs(wk).sum(axis=0).max(initial=0)) >= _EXACT:
        return False
    result = np.einsum("nhwkc,kc->nhwc", x.astype(np.float32), wk)
    if inst.get_nodeattr("inputDataType") == "BIPOLAR" and inst.get_nodeattr("weightDataType") == "BIPOLAR":
        result = (result + kh * kw) / 2
    if inst.get_nodeattr("noActivation") == 0:
        result = _threshold(inst, result, model.get_initializer(node.input[2]))
    ctx[node.output[0]] = result
    return True


def _own(node: Any, ctx: dict[str, Any], model: Any, n: int) -> bool:
    """Nodes whose own execute_node is batch-agnostic (elementwise over a channels-last tensor, padding of
    the spatial axes) once the output buffer has the batch: run it on the batch."""
    from qonnx.custom_op.registry import getCustomOp

    ctx[node.output[0]] = np.zeros(_out_shape(model, node, n), dtype=np.float32)
    getCustomOp(node).execute_node(ctx, model.graph)
    return True


BATCHED: dict[str, Callable[[Any, dict[str, Any], Any, int], bool]] = {
    "Im2Col": _im2col_node,
    "XnorPopcountMatMul": _xnor,
    "ConvolutionInputGenerator": _swg,
    "MVAU": _mvau,
    "VVAU": _vvau,
    "Thresholding": _own,
    "FMPadding": _own,
}
"""op_type -> whole-batch executor; it returns False (and leaves the context alone) when it cannot do the
node exactly, and the node runs sample by sample."""


def run_batched(node: Any, ctx: dict[str, Any], model: Any, n: int) -> bool:
    """Execute ``node`` on the whole batch if an executor here covers it; False if it must run per sample."""
    fn = BATCHED.get(node.op_type)
    if fn is None or not node.domain.startswith(("qonnx.custom_op.general", "finn.custom_op")):
        return False
    return fn(node, ctx, model, n)
