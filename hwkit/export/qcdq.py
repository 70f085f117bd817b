"""Graph surgery that lets ONNX Runtime run a Brevitas QCDQ export at float speed.

A plain ``brevitas.export.export_onnx_qcdq`` graph lists its initialisers among the graph inputs
(ONNX Runtime then treats them as overridable and folds nothing) and recomputes every weight's
QuantizeLinear -> Clip -> DequantizeLinear on each run. Three rewrites, each exact up to float
rounding (a few ulps, so an activation that sits exactly on a rounding boundary may move one level):

1. :func:`constants_from_inputs` drops initialisers from the graph inputs;
2. :func:`fold_constants` evaluates every node whose inputs are all constant (with ONNX Runtime
   itself, optimisations off) and stores the results: fake-quantised weights become float constants;
3. :func:`lower_fake_quant` rewrites each activation quantiser ``[Relu] -> QuantizeLinear(s, z) ->
   [Clip(lo, hi)] -> DequantizeLinear(s, z)`` into ``s * Round(Clip(x / s, lo - z, hi - z))`` and
   moves the ``1/s`` into the producing Gemm and the ``s`` into the consuming Gemm (BatchNormalization
   after a Gemm is folded into it first), leaving ``Gemm -> Clip -> Round`` per layer, which ONNX
   Runtime fuses to ``FusedGemm(Clip) -> Round``. ``Relu`` before a clip whose lower bound is >= 0 is
   dropped. Anything that does not match these patterns exactly is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

_QINFO = {  # ONNX tensor type -> (min, max) of the quantised integer type
    2: (0, 255),       # UINT8
    3: (-128, 127),    # INT8
    4: (0, 65535),     # UINT16
    5: (-32768, 32767),  # INT16
}


class _Graph:
    """Index over an ONNX graph: producers, consumers and constant values."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = model
        self.g = model.graph
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}

    def producer(self, name: str) -> Any:
        return next((n for n in self.g.node if name in n.output), None)

    def consumers(self, name: str) -> list[Any]:
        return [n for n in self.g.node if name in n.input]

    def is_output(self, name: str) -> bool:
        return any(o.name == name for o in self.g.output)

    def single_use(self, name: str) -> bool:
        return len(self.consumers(name)) == 1 and not self.is_output(name)

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def set_const(self, name: str, value: np.ndarray) -> None:
        self.consts[name] = np.ascontiguousarray(value)

    def fresh(self, base: str) -> str:
        used = set(self.consts) | {t for n in self.g.node for t in (*n.input, *n.output, n.name)}
        i = 0
        while f"{base}_{i}" in used:
            i += 1
        return f"{base}_{i}"

    def commit(self) -> None:
        """Write constants back as initialisers (only those still used) and drop dead nodes."""
        from onnx import numpy_helper

        live = {o.name for o in self.g.output}
        keep: list[Any] = []
        for node in reversed(list(self.g.node)):
            if any(o in live for o in node.output):
                keep.append(node)
                live.update(i for i in node.input if i)
        keep.reverse()
        del self.g.node[:]
        self.g.node.extend(keep)
        del self.g.initializer[:]
        self.g.initializer.extend(numpy_helper.from_array(v, k) for k, v in self.consts.items() if k in live)
        names = {i.name for i in self.g.initializer} | {o for n in keep for o in n.output}
        vi = [v for v in self.g.value_info if v.name in names]
        del self.g.value_info[:]
        self.g.value_info.extend(vi)


def constants_from_inputs(model: Any) -> int:
    """Remove initialisers from the graph inputs (in place); returns how many were removed."""
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    removed = len(model.graph.input) - len(keep)
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return removed


