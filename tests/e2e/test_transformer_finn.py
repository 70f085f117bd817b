"""A quantised transformer encoder through finn-plus's attention layers (flow finn-transformer), dense and
AMP-pruned, on zcu104: real Brevitas, real finn-plus, every hand-off verified on the golden batch."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # trains a small encoder and runs two finn-plus estimate builds

torch = pytest.importorskip("torch")
pytest.importorskip("finn")

KW = {"tokens": 8, "features": 8, "dim": 16, "heads": 1, "layers": 1, "hidden": 32, "norm": "batch"}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Train a small encoder on digits rows, prune its FFN with AMP (hwkit prune), compile both."""
    import numpy as np

    from hwkit.api import compile_model
    from hwkit.cli import main
    from hwkit.models.encoder import accuracy, build_encoder, checkpoint, digits_tokens, train_encoder

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("enc")
    xtr, ytr, xte, yte = digits_tokens()
    model = train_encoder(build_encoder(**KW), xtr, ytr, epochs=3)
    acc = accuracy(model, xte, yte)
    dense = d / "dense.pt"
    torch.save(checkpoint(model, KW, xte[:8], {"test_accuracy": acc}), dense)
    np.save(d / "x.npy", xtr.numpy())
    np.save(d / "y.npy", ytr.numpy())
    pruned = d / "pruned.pt"
    rc = main(["prune", str(dense), "--calib", str(d / "x.npy"), "--labels", str(d / "y.npy"), "--remove", "50%",
               "--out", str(pruned), "--quiet"])
    assert rc == 0
    reports = {name: compile_model(path, "zcu104", d / f"build_{name}", flow="finn-transformer", target_fps=100000)
               .to_json() for name, path in (("dense", dense), ("pruned", pruned))}
    return acc, torch.load(pruned, weights_only=True), reports, d


def mvau_shapes(build_dir):
    """(MW, MH) of every MVAU of the final HW graph, in graph order."""
    import onnx
    from onnx import helper

    (path,) = build_dir.glob("passes/*generate_estimate_reports/model.onnx")
    graph = onnx.load(str(path)).graph
    return [tuple(helper.get_node_attr_value(n, a) for a in ("MW", "MH")) for n in graph.node
            if n.op_type.startswith("MVAU")]


def test_encoder_learns(builds):
    acc = builds[0]
    assert acc > 0.8  # 10 classes: chance is 0.1


def test_dense_encoder_maps_to_attention_hw_with_every_handoff_verified(builds):
    rep = builds[2]["dense"]
    ops = [layer["op"] for layer in rep["layers"]]
    assert any(op.startswith("ScaledDotProductAttention") for op in ops)
    assert sum(op.startswith("MVAU") for op in ops) == 8  # embed, q, k, v, out, fc1, fc2, head
    assert any(op.startswith("ElementwiseAdd") for op in ops) and any(op.startswith("ReplicateStream") for op in ops)
    stages = [(v["reference"], v["stage"]) for v in rep["verification"]]
    assert stages == [("torch", "qonnx"), ("qonnx", "finn-streamlined"), ("finn-streamlined", "finn-hw")]
    assert all(v["ok"] for v in rep["verification"])
    # the HW graph is integer up to the output dequantisation: bit-exact against the streamlined graph
    assert rep["verification"][-1]["int_exact"] is True
    assert rep["verification"][-1]["class_agreement"] == 1.0
    assert rep["performance"]["throughput_fps"]["value"] > 0 and rep["fits"]


def test_amp_pruned_ffn_gives_smaller_mvaus_and_fewer_luts(builds):
    _, pruned_ckpt, reports, d = builds
    hidden = pruned_ckpt["arch_kwargs"]["hidden"][0]
    assert hidden < KW["hidden"]
    dense, pruned = mvau_shapes(d / "build_dense"), mvau_shapes(d / "build_pruned")
    dim = KW["dim"]
    # FFN: fc1 is dim -> hidden, fc2 hidden -> dim; every other MVAU is unchanged
    assert (dim, KW["hidden"]) in dense and (KW["hidden"], dim) in dense
    assert (dim, hidden) in pruned and (hidden, dim) in pruned
    changed = [(a, b) for a, b in zip(dense, pruned, strict=True) if a != b]
    assert sorted(changed) == sorted([((dim, KW["hidden"]), (dim, hidden)), ((KW["hidden"], dim), (hidden, dim))])
    lut = {k: r["resources"]["LUT"]["used"]["value"] for k, r in reports.items()}
    assert lut["pruned"] < lut["dense"]
    assert all(v["ok"] for v in reports["pruned"]["verification"])
    assert reports["pruned"]["verification"][-1]["int_exact"] is True


LN_KW = {**KW, "norm": "layer"}


@pytest.fixture(scope="module")
def layernorm_build(tmp_path_factory):
    """A LayerNorm encoder (norm="layer") trained briefly and compiled for zcu104."""
    from tests.e2e.models import trained_encoder_build

    return trained_encoder_build(tmp_path_factory.mktemp("enc_ln"), LN_KW, epochs=2, name="ln")


def test_layernorm_encoder_maps_to_layernorm_hw_with_every_handoff_verified(layernorm_build):
    import onnx
    from onnx import helper

    acc, rep, build = layernorm_build
    assert acc > 0.5  # 10 classes, two epochs: learning, not accuracy
    ops = [layer["op"] for layer in rep["layers"]]
    assert ops.count("LayerNorm_hls") == 2 * LN_KW["layers"]  # norm1 and norm2 of the block
    assert any(op.startswith("ScaledDotProductAttention") for op in ops)
    stages = [(v["reference"], v["stage"]) for v in rep["verification"]]
    assert stages == [("torch", "qonnx"), ("qonnx", "finn-streamlined"), ("finn-streamlined", "finn-hw")]
    assert all(v["ok"] for v in rep["verification"])
    # LayerNorm computes in float, but its output is quantised by the next thresholds: the integer tensor
    # before the output dequantisation is still bit-exact against the streamlined graph
    assert rep["verification"][-1]["int_exact"] is True
    assert rep["verification"][-1]["class_agreement"] == 1.0
    assert rep["fits"]
    # the LayerNorm reads the residual add's integers (the add's scale went into epsilon); gamma/beta are gone
    (path,) = build.glob("passes/*generate_estimate_reports/model.onnx")
    graph = onnx.load(str(path)).graph
    lns = [n for n in graph.node if n.op_type.startswith("LayerNorm")]
    assert len(lns) == 2
    for n in lns:
        assert helper.get_node_attr_value(n, "inputDataType").decode().startswith("INT")
        assert helper.get_node_attr_value(n, "epsilon") != pytest.approx(1e-5)
