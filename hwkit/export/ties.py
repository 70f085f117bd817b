"""Golden samples that sit on a rounding boundary, and how to avoid them.

A quantiser maps ``y = x / scale + zeropt`` to an integer; when ``y`` lies within float rounding error of
a rounding boundary (``k + 0.5`` for round-to-nearest, ``k`` for floor/ceil), the integer it gets depends
on the order in which ``x`` was summed: PyTorch, onnxruntime and FINN's folded thresholds may each round
it differently, and one flipped activation changes everything after it. Such a sample cannot tell a
correct transformation from a wrong one. With random weights and random integer inputs they are common
(resnet18_4w4a: 3 of 32 samples differ between PyTorch and Brevitas's own QONNX export). hwkit measures,
for every golden sample, its smallest distance to a boundary over every activation quantiser of the
QONNX graph (in quantisation steps), and draws golden inputs whose distance is at least
:data:`MARGIN`, so that every hand-off check can stay exact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TIE_ULPS = 16.0
"""A value closer than this many float32 ulps (of its own magnitude, in quantisation steps) to a rounding
boundary is a tie: whether it rounds up or down depends on summation order. Measured on resnet18_4w4a
(random init, 32 UINT8 samples): the samples that PyTorch and QONNX, or QONNX and the streamlined graph,
round differently had their closest value 0.05 to 9 ulps from a boundary."""
DRAW_ROUNDS = 4
"""Golden inputs are drawn from at most this many times the golden batch of candidates."""

_NEAREST = ("ROUND", "HALF_EVEN", "HALF_UP")
_QUANT_OPS = ("Quant", "IntQuant", "Trunc", "BipolarQuant")


def quantiser_inputs(model: Any) -> list[tuple[Any, list[str]]]:
    """Activation quantisers of a QONNX graph (their input is computed from the graph input) and the
    tensors needed to find their rounding boundaries: (node, [x, scale, zeropt, bitwidth] or [x, scale])."""
    from hwkit.backends.finn.execute import dynamic_tensors

    dynamic = dynamic_tensors(model)
    out = []
    for node in model.graph.node:
        if node.op_type in _QUANT_OPS and node.input[0] in dynamic:
            k = 2 if node.op_type == "BipolarQuant" else (4 if node.op_type != "Trunc" else 3)
            out.append((node, list(node.input[:k])))
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def sample_margins(model: Any, values: dict[str, np.ndarray], relative: bool = False) -> np.ndarray:
    """Per sample (axis 0 of the activations): the least distance, in quantisation steps, of any value an
    activation quantiser rounds to its rounding boundary (inf when the graph has no such quantiser).

    ``values`` holds every tensor :func:`quantiser_inputs` names, activations with the batch first.
    """
    margins: np.ndarray | None = None
    for node, names in quantiser_inputs(model):
        x = np.asarray(values[names[0]], dtype=np.float64)
        n = len(x)
        scale = np.asarray(values[names[1]], dtype=np.float64)
        y = x / scale
        if node.op_type == "BipolarQuant":
            dist = np.abs(y)  # sign: the boundary is 0
        else:
            zeropt = np.asarray(values[names[2]], dtype=np.float64)
            y = y + zeropt
            if node.op_type == "Trunc":
                mode = "ROUND"  # Trunc rounds x / scale first; the power-of-two shift after it is exact
                inside = np.ones_like(y, dtype=bool)
            else:
                mode = str(_attr(node, "rounding_mode", "ROUND")).upper()
                bits = float(np.asarray(values[names[3]]).max())
                signed, narrow = bool(_attr(node, "signed", 1)), bool(_attr(node, "narrow", 0))
                lo = -(2 ** (bits - 1)) + narrow if signed else 0.0
                hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1 - narrow
                inside = (y > lo - 1) & (y < hi + 1)  # a value clipped to the range rounds to its end either way
            frac = y - np.floor(y)
            dist = np.abs(frac - 0.5) if mode in _NEAREST else np.minimum(frac, 1.0 - frac)
            dist = np.where(inside, dist, np.inf)
        if relative:
            dist = dist / (np.abs(y) + 1.0)
        per = dist.reshape(n, -1).min(axis=1, initial=np.inf)
        margins = per if margins is None else np.minimum(margins, per)
    if margins is None:
        return np.full(len(next(iter(values.values()))) if values else 0, np.inf)
    return margins


def tie_ulps(model: Any, values: dict[str, np.ndarray]) -> np.ndarray:
    """Per sample: the least distance of an activation to its rounding boundary, in float32 ulps of its
    magnitude (a sample under :data:`TIE_ULPS` has a tie)."""
    return sample_margins(model, values, relative=True) / float(np.finfo(np.float32).eps)


def run_with_ties(model: Any, inputs: np.ndarray, work_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of the QONNX ``model`` on ``inputs`` and each sample's :func:`tie_ulps`."""
    from hwkit.backends.finn.execute import execute_values

    needed = sorted({t for _, names in quantiser_inputs(model) for t in names})
    got = execute_values(model, inputs, [model.graph.output[0].name, *needed], work_dir)
    return got[0], tie_ulps(model, dict(zip(needed, got[1:], strict=True)))


