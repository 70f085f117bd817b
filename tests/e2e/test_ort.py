"""ONNX Runtime targets end to end: real exports, real sessions, real timings (small run counts)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
import torch

from hwkit.api import compile_model
from hwkit.errors import InputError, ToolError
from hwkit.report import report_schema
from tests.e2e.test_cli import hwkit, one_line_error

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains

FAST = """
name = "ort-test"
board_kinds = ["cpu", "gpu"]
passes = [
    {{ name = "export_onnx", test_samples = 1000 }},
    {{ name = "quantize_onnx", method = "{method}" }},
    "ort.session",
    {{ name = "ort.verify", rtol = 1e-4, min_class_agreement = 0.999 }},
    {{ name = "ort.measure", warmup = 5, runs = 60, batch_sizes = [1, 16, 128], batch_runs = 5, energy_runs = 20 }},
]
"""


def fast_flow(tmp_path: Path, method: str = "auto") -> str:
    p = tmp_path / f"ort-test-{method}.toml"
    p.write_text(FAST.format(method=method))
    return str(p)


def float_mlp() -> torch.nn.Sequential:
    """A float MLP with BatchNorm (built by --arch in tests)."""
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(),
                            torch.nn.Linear(64, 32), torch.nn.GELU(), torch.nn.Linear(32, 5))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("float") / "float.pt"
    torch.save(float_mlp().state_dict(), path)
    return path


def _check_measured(rep) -> dict:
    doc = rep.to_json()
    jsonschema.validate(doc, report_schema())
    assert doc["schema_version"] == "1.2"
    p = rep.performance
    assert 0 < p["latency_p50_ms"].value <= p["latency_p90_ms"].value <= p["latency_p99_ms"].value
    assert all(p[f"latency_{q}_ms"].source == "measured" for q in ("p50", "p90", "p99"))
    for b in (1, 16, 128):
        assert p[f"throughput_b{b}_samples_per_s"].value > 0
    assert p["eager_over_ort_latency_ratio_b1"].value > 0 and p["eager_latency_p50_ms"].source == "measured"
    assert p["peak_memory_mib"].value is not None and p["peak_memory_mib"].value >= 0
    assert "VmHWM" in rep.measurement["memory"]["method"]
    e = p["energy_per_inference_b1_mj"]
    assert e.value > 0 and e.source in ("measured", "analytical-estimate")
    assert p["energy_per_sample_best_batch_mj"].source == e.source
    assert rep.measurement["latency_b1"]["runs"] == 60
    return doc


def test_brevitas_mlp_to_cpu(tmp_path, tiny_ckpt):
    out = tmp_path / "b"
    rep = compile_model(tiny_ckpt, "cpu", out, flow=fast_flow(tmp_path))
    doc = _check_measured(rep)
    assert doc["target"]["kind"] == "cpu" and doc["target"]["execution_providers"] == ["CPUExecutionProvider"]
    assert doc["target"]["clock_ns"] is None
    ver = rep.verification
    assert [v["split"] for v in ver] == ["golden", "test-split"] and all(v["ok"] for v in ver)
    assert ver[1]["samples"] == 1000 and ver[1]["class_agreement"] >= 0.999
    assert ver[0]["max_abs_err"] < 1e-4 and ver[0]["mean_abs_err"] is not None
    art = json.loads((out / "passes" / "01-export_onnx" / "artifact.json").read_text())["artifact"]["meta"]["onnx"]
    assert art["form"] == "brevitas-qcdq-lowered"
    # the exported graph has no initialisers among its inputs and no weight quantisers left
    model = onnx.load(out / "passes" / "01-export_onnx" / "model.onnx")
    assert [i.name for i in model.graph.input] == ["input"]
    assert "QuantizeLinear" not in art["ops"] and art["ops"]["Round"] == 2
    assert art["surgery"]["batchnorm_folded"] == 2
    md = (out / "report.md").read_text()
    assert "## Measurement" in md and "latency_p50_ms" in md
    # re-running is served from the checkpoints
    again = compile_model(tiny_ckpt, "cpu", out, flow=fast_flow(tmp_path))
    assert all(p.cached for p in again.passes)


def test_float_model_and_int8_static(tmp_path, float_ckpt):
    kw = {"arch": "tests.e2e.test_ort:float_mlp", "input_shape": (1, 20)}
    rep = compile_model(float_ckpt, "cpu", tmp_path / "f", flow=fast_flow(tmp_path), **kw)
    _check_measured(rep)
    assert rep.verification[0]["max_abs_err"] <= rep.verification[0]["tolerance"]
    assert rep.verification[1]["class_agreement"] == 1.0

    rep8 = compile_model(float_ckpt, "cpu", tmp_path / "q", flow=fast_flow(tmp_path, "int8-static"), **kw)
    _check_measured(rep8)
    q = onnx.load(tmp_path / "q" / "passes" / "02-quantize_onnx" / "model.onnx")
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in q.graph.node}
    # post-training int8 against the float reference: its own gate (0.98), stated in the row
    assert rep8.verification[1]["class_agreement"] >= 0.98 and rep8.verification[1]["max_abs_err"] > 0
    assert "class agreement >= 0.98" in rep8.verification[1]["criterion"]


def test_weight_only_int4_applies_to_matmul_or_says_why(tmp_path, float_ckpt):
    rep = compile_model(float_ckpt, "cpu", tmp_path / "w", flow=fast_flow(tmp_path, "int4-weight-only"),
                        arch="tests.e2e.test_ort:float_mlp", input_shape=(1, 20), to_step="quantize_onnx")
    # torch exports nn.Linear on 2-D input as Gemm: MatMulNBits does not fit, and the report says so
    assert any("int4-weight-only" in w for w in rep.warnings)


def test_int4_weight_only_on_matmul(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 16)).astype(np.float32) * 0.1, "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], initializer=[w])
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    rep = compile_model(path, "cpu", tmp_path / "o", flow=fast_flow(tmp_path, "int4-weight-only"))
    q = onnx.load(tmp_path / "o" / "passes" / "02-quantize_onnx" / "model.onnx")
    assert "MatMulNBits" in {n.op_type for n in q.graph.node}
    assert rep.verification[0]["reference"] == "onnxruntime-unoptimised"
    assert "eager_latency_p50_ms" not in rep.performance  # no PyTorch model to compare with
    jsonschema.validate(rep.to_json(), report_schema())


def test_bench_cli_on_exported_onnx_and_bad_inputs(tmp_path, tiny_ckpt):
    out = tmp_path / "b"
    compile_model(tiny_ckpt, "cpu", out, flow=fast_flow(tmp_path), to_step="export_onnx")
    onnx_path = out / "passes" / "01-export_onnx" / "model.onnx"
    proc = hwkit("bench", str(onnx_path), "--target", "cpu", "--runs", "50", "--batch-runs", "3",
                 "--batch-sizes", "1,32", "--input-dtype", "UINT8", "--json", "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    jsonschema.validate(data, report_schema())
    lat = data["measurement"]["latency_b1"]
    assert lat["runs"] == 50 and 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    assert data["performance"]["throughput_b32_samples_per_s"]["source"] == "measured"
    assert (tmp_path / "rep" / "report.json").is_file()

    bad = onnx.load(onnx_path)
    bad.graph.node[0].input[0] = "nowhere"
    onnx.save(bad, tmp_path / "bad.onnx")
    proc = hwkit("bench", str(tmp_path / "bad.onnx"))
    line = one_line_error(proc)
    assert proc.returncode == 2 and "bad.onnx" in line and "ONNX checker" in line

    new = onnx.load(onnx_path)
    new.opset_import[0].version = 99
    onnx.save(new, tmp_path / "opset99.onnx")
    proc = hwkit("bench", str(tmp_path / "opset99.onnx"))
    line = one_line_error(proc)
    assert proc.returncode == 2 and "opset 99" in line

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    proc = hwkit("bench", str(tmp_path / "junk.onnx"))
    assert "junk.onnx" in one_line_error(proc)


def test_missing_execution_provider_is_one_line(tmp_path, tiny_ckpt):
    import onnxruntime as ort

    board = tmp_path / "fake-accel.toml"
    board.write_text('kind = "gpu"\ndescription = "x"\ndefault_flow = "ort-gpu"\n'
                     '[onnxruntime]\nexecution_providers = ["NoSuchExecutionProvider", "CPUExecutionProvider"]\n')
    with pytest.raises(ToolError, match="fake-accel.toml.*NoSuchExecutionProvider is not available"):
        compile_model(tiny_ckpt, str(board), tmp_path / "o", flow=fast_flow(tmp_path))
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        proc = hwkit("compile", str(tiny_ckpt), "--target", "gpu", "--out", str(tmp_path / "g"))
        line = one_line_error(proc)
        assert proc.returncode == 5 and "CUDAExecutionProvider" in line and "hwkit[gpu]" in line


def test_compile_cli_cpu_default_flow(tmp_path, tiny_ckpt):
    proc = hwkit("compile", str(tiny_ckpt), "--target", "cpu", "--out", str(tmp_path / "c"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # nothing but the report on stdout
    jsonschema.validate(data, report_schema())
    assert data["flow"] == "ort-cpu" and data["performance"]["latency_p50_ms"]["source"] == "measured"
    assert data["measurement"]["latency_b1"]["runs"] == 500
    with pytest.raises(InputError):
        compile_model(tiny_ckpt, "cpu", tmp_path / "x", flow=fast_flow(tmp_path, "int3-magic"))


def _cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="no CUDAExecutionProvider in this onnxruntime (install hwkit[gpu] on a GPU)")
def test_brevitas_mlp_to_gpu(tmp_path, tiny_ckpt):
    rep = compile_model(tiny_ckpt, "gpu", tmp_path / "g", flow=fast_flow(tmp_path))
    _check_measured(rep)
    assert rep.target["execution_providers"][0] == "CUDAExecutionProvider"
    assert all(v["ok"] for v in rep.verification)