def fold_constants(model: Any) -> int:
    """Evaluate all-constant nodes with ONNX Runtime (in place); returns the number of nodes folded."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    g = model.graph
    const = {i.name for i in g.initializer}
    folded, rest = [], []
    for node in g.node:
        if node.op_type == "Constant" or (node.input and all(i in const or i == "" for i in node.input)):
            folded.append(node)
            const.update(node.output)
        else:
            rest.append(node)
    if not folded:
        return 0
    init_names = {i.name for i in g.initializer}
    wanted = [i for n in rest for i in n.input if i in const and i not in init_names]
    wanted += [o.name for o in g.output if o.name in const and o.name not in init_names]
    wanted = list(dict.fromkeys(wanted))
    if wanted:
        sub = helper.make_model(
            helper.make_graph(folded, "fold", [], [onnx.ValueInfoProto(name=w) for w in wanted],
                              initializer=list(g.initializer)),
            opset_imports=model.opset_import, ir_version=model.ir_version,
        )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        values = ort.InferenceSession(sub.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(wanted, {})
    else:
        values = []
    used = {i for n in rest for i in n.input} | {o.name for o in g.output}
    inits = [i for i in g.initializer if i.name in used]
    inits += [numpy_helper.from_array(np.asarray(v), w) for w, v in zip(wanted, values)]
    del g.node[:]
    g.node.extend(rest)
    del g.initializer[:]
    g.initializer.extend(inits)
    return len(folded)


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node: Any, name: str, value: Any) -> None:
    from onnx import helper

    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def _scalar(x: np.ndarray | None) -> float | None:
    if x is None or x.size != 1:
        return None
    return float(x.reshape(()))


def _gemm_weight(gr: _Graph, gemm: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(W as [out, in] float32, bias [out]) of a Gemm with constant B (and C), alpha = beta = 1."""
    if gemm.op_type != "Gemm" or _attr(gemm, "transA", 0) or _attr(gemm, "alpha", 1.0) != 1.0:
        return None
    if _attr(gemm, "beta", 1.0) != 1.0:
        return None
    b = gr.const(gemm.input[1])
    if b is None or b.ndim != 2 or b.dtype != np.float32:
        return None
    w = b if _attr(gemm, "transB", 0) else b.T
    bias = np.zeros(w.shape[0], np.float32)
    if len(gemm.input) > 2 and gemm.input[2]:
        c = gr.const(gemm.input[2])
        if c is None or c.dtype != np.float32 or c.size not in (1, w.shape[0]):
            return None
        bias = np.broadcast_to(c.reshape(-1), (w.shape[0],)).astype(np.float32)
    return w, bias


def _store_gemm(gr: _Graph, gemm: Any, w: np.ndarray, bias: np.ndarray) -> None:
    """Give ``gemm`` fresh constants W (as transB=1) and bias (never shared with another node)."""
    wn, bn = gr.fresh(f"{gemm.name or 'gemm'}_W"), gr.fresh(f"{gemm.name or 'gemm'}_b")
    gr.set_const(wn, w.astype(np.float32))
    gr.set_const(bn, bias.astype(np.float32))
    _set_attr(gemm, "transB", 1)
    del gemm.input[1:]
    gemm.input.extend([wn, bn])


def _fold_batchnorm(gr: _Graph) -> int:
    """Gemm -> BatchNormalization (inference form) becomes one Gemm."""
    count = 0
    for bn in [n for n in gr.g.node if n.op_type == "BatchNormalization"]:
        if len(bn.output) != 1 or _attr(bn, "training_mode", 0):
            continue
        gemm = gr.producer(bn.input[0])
        if gemm is None or not gr.single_use(bn.input[0]):
            continue
        wb = _gemm_weight(gr, gemm)
        params = [gr.const(i) for i in bn.input[1:5]]
        if wb is None or any(p is None for p in params):
            continue
        scale, beta, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
        k = scale / np.sqrt(var + float(_attr(bn, "epsilon", 1e-5)))
        w, bias = wb
        _store_gemm(gr, gemm, w * k[:, None].astype(np.float32),
                    ((bias.astype(np.float64) - mean) * k + beta).astype(np.float32))
        gemm.output[0] = bn.output[0]
        gr.g.node.remove(bn)
        count += 1
    return count


def _quantizer_chain(gr: _Graph, q: Any) -> tuple[list[Any], Any, float, int, int] | None:
    """Match ``Q(s, z) -> [Clip(lo, hi)] -> DQ(s, z)``; returns (nodes, DQ, s, lo - z, hi - z)."""
    if len(q.input) < 3:
        return None
    s, z = _scalar(gr.const(q.input[1])), gr.const(q.input[2])
    if s is None or s <= 0 or z is None or z.size != 1:
        return None
    from onnx import helper

    try:
        ttype = helper.np_dtype_to_tensor_dtype(z.dtype)
    except (KeyError, ValueError):
        return None
    if ttype not in _QINFO or _attr(q, "saturate", 1) != 1:
        return None
    lo, hi = _QINFO[ttype]
    zp = int(z.reshape(()))
    nodes = [q]
    cur = q.output[0]
    nxt = gr.consumers(cur)
    if len(nxt) != 1 or gr.is_output(cur):
        return None
    node = nxt[0]
    if node.op_type == "Clip":
        cmin = gr.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        cmax = gr.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if (len(node.input) > 1 and node.input[1] and cmin is None) or \
                (len(node.input) > 2 and node.input[2] and cmax is None):
            return None
        if cmin is not None:
            lo = max(lo, int(_scalar(cmin)))  # type: ignore[arg-type]
        if cmax is not None:
            hi = min(hi, int(_scalar(cmax)))  # type: ignore[arg-type]
        nodes.append(node)
        cur = node.output[0]
        nxt = gr.consumers(cur)
        if len(nxt) != 1 or gr.is_output(cur):
            return None
        node = nxt[0]
    if node.op_type != "DequantizeLinear":
        return None
    ds, dz = _scalar(gr.const(node.input[1])), gr.const(node.input[2]) if len(node.input) > 2 else None
    if ds != s or dz is None or int(dz.reshape(())) != zp:
        return None
    return nodes, node, s, lo - zp, hi - zp


