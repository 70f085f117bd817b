from __future__ import annotations

import copy

import jsonschema
import pytest

from hwkit.board import load_board
from hwkit.report import PassTiming, build_report, report_schema

FINN_META = {
    "finn": {
        "estimates": {
            "layer_resources": {
                "MVAU_hls_0": {"BRAM_18K": 2, "LUT": 700, "URAM": 0, "DSP": 0},
                "total": {"BRAM_18K": 2.0, "LUT": 700.0, "URAM": 0.0, "DSP": 0.0},
            },
            "layer_cycles": {"MVAU_hls_0": 100},
            "network_performance": {"critical_path_cycles": 120, "max_cycles": 100,
                                    "max_cycles_node_name": "MVAU_hls_0", "estimated_throughput_fps": 2e6,
                                    "estimated_latency_ns": 600.0},
            "op_and_param_counts": {},
        },
        "layers": [{"name": "MVAU_hls_0", "op": "MVAU_hls", "torch_layer": "0 (QuantLinear)", "pe": 2, "simd": 4,
                    "input_dtype": "UINT8", "weight_dtype": "INT2", "output_dtype": "UINT2"}],
    },
    "verification": [{"stage": "qonnx", "reference": "torch", "samples": 4, "ok": True, "reason": None,
                      "max_abs_err": 0.0, "mean_abs_err": 0.0, "tolerance": 1e-5, "class_agreement": 1.0,
                      "int_exact": None, "int_mismatches": None}],
}
MODEL = {"path": "/m.pt", "sha256": "0" * 64, "format": "hwkit-checkpoint"}
TOOLS = {"hwkit": "0", "finn-plus": "1", "qonnx": "1", "brevitas": "1", "torch": "2", "onnx": "1"}


def _report(board="zcu104", meta=FINN_META, fps=None):
    b = load_board(board)
    return build_report(meta, MODEL, b, {"clock_ns": 5.0, "target_fps": fps}, "finn-estimate",
                        [PassTiming("01-export_qonnx", 1.0, False)], TOOLS)


def test_report_validates_and_derives_utilisation():
    rep = _report()
    doc = rep.to_json()
    jsonschema.validate(doc, report_schema())
    assert doc["schema_version"] == "1.2"
    assert rep.resources["LUT"].utilisation_pct.value == pytest.approx(100 * 700 / 230400, abs=1e-3)
    assert rep.resources["FF"].used.source == "not-estimated"
    assert rep.performance["latency_ms"].value == pytest.approx(6e-4)
    assert rep.fits is True and rep.bottleneck_layer == "MVAU_hls_0"
    md = rep.to_markdown()
    assert "| throughput_fps | 2,000,000 | frames/s | finn-estimate |" in md
    assert "0 (QuantLinear)" in md


def test_no_fit_when_the_part_lacks_a_resource():
    meta = copy.deepcopy(FINN_META)
    meta["finn"]["estimates"]["layer_resources"]["total"]["URAM"] = 3.0
    rep = _report("pynq-z1", meta)  # no UltraRAM on a Zynq-7020
    assert rep.fits is False and any("URAM" in n for n in rep.fit_notes)
    jsonschema.validate(rep.to_json(), report_schema())


def test_missed_target_fps_is_a_warning():
    rep = _report(fps=5e6)
    assert any("below the target" in w for w in rep.warnings)


def test_schema_rejects_unlabelled_numbers():
    doc = _report().to_json()
    doc["performance"]["throughput_fps"]["source"] = "guess"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, report_schema())
    doc = _report().to_json()
    del doc["performance"]["latency_ms"]["source"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, report_schema())
