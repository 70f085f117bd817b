"""Analog crossbar targets end to end: a digits float MLP compiled for RRAM/PCM boards."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from hwkit.api import compile_model
from hwkit.errors import BoardError, FlowError, UnsupportedLayerError
from hwkit.report import report_schema
from tests.conftest import ROOT
from tests.e2e.test_cli import hwkit, one_line_error

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains

ARCH = ["--arch", "hwkit.compress.synapse.train:build_mlp", "--arch-kwargs", '{"sizes": [64, 24, 10]}',
        "--input-shape", "1,64"]


@pytest.fixture(scope="module")
def digits_mlp(tmp_path_factory) -> Path:
    """A float 64-24-10 MLP trained briefly on digits (pixels / 16), saved as a state dict + labelled test set."""
    from hwkit.compress.synapse.train import build_mlp, digits_split, train_float

    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits_split(0)
    torch.manual_seed(0)
    model = train_float(build_mlp([64, 24, 10]), xtr, ytr, epochs=4)
    d = tmp_path_factory.mktemp("analog")
    torch.save(model.state_dict(), d / "mlp.pt")
    np.savez(d / "mlp.testset.npz", x=xte.numpy(), y=yte.numpy())
    return d / "mlp.pt"


def test_compile_digits_mlp_for_rram_cli(tmp_path, digits_mlp):
    out = tmp_path / "b"
    proc = hwkit("compile", str(digits_mlp), "--target", "rram-taox-128", *ARCH, "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, report_schema())
    assert doc["target"]["kind"] == "analog" and doc["flow"] == "analog"
    p = doc["performance"]
    assert p["software_accuracy"]["source"] == "measured" and p["software_accuracy"]["value"] > 0.85
    acc = p["analog_accuracy_mean"]
    assert acc["source"] == "simulated" and 0.1 < acc["value"] <= 1.0
    assert p["analog_accuracy_min"]["value"] <= acc["value"] <= p["analog_accuracy_max"]["value"]
    assert p["device_instances"]["value"] == 10
    assert p["energy_per_inference_nj"]["source"] == "analytical-estimate" and p["energy_per_inference_nj"]["value"] > 0
    assert p["latency_per_inference_us"]["value"] > 0
    names = {e["name"] for e in doc["energy"]}
    assert {"crossbar read energy per inference", "ADC energy per inference",
            "total energy per inference"} <= names
    for e in doc["energy"]:
        assert e["source"] == "analytical-estimate" and 0 <= e["low"] <= e["value"] <= e["high"]
    total = next(e for e in doc["energy"] if e["name"] == "total energy per inference")
    parts = sum(e["value"] for e in doc["energy"] if e is not total)
    assert total["value"] == pytest.approx(parts)
    (ver,) = doc["verification"]
    assert ver["ok"] and ver["stage"].startswith("analog-crossbar") and ver["max_abs_err"] < 1e-4
    assert any("UNCONFIRMED" in w for w in doc["warnings"])
    assert (out / "report.md").is_file() and "analog_accuracy_mean" in (out / "report.md").read_text()


def test_more_noise_lower_accuracy_and_no_data_is_reported(tmp_path, digits_mlp):
    """A custom board with a noisier, coarser device and 4-bit ADCs does worse; without data: not-estimated."""
    base = (ROOT / "boards" / "rram-taox-128.toml").read_text()
    noisy = (base.replace('device = "taox-hfox"', 'device = "ideal-linear"')
             .replace("device_instances = 10", "device_instances = 3").replace("adc_bits = 8", "adc_bits = 3")
             .replace("read_noise = 0.01", "read_noise = 0.2"))
    clean = (base.replace('device = "taox-hfox"', 'device = "ideal-linear"')
             .replace("device_instances = 10", "device_instances = 3")
             .replace("d2d_gmax = 0.05\nd2d_gmin = 0.05\nread_noise = 0.01", ""))
    (tmp_path / "noisy.toml").write_text(noisy)
    (tmp_path / "clean.toml").write_text(clean)
    kw = {"arch": "hwkit.compress.synapse.train:build_mlp", "arch_kwargs": (("sizes", [64, 24, 10]),),
          "input_shape": (1, 64)}
    r_noisy = compile_model(digits_mlp, str(tmp_path / "noisy.toml"), tmp_path / "n", **kw)
    r_clean = compile_model(digits_mlp, str(tmp_path / "clean.toml"), tmp_path / "c", **kw)
    a_clean = r_clean.performance["analog_accuracy_mean"].value
    assert abs(a_clean - r_clean.performance["software_accuracy"].value) < 0.02
    assert r_noisy.performance["analog_accuracy_mean"].value < a_clean - 0.05
    # Without labelled data (no sidecar, flow data = auto): accuracy is not estimated, energy still is.
    bare = tmp_path / "bare.pt"
    bare.write_bytes(digits_mlp.read_bytes())
    rep = compile_model(bare, str(tmp_path / "clean.toml"), tmp_path / "x", **kw)
    jsonschema.validate(rep.to_json(), report_schema())
    assert rep.performance["analog_accuracy_mean"].source == "not-estimated"
    assert rep.performance["energy_per_inference_nj"].value > 0
    assert any("no labelled data" in w for w in rep.warnings)


def test_rejects_brevitas_model_and_bad_board(tmp_path, tiny_ckpt):
    with pytest.raises(UnsupportedLayerError, match="Brevitas"):
        compile_model(tiny_ckpt, "rram-agsi-128", tmp_path / "q")
    bad = (ROOT / "boards" / "pcm-gst-256.toml").read_text().replace("adc_bits = 8", "adc_bits = 0")
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(BoardError, match=r"bad\.toml \[analog\]: 'adc_bits'"):
        compile_model(tiny_ckpt, str(tmp_path / "bad.toml"), tmp_path / "z")
    proc = hwkit("compile", str(tiny_ckpt), "--target", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "y"))
    assert "adc_bits" in one_line_error(proc) and proc.returncode == 2


def test_write_verify_programming_from_board_and_flow_parameter(tmp_path, digits_mlp):
    """programming = "write-verify" on the board (or as a flow parameter) beats open loop and counts its pulses."""
    base = (ROOT / "boards" / "rram-taox-128.toml").read_text().replace("device_instances = 10", "device_instances = 3")
    assert 'programming = "open-loop"' in base
    (tmp_path / "ol.toml").write_text(base)
    (tmp_path / "wv.toml").write_text(base.replace('programming = "open-loop"', 'programming = "write-verify"'))
    kw = {"arch": "hwkit.compress.synapse.train:build_mlp", "arch_kwargs": (("sizes", [64, 24, 10]),),
          "input_shape": (1, 64)}
    ol = compile_model(digits_mlp, str(tmp_path / "ol.toml"), tmp_path / "ol", **kw).performance
    wv = compile_model(digits_mlp, str(tmp_path / "wv.toml"), tmp_path / "wv", **kw).performance
    assert wv["analog_accuracy_mean"].value > ol["analog_accuracy_mean"].value + 0.05
    assert wv["programmed_weight_rms_error"].value < ol["programmed_weight_rms_error"].value / 2
    assert wv["programming_pulses_per_instance"].value > ol["programming_pulses_per_instance"].value > 0
    assert wv["write_verify_pulses_per_instance"].source == "simulated" and wv["write_verify_reads_per_instance"].value
    assert "write_verify_pulses_per_instance" not in ol
    # The same through the flow: analog.simulate's parameter overrides the board's open loop.
    flow = (ROOT / "flows" / "analog.toml").read_text()
    (tmp_path / "wv-flow.toml").write_text(
        flow.replace('    "analog.simulate",', '    { name = "analog.simulate", programming = "write-verify" },'))
    fl = compile_model(digits_mlp, str(tmp_path / "ol.toml"), tmp_path / "fl", flow=str(tmp_path / "wv-flow.toml"),
                       **kw).performance
    assert fl["analog_accuracy_mean"].value == wv["analog_accuracy_mean"].value
    assert fl["write_verify_pulses_per_instance"].value == wv["write_verify_pulses_per_instance"].value
    (tmp_path / "bad-flow.toml").write_text(
        flow.replace('    "analog.simulate",', '    { name = "analog.simulate", programming = "closed" },'))
    with pytest.raises(FlowError, match="programming"):
        compile_model(digits_mlp, str(tmp_path / "ol.toml"), tmp_path / "bf", flow=str(tmp_path / "bad-flow.toml"),
                      **kw)
    (tmp_path / "bad.toml").write_text(base.replace("verify_tolerance = 0.02", "verify_tolerance = 0"))
    with pytest.raises(BoardError, match=r"bad\.toml \[analog\]: 'verify_tolerance'"):
        compile_model(digits_mlp, str(tmp_path / "bad.toml"), tmp_path / "bb", **kw)