def draw_golden(model: Any, draw: Callable[[int], np.ndarray], n: int, work_dir: Path,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """``n`` golden inputs with as few ties as the candidates allow, their QONNX outputs, their
    :func:`tie_ulps`, and what was done.

    ``draw(k)`` gives the first ``k`` seeded candidates. The first ``n`` are kept when none has a tie;
    otherwise :data:`DRAW_ROUNDS` x ``n`` candidates are run and the ``n`` farthest from a tie are kept
    (in their drawn order). Only the QONNX graph (the reference) is looked at, never a later stage.
    """
    cands = draw(n * DRAW_ROUNDS)
    outs, ulps = run_with_ties(model, cands[:n], work_dir)
    info: dict[str, Any] = {"candidates": n, "ties_in_first": int(np.sum(ulps < TIE_ULPS))}
    # even when every candidate has a tie (a large network: MobileNet v1 at 224x224 has millions of
    # activations per sample), the farthest ones round alike far more often (measured: 2 of 32 samples
    # differed between PyTorch and QONNX when kept from 128 candidates, 10 of the first 32)
    if info["ties_in_first"] and DRAW_ROUNDS > 1:
        more = [run_with_ties(model, cands[i:i + n], work_dir) for i in range(n, len(cands), n)]  # n at a time
        outs = np.concatenate([outs, *(o for o, _ in more)])
        ulps = np.concatenate([ulps, *(u for _, u in more)])
        keep = np.sort(np.argsort(-ulps, kind="stable")[:n])
        cands, outs, ulps = cands[keep], outs[keep], ulps[keep]
        info["candidates"] = n * DRAW_ROUNDS
    else:
        cands = cands[:n]
    info.update(ties=int(np.sum(ulps < TIE_ULPS)), least_ulps=round(float(ulps.min()), 3) if len(ulps) else None)
    return cands, outs, ulps, info


def excuse_ties(ref: np.ndarray, out: np.ndarray, ulps: np.ndarray, stats: dict[str, Any]) -> str | None:
    """Accept a float hand-off whose only differing samples have ties, at most one in eight of the batch.

    ``stats`` (from :func:`hwkit.verify.compare`) is updated in place: ``ok``, and ``tie_samples`` (the
    excused sample indices). Returns a note for the report, or None when nothing was excused (``stats``
    then stands as it was).
    """
    n = len(ref)
    tol = stats.get("tolerance")
    if tol is None or n < 2:
        return None
    err = np.abs(np.asarray(ref, np.float64) - np.asarray(out, np.float64)).reshape(n, -1).max(axis=1)
    top = np.asarray(ref).reshape(n, -1).argmax(1) != np.asarray(out).reshape(n, -1).argmax(1)
    bad = np.nonzero((err > tol) | top)[0]
    if not len(bad) or len(bad) > max(1, n // 8) or not bool(np.all(ulps[bad] < TIE_ULPS)):
        return None
    stats.update(ok=True, reason=None, tie_samples=[int(i) for i in bad])
    return (f"{len(bad)} of {n} golden samples ({', '.join(str(int(i)) for i in bad)}) differ by up to "
            f"{float(err[bad].max()):.3g} between the stages: each has an activation within "
            f"{float(ulps[bad].max()):.2g} float32 ulps of a rounding boundary (a tie, rounded by summation "
            f"order); the other {n - len(bad)} agree")
