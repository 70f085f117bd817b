"""Hand-off verification: every stage runs the same golden batch and is compared to the stage before.

Float outputs must agree within a tolerance scaled to the output range; where both stages expose an
integer-domain tensor (the last integer-typed tensor before the float output tail of a FINN graph)
those must be identical. Predicted classes must agree wherever the reference's top-2 margin is
larger than the tolerance (a tie in 2-bit logits is not a disagreement).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwkit.artifact import Artifact, thaw
from hwkit.config import Context
from hwkit.errors import VerificationError
from hwkit.registry import register

DEFAULT_RTOL = 1e-5


def compare(ref: np.ndarray, out: np.ndarray, rtol: float = DEFAULT_RTOL) -> dict[str, Any]:
    """Error statistics of ``out`` against ``ref`` (same shape, batch first)."""
    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    out = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
    if ref.shape != out.shape:
        return {"ok": False, "reason": f"output shapes differ: {ref.shape} vs {out.shape}",
                "max_abs_err": None, "mean_abs_err": None, "tolerance": None, "class_agreement": None}
    err = np.abs(ref - out)
    tol = rtol * (1.0 + float(np.max(np.abs(ref))) if ref.size else 1.0)
    agree = None
    if ref.shape[1] > 1:
        srt = np.sort(ref, axis=1)
        decisive = (srt[:, -1] - srt[:, -2]) > tol
        if decisive.any():
            agree = float(np.mean(ref.argmax(1)[decisive] == out.argmax(1)[decisive]))
    ok = bool(err.max() <= tol) if err.size else True
    if agree is not None and agree < 1.0:
        ok = False
    return {
        "ok": ok,
        "reason": None if ok else f"max abs error {err.max():.3g} > tolerance {tol:.3g}",
        "max_abs_err": float(err.max()) if err.size else 0.0,
        "mean_abs_err": float(err.mean()) if err.size else 0.0,
        "tolerance": tol,
        "class_agreement": agree,
    }


def compare_int(ref: np.ndarray, out: np.ndarray) -> dict[str, Any]:
    """Exact comparison of integer-domain tensors."""
    if ref.shape != out.shape:
        return {"int_exact": False, "int_mismatches": None}
    bad = int(np.count_nonzero(np.asarray(ref) != np.asarray(out)))
    return {"int_exact": bad == 0, "int_mismatches": bad}


def record(stage: str, reference: str, samples: int, stats: dict[str, Any]) -> dict[str, Any]:
    """One row of the report's verification table."""
    return {"stage": stage, "reference": reference, "samples": samples, **stats}


def fail_if_bad(rec: dict[str, Any]) -> None:
    """Raise naming the first stage that diverges."""
    if not rec["ok"]:
        raise VerificationError(
            f"hand-off {rec['reference']} -> {rec['stage']} diverges on the golden batch: {rec['reason']}"
        )


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

    from hwkit.backends.finn import ensure_finn

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


@register("verify", uses=())
def verify(art: Artifact, ctx: Context) -> Artifact:
    """Run the golden batch through the current graph and compare with the previous stage."""
    stage = str(ctx.params.get("label", art.stage))
    rtol = float(ctx.params.get("rtol", DEFAULT_RTOL))
    golden = thaw(art.meta["golden"])
    root = ctx.out_dir
    inputs = np.load(root / golden["inputs"])
    ref = np.load(root / golden["outputs"])
    assert art.path is not None
    out, ints = execute_finn_graph(art.path, inputs, ctx.work_dir)
    stats = compare(ref, out, rtol)
    ref_int_path = golden.get("int_outputs")
    if ints is not None and ref_int_path:
        istats = compare_int(np.load(root / ref_int_path), ints)
        if not istats["int_exact"]:
            stats["ok"] = False
            stats["reason"] = f"integer-domain outputs differ in {istats['int_mismatches']} element(s)"
        stats.update(istats)
    else:
        stats.update({"int_exact": None, "int_mismatches": None})
    rec = record(stage, golden["stage"], len(inputs), stats)
    out_path = ctx.work_dir / "golden_out.npy"
    np.save(out_path, out)
    new_golden = {"inputs": golden["inputs"], "outputs": str(out_path.relative_to(root)), "stage": stage,
                  "int_outputs": None}
    if ints is not None:
        int_path = ctx.work_dir / "golden_int.npy"
        np.save(int_path, ints)
        new_golden["int_outputs"] = str(int_path.relative_to(root))
    history = [*thaw(art.meta.get("verification", [])), rec]
    fail_if_bad(rec)
    return art.evolve(golden=new_golden, verification=history)
