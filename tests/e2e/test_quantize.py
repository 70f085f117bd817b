"""``hwkit quantize`` and ``hwkit compile --quantize`` end to end: a float MLP trained here on digits goes to
a Brevitas model, through every FINN hand-off check to a ZCU104 estimate, and through ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.e2e.models import train_on_digits
from tests.e2e.test_cli import hwkit, one_line_error

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains

KW = {"in_features": 64, "hidden": [32, 16], "out_features": 10}


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory):
    from hwkit.models import builder

    m = train_on_digits(lambda: builder("mlp")(**KW), epochs=10)
    path = tmp_path_factory.mktemp("quantize") / "float.pt"
    torch.save({"hwkit_checkpoint": 1, "arch": "mlp", "arch_kwargs": KW, "state_dict": m.state_dict(),
                "input_shape": [1, 64], "input_dtype": "FLOAT32"}, path)
    return path


def _quant_bits(onnx_path) -> tuple[set[int], set[int], set[int]]:
    """(weight, bias, activation) bit widths of the Quant nodes of a QONNX graph."""
    g = onnx.load(str(onnx_path)).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    weights, biases, acts = set(), set(), set()
    for n in g.node:
        if n.op_type == "Quant":
            bits = int(inits[n.input[3]])
            src = inits.get(n.input[0])
            (acts if src is None else weights if src.ndim >= 2 else biases).add(bits)
    return weights, biases, acts


def test_cli_w4a4_ptq_keeps_accuracy(float_ckpt, tmp_path, capsys):
    from hwkit.cli import main

    out = tmp_path / "q" / "q4.pt"
    rc = main(["quantize", str(float_ckpt), "--bits", "w4a4", "--calib", "digits", "--out", str(out), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["accuracy"]["float"] > 0.9 and rep["accuracy"]["drop_points"] < 3.0
    assert {x["weight_bits"] for x in rep["layers"]} == {4}
    assert (out.parent / "quantize_report.md").is_file() and (out.parent / "quantize_report.json").is_file()


def test_unsupported_layer_exits_3_naming_the_module(tmp_path):
    from tests.e2e.models import gelu_mlp

    torch.save(gelu_mlp().state_dict(), tmp_path / "sd.pt")
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32))
    proc = hwkit("quantize", str(tmp_path / "sd.pt"), "--arch", "tests.e2e.models:gelu_mlp", "--input-shape", "1,16",
                 "--calib", str(tmp_path / "c.npz"), "--out", str(tmp_path / "q.pt"))
    assert proc.returncode == 3
    assert "1 (GELU): FINN has no GELU layer" in one_line_error(proc)
    assert not (tmp_path / "q.pt").exists()


@pytest.mark.slow
def test_compile_quantize_to_zcu104_carries_requested_widths_then_cpu(float_ckpt, tmp_path):
    """One command from a float checkpoint to a verified ZCU104 estimate; the exported QONNX graph and the
    FINN layers carry the requested widths (4-bit weights, one layer at 2, 4-bit ReLUs): a skipped
    quantisation would leave no Quant nodes and float MVAU weights. The quantised checkpoint then runs in ORT."""
    from tests.e2e.test_ort import fast_flow

    out = tmp_path / "b"
    proc = hwkit("compile", str(float_ckpt), "--target", "zcu104", "--quantize", "w4a4", "--calib", "digits",
                 "--layer-bits", "2=2", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["verification"] and all(v["ok"] for v in rep["verification"])
    assert {v["stage"] for v in rep["verification"]} >= {"qonnx", "finn-streamlined", "finn-hw"}
    assert rep["fits"] is True
    qdir = out / "passes" / "01-quantize"
    qrep = json.loads((qdir / "quantize_report.json").read_text())
    assert {x["name"]: x["weight_bits"] for x in qrep["layers"]} == {"0": 4, "2": 2, "4": 4}
    weights, biases, acts = _quant_bits(out / "passes" / "02-export_qonnx" / "model.onnx")
    assert weights == {4, 2} and biases == set() and acts == {4, 8}  # ReLUs 4, input and output 8; float biases
    mvau = [lay for lay in rep["layers"] if lay["op"].startswith("MVAU")]
    assert sorted(lay["weight_dtype"] for lay in mvau) == ["INT2", "INT4", "INT4"]

    cpu = hwkit("compile", str(qdir / "quantized.pt"), "--target", "cpu", "--flow", fast_flow(tmp_path),
                "--out", str(tmp_path / "cpu"), "--json")
    assert cpu.returncode == 0, cpu.stderr
    crep = json.loads(cpu.stdout)
    assert crep["verification"] and all(v["ok"] for v in crep["verification"])
    assert crep["performance"]["latency_p50_ms"]["value"] > 0


def test_global_average_pool_cnn_quantises_and_maps_to_fpga(tmp_path):
    """AdaptiveAvgPool2d once stopped `hwkit quantize` ("average pooling is not quantised for FINN"). It becomes a
    Brevitas TruncAvgPool2d (FLOOR) over the window measured on the input shape, which FINN maps to a Pool layer;
    w8a8 keeps the float accuracy (the pool's scale is right), and the compile verifies every hand-off."""
    from hwkit.cli import main
    from hwkit.compress.amp.toy import digits_splits, train_classifier
    from tests.e2e.models import avgpool_cnn

    x, y = digits_splits(0)["train"]
    torch.manual_seed(0)
    model = train_classifier(avgpool_cnn(), torch.as_tensor(x).float().reshape(-1, 1, 8, 8), y, epochs=12)
    sd = tmp_path / "cnn.pt"
    torch.save(model.state_dict(), sd)
    common = ["--arch", "tests.e2e.models:avgpool_cnn", "--input-shape", "1,1,8,8", "--calib", "digits"]
    assert main(["quantize", str(sd), *common, "--bits", "w8a8", "--out", str(tmp_path / "q8.pt"), "--quiet"]) == 0
    rep = json.loads((tmp_path / "quantize_report.json").read_text())
    assert rep["accuracy"]["float"] > 0.85 and rep["accuracy"]["quantized"] >= rep["accuracy"]["float"] - 0.01
    ck = torch.load(tmp_path / "q8.pt", weights_only=True)
    assert ck["arch_kwargs"]["recipe"]["avg_pools"] == {"6": [6, 6, 6, 6]}
    out = tmp_path / "build"
    assert main(["compile", str(sd), *common, "--quantize", "w4a4", "--target", "zcu104", "--out", str(out),
                 "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [(r["stage"], r["ok"]) for r in report["verification"]] == \
        [("qonnx", True), ("finn-streamlined", True), ("finn-hw", True)]
    assert report["verification"][-1]["int_exact"] is True
    assert any(layer["op"].startswith("Pool") for layer in report["layers"])