def lower_fake_quant(model: Any) -> dict[str, int]:
    """Rewrite activation quantisers as Clip -> Round with scales folded into Gemms (in place)."""
    from onnx import helper

    gr = _Graph(model)
    stats = {"batchnorm_folded": _fold_batchnorm(gr), "quantizers_lowered": 0, "scales_folded": 0,
             "relu_dropped": 0}
    for q in [n for n in gr.g.node if n.op_type == "QuantizeLinear"]:
        if q not in gr.g.node:
            continue
        m = _quantizer_chain(gr, q)
        if m is None:
            continue
        nodes, dq, s, lo, hi = m
        x = q.input[0]
        # Drop a Relu in front when the clip's lower bound already removes negatives.
        relu = gr.producer(x)
        if relu is not None and relu.op_type == "Relu" and lo >= 0 and gr.single_use(x):
            x = relu.input[0]
            gr.g.node.remove(relu)
            stats["relu_dropped"] += 1
        # x / s: into the producing Gemm when it is ours alone, else an explicit Mul.
        prod = gr.producer(x)
        others = [c for c in gr.consumers(x) if c is not q]
        wb = _gemm_weight(gr, prod) if prod is not None and not others and not gr.is_output(x) else None
        idx = list(gr.g.node).index(q)
        new: list[Any] = []
        if wb is not None and prod is not None:
            _store_gemm(gr, prod, (wb[0] / np.float32(s)).astype(np.float32), (wb[1] / np.float32(s)))
            scaled = x
            stats["scales_folded"] += 1
        else:
            inv = gr.fresh("inv_scale")
            gr.set_const(inv, np.array(1.0 / s, np.float32))
            scaled = gr.fresh(f"{q.name or 'q'}_scaled")
            new.append(helper.make_node("Mul", [x, inv], [scaled], name=gr.fresh("fq_mul")))
        lo_n, hi_n = gr.fresh("fq_lo"), gr.fresh("fq_hi")
        gr.set_const(lo_n, np.array(lo, np.float32))
        gr.set_const(hi_n, np.array(hi, np.float32))
        clipped = gr.fresh("fq_clipped")
        new.append(helper.make_node("Clip", [scaled, lo_n, hi_n], [clipped], name=gr.fresh("fq_clip")))
        # s * Round(.): into every consuming Gemm as its A input, else an explicit Mul.
        users = gr.consumers(dq.output[0])
        fold_ok = not gr.is_output(dq.output[0]) and users and all(
            u.input[0] == dq.output[0] and dq.output[0] not in u.input[1:] and _gemm_weight(gr, u) is not None
            for u in users)
        if fold_ok:
            rounded = dq.output[0]
            new.append(helper.make_node("Round", [clipped], [rounded], name=gr.fresh("fq_round")))
            for u in users:
                w, b = _gemm_weight(gr, u)  # type: ignore[misc]
                _store_gemm(gr, u, (w * np.float32(s)).astype(np.float32), b)
            stats["scales_folded"] += 1
        else:
            rounded = gr.fresh("fq_rounded")
            sc = gr.fresh("scale")
            gr.set_const(sc, np.array(s, np.float32))
            new.append(helper.make_node("Round", [clipped], [rounded], name=gr.fresh("fq_round")))
            new.append(helper.make_node("Mul", [rounded, sc], [dq.output[0]], name=gr.fresh("fq_rescale")))
        for n in (*nodes, dq):
            gr.g.node.remove(n)
        for off, n in enumerate(new):
            gr.g.node.insert(idx + off, n)
        stats["quantizers_lowered"] += 1
    gr.commit()
    return stats


def op_counts(nodes: Iterable[Any]) -> dict[str, int]:
    """How many nodes of each op type."""
    out: dict[str, int] = {}
    for n in nodes:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return dict(sorted(out.items()))
