"""The three exporters on their own: QCDQ graph surgery (hwkit/export/qcdq.py) on hand-built graphs run
by ONNX Runtime, the ONNX exporter (hwkit/export/onnx.py) and the QONNX exporter (hwkit/export/qonnx.py)
as passes on a real Brevitas checkpoint, each output compared with PyTorch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwkit.artifact import Artifact
from hwkit.board import load_board
from hwkit.config import CompileSettings, Context
from hwkit.errors import InputError
from hwkit.export import qcdq
from hwkit.export.onnx import check_onnx_file, is_brevitas_quantised, max_ort_opset, sample_inputs

S = 0.25  # activation scale of the fake quantiser


def _fake_quant_graph(dq_scale: float = S) -> onnx.ModelProto:
    """x -> Gemm -> BatchNorm -> Relu -> QuantizeLinear -> Clip(0, 3) -> DequantizeLinear -> Gemm(W2 = 2 * W) -> y.

    Every initialiser is also listed as a graph input (as Brevitas' QCDQ export does) and W2 is a
    constant subgraph (Mul), so all three rewrites have something to do.
    """
    rng = np.random.default_rng(0)
    inits = {
        "W1": rng.standard_normal((3, 4)).astype(np.float32), "b1": rng.standard_normal(3).astype(np.float32),
        "bn_scale": np.array([1.5, 0.5, 1.0], np.float32), "bn_bias": np.array([0.1, -0.2, 0.3], np.float32),
        "bn_mean": np.array([0.2, 0.0, -0.1], np.float32), "bn_var": np.array([2.0, 0.5, 1.0], np.float32),
        "s": np.array(S, np.float32), "z": np.array(0, np.uint8), "lo": np.array(0, np.uint8),
        "hi": np.array(3, np.uint8), "ds": np.array(dq_scale, np.float32),
        "W2raw": rng.standard_normal((2, 3)).astype(np.float32), "two": np.array(2.0, np.float32),
        "b2": rng.standard_normal(2).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1, name="gemm1"),
        helper.make_node("BatchNormalization", ["h", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"]),
        helper.make_node("Clip", ["q", "lo", "hi"], ["c"]),
        helper.make_node("DequantizeLinear", ["c", "ds", "z"], ["d"]),
        helper.make_node("Mul", ["W2raw", "two"], ["W2"]),
        helper.make_node("Gemm", ["d", "W2", "b2"], ["y"], transB=1, name="gemm2"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])]
    inputs += [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
               for k, v in inits.items()]
    graph = helper.make_graph(nodes, "fq", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_qcdq_rewrites_keep_the_outputs_and_remove_the_fake_quantiser():
    model = _fake_quant_graph()
    x = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32) * 3
    ref = _run(model, x)
    assert qcdq.constants_from_inputs(model) == 14 and [i.name for i in model.graph.input] == ["x"]
    assert qcdq.constants_from_inputs(model) == 0
    assert qcdq.fold_constants(model) == 1  # the Mul computing W2
    stats = qcdq.lower_fake_quant(model)
    assert stats == {"batchnorm_folded": 1, "quantizers_lowered": 1, "scales_folded": 2, "relu_dropped": 1}
    assert qcdq.op_counts(model.graph.node) == {"Clip": 1, "Gemm": 2, "Round": 1}
    onnx.checker.check_model(model)
    got = _run(model, x)
    # exact up to float rounding: an activation on a rounding boundary may move by one level
    assert np.abs(got - ref).max() < 1e-4
    assert np.array_equal(np.argmax(got, 1), np.argmax(ref, 1))


def test_qcdq_leaves_a_chain_it_does_not_match():
    model = _fake_quant_graph(dq_scale=2 * S)  # dequantises with another scale: not a fake quantiser
    x = np.random.default_rng(2).standard_normal((16, 4)).astype(np.float32)
    qcdq.constants_from_inputs(model)
    ref = _run(model, x)
    stats = qcdq.lower_fake_quant(model)
    assert stats["quantizers_lowered"] == 0 and stats["relu_dropped"] == 0
    assert {"QuantizeLinear", "DequantizeLinear", "Relu"} <= set(qcdq.op_counts(model.graph.node))
    assert np.allclose(_run(model, x), ref, atol=1e-5)


def test_sample_inputs_cover_the_type_and_are_seeded():
    u8 = sample_inputs((1, 8), "UINT8", 500, 0)
    assert u8.shape == (500, 8) and u8.min() == 0 and u8.max() == 255 and np.array_equal(u8, np.round(u8))
    assert set(np.unique(sample_inputs((1, 4), "BIPOLAR", 100, 0))) == {-1.0, 1.0}
    f = sample_inputs((1, 3, 2), "FLOAT32", 10, 5)
    assert f.shape == (10, 3, 2) and f.dtype == np.float32 and np.array_equal(f, sample_inputs((1, 3, 2), "FLOAT32",
                                                                                                  10, 5))
    assert not np.array_equal(f, sample_inputs((1, 3, 2), "FLOAT32", 10, 6))


def test_check_onnx_file_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="bad.onnx: not a readable ONNX model"):
        check_onnx_file(bad)
    good = tmp_path / "good.onnx"
    onnx.save(_fake_quant_graph(), str(good))
    assert check_onnx_file(good).graph.node[0].op_type == "Gemm"
    new = _fake_quant_graph()
    new.opset_import[0].version = max_ort_opset() + 1
    onnx.save(new, str(tmp_path / "new.onnx"))
    with pytest.raises(InputError, match=r"new\.onnx: ONNX opset \d+ is newer than onnxruntime"):
        check_onnx_file(tmp_path / "new.onnx")


def _ctx(tmp_path: Path, board: str, step: str, **params) -> Context:
    work = tmp_path / "passes" / step
    work.mkdir(parents=True)
    return Context(load_board(board), CompileSettings(golden_batch=16), tmp_path, work, params)


def _torch_out(ckpt: Path, x: np.ndarray) -> np.ndarray:
    import torch

    from hwkit.load import load_model

    loaded = load_model(ckpt, CompileSettings())
    with torch.no_grad():
        return loaded.module(torch.from_numpy(x)).numpy()


def test_export_onnx_lowers_brevitas_qcdq_and_matches_torch(tmp_path, tiny_ckpt):
    from hwkit.export.onnx import export_onnx

    art = export_onnx(Artifact(stage="model-file", path=tiny_ckpt), _ctx(tmp_path, "cpu", "01-export_onnx",
                                                                          test_samples=200))
    meta = art.meta["onnx"]
    assert art.stage == "onnx" and meta["form"] == "brevitas-qcdq-lowered" and meta["precision"] == "quantised"
    assert meta["surgery"]["quantizers_lowered"] >= 2 and "QuantizeLinear" not in meta["ops"]
    x = np.load(tmp_path / meta["refs"]["test_in"])
    assert x.shape == (200, 16) and x.min() >= 0 and x.max() <= 255
    import onnxruntime as ort

    got = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    ref = _torch_out(tiny_ckpt, x)
    assert np.array_equal(np.load(tmp_path / meta["refs"]["test_out_torch"]), ref)
    assert np.mean(np.argmax(got, 1) == np.argmax(ref, 1)) >= 0.98
    assert np.abs(got - ref).max() < 0.05 * max(1.0, float(np.abs(ref).max()))


def test_export_qonnx_matches_torch_and_names_torch_layers(tmp_path, tiny_ckpt):
    from hwkit.export.qonnx import _check_dtype, export_qonnx, golden_inputs

    art = export_qonnx(Artifact(stage="model-file", path=tiny_ckpt), _ctx(tmp_path, "zcu104", "01-export_qonnx"))
    assert art.stage == "qonnx" and art.path is not None and art.path.is_file()
    (rec,) = art.meta["verification"]
    assert rec["stage"] == "qonnx" and rec["reference"] == "torch" and rec["ok"] and rec["samples"] == 16
    x = np.load(tmp_path / art.meta["golden"]["inputs"])
    q = np.load(tmp_path / art.meta["golden"]["outputs"])
    assert np.abs(q - _torch_out(tiny_ckpt, x)).max() <= 1e-5 * max(1.0, float(np.abs(q).max()))
    model = art.meta["model"]
    assert model["input_dtype"] == "UINT8" and list(model["input_shape"]) == [1, 16]
    assert list(model["output_shape"]) == [1, 4]
    assert len(model["weight_layers"]) == 3
    g = golden_inputs((1, 16), "INT2", 200, 0)
    assert g.min() == -2 and g.max() == 1 and np.array_equal(g, golden_inputs((1, 16), "INT2", 200, 0))
    with pytest.raises(InputError, match="unknown input data type 'UNIT8'"):
        _check_dtype("UNIT8")


def test_brevitas_detection():
    import torch

    from tests.conftest import make_qmlp

    assert is_brevitas_quantised(make_qmlp())
    assert not is_brevitas_quantised(torch.nn.Sequential(torch.nn.Linear(2, 2)))
