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


def _power_pass(meta, board="zcu104", clock_ns=5.0, tmp_path=None):
    from pathlib import Path

    from hwkit.artifact import Artifact
    from hwkit.backends.finn.power import estimate_power
    from hwkit.config import CompileSettings, Context

    ctx = Context(load_board(board), CompileSettings(clock_ns=clock_ns), Path("."), Path("."))
    return estimate_power(Artifact(stage="finn", meta=meta), ctx)


def test_power_is_a_pass_and_the_report_only_shows_it():
    from hwkit.energy.fpga import energy_entries
    from hwkit.energy.fpga import estimate_power as model

    assert not _report().energy  # build_report computes no power itself
    art = _power_pass(FINN_META)
    used = {"LUT": 700.0, "FF": None, "BRAM_18K": 2.0, "URAM": 0.0, "DSP": 0.0}
    want = energy_entries(model(used, 200.0, load_board("zcu104")), 6e-4, 2e6)
    assert [dict(r) for r in art.meta["fpga_power"]["energy"]] == want
    rep = _report(meta={**FINN_META, "fpga_power": art.meta["fpga_power"]})
    assert rep.energy == want and any("analytical model's range" in w for w in rep.warnings)
    jsonschema.validate(rep.to_json(), report_schema())
    # no clock, or a board without [power]: the pass leaves the artifact as it was
    assert "fpga_power" not in _power_pass(FINN_META, clock_ns=None).meta
    assert "fpga_power" not in _power_pass({"verification": []}).meta


def test_sections_merge_in_order_and_later_ones_replace_the_verdict():
    from hwkit.report import Quantity, Section

    a = Section(performance={"x": Quantity(1, "count", "derived")}, fits=True, warnings=["a"])
    a.merge(Section(performance={"y": Quantity(2, "count", "derived")}, warnings=["b"]))
    assert list(a.performance) == ["x", "y"] and a.fits is True and a.warnings == ["a", "b"]
    a.merge(Section(fits=False, fit_notes=["LUT"], target={"execution_providers": ["CPU"]}))
    assert a.fits is False and a.fit_notes == ["LUT"] and a.target == {"execution_providers": ["CPU"]}
