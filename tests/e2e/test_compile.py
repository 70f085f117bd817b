"""End-to-end compiles through real finn-plus (no Vivado), checked against FINN's own estimate files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch

from hwkit.api import compile_model
from hwkit.board import load_board
from hwkit.errors import UnsupportedLayerError
from hwkit.report import report_schema

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains


def _finn_report_dir(out: Path) -> Path:
    (d,) = (out / "passes").glob("*-finn.generate_estimate_reports")
    return d / "report"


def test_zcu104_report_matches_finn_estimates(tiny_build):
    out, report = tiny_build
    data = json.loads((out / "report.json").read_text())
    jsonschema.validate(data, report_schema())
    rep = _finn_report_dir(out)
    perf = json.loads((rep / "estimate_network_performance.json").read_text())
    res = json.loads((rep / "estimate_layer_resources.json").read_text())
    cyc = json.loads((rep / "estimate_layer_cycles.json").read_text())
    (fold_pass,) = (out / "passes").glob("*-finn.target_fps_parallelization")
    fold = json.loads((fold_pass / "report" / "auto_folding_config.json").read_text())

    assert data["target"]["board"] == "zcu104" and data["target"]["part"] == "xczu7ev-ffvc1156-2-e"
    p = data["performance"]
    assert p["throughput_fps"] == {"value": perf["estimated_throughput_fps"], "unit": "frames/s",
                                   "source": "finn-estimate"}
    assert p["latency_ms"]["value"] == pytest.approx(perf["estimated_latency_ns"] / 1e6)
    assert p["critical_path_cycles"]["value"] == perf["critical_path_cycles"]
    assert data["bottleneck_layer"] == perf["max_cycles_node_name"]
    # FINN's latency is critical-path cycles at the clock.
    assert perf["estimated_latency_ns"] == pytest.approx(perf["critical_path_cycles"] * 5.0)

    zcu = load_board("zcu104")
    for key in ("LUT", "BRAM_18K", "URAM", "DSP"):
        r = data["resources"][key]
        assert r["used"]["value"] == res["total"][key]
        assert r["available"]["value"] == zcu.resources[key]
        assert r["utilisation_pct"]["value"] == pytest.approx(100 * res["total"][key] / zcu.resources[key], abs=1e-3)
    assert data["resources"]["FF"]["used"]["source"] == "not-estimated"
    assert data["fits"] is True

    names = {row["name"] for row in data["layers"]}
    assert names == set(cyc)
    for row in data["layers"]:
        assert row["cycles"]["value"] == cyc[row["name"]]
        lut = row["resources"]["LUT"]
        if "FLOAT32" in (row["input_dtype"], row["output_dtype"]) and lut["source"] == "not-estimated":
            assert lut["value"] is None and res[row["name"]]["LUT"] == 0  # FINN's 0 for a float layer is "unknown"
        else:
            assert lut["value"] == res[row["name"]]["LUT"] and lut["source"] == "finn-estimate"
        if row["op"].startswith("MVAU"):
            assert row["pe"] == fold[row["name"]]["PE"] and row["simd"] == fold[row["name"]]["SIMD"]
            assert row["weight_dtype"] in ("INT2", "BIPOLAR", "TERNARY")
    # target 2M fps at 200 MHz forces real folding: some layer runs with more than one PE or SIMD lane
    assert any((row["pe"] or 1) * (row["simd"] or 1) > 1 for row in data["layers"])

    stages = [(v["reference"], v["stage"]) for v in data["verification"]]
    assert stages == [("torch", "qonnx"), ("qonnx", "finn-streamlined"), ("finn-streamlined", "finn-hw")]
    assert all(v["ok"] for v in data["verification"])
    assert data["verification"][-1]["int_exact"] is True
    assert data["verification"][0]["max_abs_err"] < 1e-4
    md = (out / "report.md").read_text()
    assert "finn-estimate" in md and "MVAU" in md
    # the PyTorch origin of every matrix-vector unit is known
    assert [r["torch_layer"] for r in data["layers"] if r["op"].startswith("MVAU")] == \
        ["0 (QuantLinear)", "3 (QuantLinear)", "6 (QuantLinear)"]


def test_hw_codegen_wrote_hls_sources(tiny_build):
    out, _ = tiny_build
    from qonnx.core.modelwrapper import ModelWrapper

    (last,) = (out / "passes").glob("*-finn.hw_codegen")
    model = ModelWrapper(str(last / "model.onnx"))
    from qonnx.custom_op.registry import getCustomOp

    mvau = [n for n in model.graph.node if n.op_type.startswith("MVAU")]
    assert mvau
    for node in mvau:
        d = Path(getCustomOp(node).get_nodeattr("code_gen_dir_ipgen"))
        assert d.is_relative_to(last.resolve() / "finn_build")
        assert list(d.glob("*.cpp"))


def test_unchanged_rerun_is_served_from_checkpoints(tiny_build_copy, tiny_ckpt):
    rep = compile_model(tiny_ckpt, "zcu104", tiny_build_copy, target_fps=2_000_000)
    assert all(p.cached for p in rep.passes)
    rep2 = compile_model(tiny_ckpt, "zcu104", tiny_build_copy, target_fps=1_000_000)
    cached = {p.id: p.cached for p in rep2.passes}
    assert cached["04-finn.streamline"] and cached["09-finn.specialize_layers"]
    assert not cached["10-finn.target_fps_parallelization"] and not cached["14-finn.generate_estimate_reports"]
    rep3 = compile_model(tiny_ckpt, "zcu104", tiny_build_copy, target_fps=1_000_000, from_step="finn.streamline")
    cached = [p.cached for p in rep3.passes]
    assert cached[:3] == [True, True, True] and not any(cached[3:])
    assert rep3.performance["throughput_fps"].value == rep2.performance["throughput_fps"].value


def test_second_board_and_no_fit(tmp_path, tiny_ckpt):
    rep = compile_model(tiny_ckpt, "pynq-z1", tmp_path / "pz1", target_fps=100_000)
    assert rep.target["part"] == "xc7z020clg400-1" and rep.target["clock_ns"] == 10.0
    assert rep.performance["clock_mhz"].value == 100.0
    assert rep.resources["LUT"].available.value == 53200
    assert rep.fits is True
    fps = rep.performance["throughput_fps"].value
    assert fps >= 100_000
    finn_perf = json.loads((_finn_report_dir(tmp_path / "pz1") / "estimate_network_performance.json").read_text())
    assert fps == finn_perf["estimated_throughput_fps"]
    assert rep.performance["latency_ms"].value == pytest.approx(finn_perf["critical_path_cycles"] * 10.0 / 1e6)

    small = tmp_path / "tiny-part.toml"
    small.write_text((Path(load_board("pynq-z1").source)).read_text()
                     .replace("LUT = 53200", "LUT = 100").replace("BRAM_18K = 280", "BRAM_18K = 0"))
    rep = compile_model(tiny_ckpt, str(small), tmp_path / "small", target_fps=100_000)
    assert rep.fits is False
    assert any(n.startswith("LUT") for n in rep.fit_notes)
    assert rep.resources["LUT"].utilisation_pct.value > 100


def test_qonnx_input_compiles(tiny_build, tmp_path):
    out, _ = tiny_build
    onnx = out / "passes" / "01-export_qonnx" / "model.onnx"
    rep = compile_model(onnx, "zcu104", tmp_path / "q", to_step="finn-hw")
    assert rep.model["format"] == "qonnx" and rep.model["input_dtype"] == "UINT8"
    assert [v["stage"] for v in rep.verification] == ["finn-streamlined", "finn-hw"]
    assert rep.verification[-1]["int_exact"] is True


def test_unsupported_layer_is_named(tmp_path):
    import brevitas.nn as qnn

    model = torch.nn.Sequential(qnn.QuantLinear(16, 8, bias=True, weight_bit_width=2), torch.nn.Sigmoid(),
                                qnn.QuantLinear(8, 4, bias=True, weight_bit_width=2))
    path = tmp_path / "sig.pt"
    torch.save(model.state_dict(), path)
    import tests.e2e.models as models

    del models  # imported for the --arch path below
    with pytest.raises(UnsupportedLayerError) as e:
        compile_model(path, "zcu104", tmp_path / "o", arch="tests.e2e.models:sigmoid_mlp", input_shape=(1, 16),
                      input_dtype="UINT8")
    msg = str(e.value)
    # finn-plus maps the float Sigmoid to an elementwise layer; the QuantLinear after it then sees float
    # input and cannot become a matrix-vector unit: that layer is named, with its op and input type.
    assert "06-finn.convert_to_hw" in msg and "PyTorch layer 2 (QuantLinear)" in msg
    assert "op MatMul (input FLOAT32)" in msg
