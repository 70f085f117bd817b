"""Hand-off verification: every stage runs the same golden batch and is compared to the stage before.

Float outputs must agree within a tolerance scaled to the output range; where both stages expose an
integer-domain tensor (the last integer-typed tensor before the float output tail of a FINN graph)
those must be identical. Predicted classes must agree wherever the reference's top-2 margin is
larger than the tolerance (a tie in 2-bit logits is not a disagreement).
"""

from __future__ import annotations

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


def excuse_qonnx_ties(golden: dict[str, Any], ref: np.ndarray, out: np.ndarray, stats: dict[str, Any],
                      root: Any) -> str | None:
    """The first FINN hand-off (QONNX -> streamlined) may excuse tied samples, as torch -> QONNX does.

    Streamlining folds scales and biases into thresholds, so the float sums before each rounding are
    taken in another order: a sample with an activation within a few float32 ulps of a rounding boundary
    (measured on the QONNX graph when the golden batch was drawn, hwkit/export/ties.py) may round the
    other way. Such samples are excused only at this hand-off (the reference is the float QONNX graph),
    only when every differing sample has a tie and they are at most one in eight; every later hand-off
    compares the streamlined graph's own outputs exactly. Returns the report's note, or None.
    """
    if stats["ok"] or golden.get("stage") != "qonnx" or golden.get("int_outputs") or not golden.get("ties_ulps"):
        return None
    from hwkit.export.ties import excuse_ties

    return excuse_ties(ref, out, np.load(root / golden["ties_ulps"]), stats)


def record(stage: str, reference: str, samples: int, stats: dict[str, Any]) -> dict[str, Any]:
    """One row of the report's verification table."""
    return {"stage": stage, "reference": reference, "samples": samples, **stats}


def fail_if_bad(rec: dict[str, Any]) -> None:
    """Raise naming the first stage that diverges."""
    if not rec["ok"]:
        raise VerificationError(
            f"hand-off {rec['reference']} -> {rec['stage']} diverges on the golden batch: {rec['reason']}"
        )


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
    from hwkit.backends.finn.execute import execute_with_host

    out, ints = execute_with_host(art.path, inputs, ctx.work_dir, thaw(art.meta.get("host")), root)
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
    warnings = list(art.meta.get("warnings", ()))
    note = excuse_qonnx_ties(golden, ref, out, stats, root)
    if note:
        warnings.append(f"{golden['stage']} -> {stage}: {note}")
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
    return art.evolve(golden=new_golden, verification=history, warnings=warnings)
