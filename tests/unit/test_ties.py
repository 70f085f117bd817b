"""Golden samples on a rounding boundary (hwkit/export/ties.py): measured on a real QONNX Quant node,
avoided when drawing golden inputs, and excused in the torch -> QONNX check only when they are ties."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from hwkit.export.ties import TIE_ULPS, draw_golden, excuse_ties, run_with_ties, sample_margins, tie_ulps

pytest.importorskip("qonnx")


def _quant_model(scale: float = 0.5, bits: int = 4, signed: int = 0, mode: str = "ROUND"):
    """x -> Mul(1) -> Quant(scale, 0, bits): one activation quantiser (its input is computed from x)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    nodes = [helper.make_node("Mul", ["x", "one"], ["h"]),
             helper.make_node("Quant", ["h", "s", "z", "b"], ["y"], domain="qonnx.custom_op.general",
                              signed=signed, narrow=0, rounding_mode=mode)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 3])])
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    for name, v in (("one", 1.0), ("s", scale), ("z", 0.0), ("b", float(bits))):
        model.set_initializer(name, np.array(v, dtype=np.float32))
    return model


def test_margins_measure_the_distance_to_the_rounding_boundary(tmp_path):
    model = _quant_model(scale=0.5)
    x = np.array([[0.25, 1.0, 2.0],     # y = 0.5: exactly on the boundary
                  [0.1, 1.1, 2.2],      # y = 0.2, 2.2, 4.4: 0.3, 0.3, 0.1 from a boundary
                  [0.1, 1.1, 50.0]],    # 100 is clipped to 15: no boundary there
                 dtype=np.float32)
    values = {"h": x, "s": np.float32(0.5), "z": np.float32(0.0), "b": np.float32(4)}
    m = sample_margins(model, values)
    assert m[0] == 0.0
    assert m[1] == pytest.approx(0.1, abs=1e-5)
    assert m[2] == pytest.approx(0.3, abs=1e-5)
    ulps = tie_ulps(model, values)
    assert ulps[0] == 0.0 and ulps[1] > 1e4
    out, got = run_with_ties(model, x, tmp_path)  # the same through hwkit's graph execution
    assert np.array_equal(got, ulps) and out.shape == (3, 3)
    # floor rounding: the boundary is the integer itself
    floor = sample_margins(_quant_model(mode="FLOOR"), values)
    assert floor[1] == pytest.approx(0.2, abs=1e-5)


def test_drawing_keeps_the_first_batch_without_ties_and_avoids_ties_otherwise(tmp_path):
    model = _quant_model(scale=0.5)
    rng = np.random.default_rng(0)
    clean = (rng.integers(0, 7, size=(40, 3)) * 0.5 + 0.1).astype(np.float32)  # y = k + 0.2: no tie

    inputs, outs, ulps, info = draw_golden(model, lambda k: clean[:k], 8, tmp_path)
    assert np.array_equal(inputs, clean[:8]) and info == {"candidates": 8, "ties_in_first": 0, "ties": 0,
                                                          "least_ulps": info["least_ulps"]}
    tied = clean.copy()
    tied[[1, 4], 0] = 0.25  # y = 0.5 in two of the first eight samples
    inputs, outs, ulps, info = draw_golden(model, lambda k: tied[:k], 8, tmp_path)
    assert info["ties_in_first"] == 2 and info["ties"] == 0 and info["candidates"] == 32
    assert not any(np.array_equal(inputs[i], tied[1]) or np.array_equal(inputs[i], tied[4]) for i in range(8))
    assert np.all(ulps >= TIE_ULPS)
    picked = [int(np.nonzero((tied[:32] == row).all(1))[0][0]) for row in inputs]
    assert picked == sorted(picked)  # drawn order kept
    assert np.array_equal(outs, run_with_ties(model, inputs, tmp_path)[0])

    all_tied = clean.copy()
    all_tied[:, 0] = 0.25 + np.arange(40, dtype=np.float32) * 1e-7  # every candidate near a tie, some nearer
    inputs, outs, ulps, info = draw_golden(model, lambda k: all_tied[:k], 8, tmp_path)
    assert info["candidates"] == 32 and info["ties_in_first"] == 8
    assert sorted(ulps) == sorted(run_with_ties(model, all_tied[:32], tmp_path)[1])[-8:]  # the farthest 8


def _stats(ref, out):
    from hwkit.verify import compare

    return compare(ref, out)


def test_only_tied_samples_are_excused_and_only_a_few():
    ref = np.tile(np.arange(10, dtype=np.float32), (16, 1))
    out = ref.copy()
    out[3, 9] += 1.0
    ulps = np.full(16, 1e6)
    ulps[3] = 2.0  # sample 3 has a tie
    stats = _stats(ref, out)
    assert not stats["ok"]
    note = excuse_ties(ref, out, ulps, stats)
    assert stats["ok"] and stats["tie_samples"] == [3] and "1 of 16" in note

    clean_bad = out.copy()
    clean_bad[5, 0] += 1.0  # sample 5 differs with no tie: a real divergence
    stats = _stats(ref, clean_bad)
    assert excuse_ties(ref, clean_bad, ulps, stats) is None and not stats["ok"]

    many = ref.copy()
    many[:3, 9] += 1.0  # three of sixteen differ: more than one in eight
    ulps3 = np.full(16, 1e6)
    ulps3[:3] = 1.0
    stats = _stats(ref, many)
    assert excuse_ties(ref, many, ulps3, stats) is None and not stats["ok"]


def test_the_streamlining_hand_off_excuses_ties_only_against_the_qonnx_reference(tmp_path):
    from hwkit.verify import excuse_qonnx_ties

    ref = np.tile(np.arange(10, dtype=np.float32), (16, 1))
    out = ref.copy()
    out[3, 9] += 1.0
    ulps = np.full(16, 1e6)
    ulps[3] = 2.0
    np.save(tmp_path / "ulps.npy", ulps)
    golden = {"stage": "qonnx", "int_outputs": None, "ties_ulps": "ulps.npy"}
    stats = _stats(ref, out)
    assert "1 of 16" in excuse_qonnx_ties(golden, ref, out, stats, tmp_path) and stats["ok"]
    # a later hand-off (the reference is the streamlined graph, with integer outputs) stays exact
    for later in ({**golden, "stage": "finn_streamlined"}, {**golden, "int_outputs": "ints.npy"},
                  {k: v for k, v in golden.items() if k != "ties_ulps"}):
        stats = _stats(ref, out)
        assert excuse_qonnx_ties(later, ref, out, stats, tmp_path) is None and not stats["ok"]
    # an untied differing sample is a real divergence at this hand-off too
    ulps[3] = 1e6
    np.save(tmp_path / "ulps.npy", ulps)
    stats = _stats(ref, out)
    assert excuse_qonnx_ties(golden, ref, out, stats, tmp_path) is None and not stats["ok"]
