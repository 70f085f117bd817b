"""Parsers of finn-plus's Vivado reports, on report files shaped like the ones finn-plus 1.6.1 writes,
and their merge into report.json (source tool-report) beside the estimates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest

from hwkit.backends.finn.vivado_reports import parse_ooc, parse_post_synth, parse_power, parse_timing, read_report_dir
from hwkit.errors import ToolError

# step_out_of_context_synthesis: parse_ooc_synth_results(...) + estimated_throughput_fps (build_dataflow_steps.py)
OOC = {"LUT": 1342, "FF": 1877, "DSP": 0, "BRAM_36K": 1, "BRAM_18K": 2, "URAM": 0, "SRL": 40, "LUTRAM": 96,
       "BRAM": 2, "WNS": 0.412, "total_power_W": 0.731, "clk_period_ns": 5.0, "vivado_version": "2024.2",
       "fmax_mhz": 1000.0 / (5.0 - 0.412), "estimated_throughput_fps": 2.1e6,
       "vivado_proj_folder": "/b/vivado_stitch_proj_x", "routed_dcp": "/b/finn_design_routed.dcp"}
# step_synthesize_bitfile (Zynq): post_synth_res(model)[0]
POST_SYNTH = {"(top)": {"LUT": 9120, "SRL": 210, "FF": 12004, "BRAM_36K": 3, "BRAM_18K": 2, "URAM": 0, "DSP": 0},
              "top_smartconnect_0_0": {"LUT": 1300, "SRL": 0, "FF": 1800, "BRAM_36K": 0, "BRAM_18K": 0, "DSP": 0},
              "MVAU_hls_0": {"LUT": 400, "SRL": 0, "FF": 500, "BRAM_36K": 0, "BRAM_18K": 1, "DSP": 0}}
TIMING = """------------------------------------------------------------------------------------------------
| Design Timing Summary
| ---------------------
------------------------------------------------------------------------------------------------

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)
    -------      -------  ---------------------  -------------------      -------      -------
     -0.137       -1.024                     12                31245        0.011        0.000
"""
# VivadoPowerEstimation: power_<toggle>_<static prob>_{total,static,dynamic} (+ power_sim_* with simulation)
POWER = {f"power_{t}_0.5_{k}": v for t, tot in ((12.5, 0.81), (25, 0.93), (50, 1.17), (75, 1.41), (100, 1.65))
         for k, v in (("total", tot), ("static", 0.69), ("dynamic", round(tot - 0.69, 3)))}


def write_reports(d: Path, sim: bool = False) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ooc_synth_and_timing.json").write_text(json.dumps(OOC, indent=2))
    (d / "post_synth_resources.json").write_text(json.dumps(POST_SYNTH, indent=2))
    (d / "post_route_timing.rpt").write_text(TIMING)
    power = dict(POWER)
    if sim:
        power |= {"power_sim_total": 0.77, "power_sim_static": 0.69, "power_sim_dynamic": 0.08}
    (d / "power_estimate_summary.json").write_text(json.dumps(power, indent=2))
    return d


def test_parsers(tmp_path):
    d = write_reports(tmp_path / "report", sim=True)
    ooc = parse_ooc(d / "ooc_synth_and_timing.json")
    assert ooc["ooc_resources"] == {"LUT": 1342, "FF": 1877, "URAM": 0, "DSP": 0, "BRAM_18K": 4}  # 2 + 2 x 1
    assert ooc["wns_ns"] == 0.412 and math.isclose(ooc["fmax_mhz"], 217.96, rel_tol=1e-3)
    assert ooc["ooc_power_w"] == 0.731 and ooc["vivado_version"] == "2024.2"
    assert parse_post_synth(d / "post_synth_resources.json") == {"LUT": 9120, "FF": 12004, "URAM": 0, "DSP": 0,
                                                                 "BRAM_18K": 8}
    assert parse_timing(d / "post_route_timing.rpt") == -0.137
    points = parse_power(d / "power_estimate_summary.json")
    assert [p.activity for p in points] == ["simulated", "toggle 12.5%", "toggle 25%", "toggle 50%", "toggle 75%",
                                            "toggle 100%"]
    assert points[1].total_w == 0.81 and points[1].static_w == 0.69
    assert set(read_report_dir(d)) >= {"ooc_resources", "design_resources", "routed_wns_ns", "power"}
    assert read_report_dir(tmp_path / "nothing") == {}


def test_parsers_reject_wrong_files(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    for fn in (parse_ooc, parse_post_synth, parse_power):
        with pytest.raises(ToolError, match="x.json"):
            fn(bad)
    bad.write_text(json.dumps({"LUT": 3}))
    with pytest.raises(ToolError, match="fmax_mhz"):
        parse_ooc(bad)
    with pytest.raises(ToolError, match=r"\(top\)"):
        parse_post_synth(bad)
    with pytest.raises(ToolError, match="power_"):
        parse_power(bad)
    (tmp_path / "t.rpt").write_text("no timing here")
    assert parse_timing(tmp_path / "t.rpt") is None
    (tmp_path / "alt.rpt").write_text("Worst Negative Slack: 0.250 ns\n")
    assert parse_timing(tmp_path / "alt.rpt") == 0.25


@pytest.mark.slow  # compiles the tiny MLP through finn-plus (shared tiny_build fixture)
def test_merged_into_the_report(tiny_build, tmp_path):
    from hwkit.board import load_board
    from hwkit.flow import tool_versions
    from hwkit.report import Report, build_report, report_schema

    out, _ = tiny_build
    last = sorted((out / "passes").iterdir())[-1]
    meta = json.loads((last / "artifact.json").read_text())["artifact"]["meta"]
    meta["vivado"] = read_report_dir(write_reports(tmp_path / "report"))
    board = load_board("zcu104")
    model = json.loads((out / "report.json").read_text())["model"]
    rep = build_report(meta, model, board, {"clock_ns": 5.0, "target_fps": 2e6}, "finn-bitstream", [],
                       tool_versions())
    doc = rep.to_json()
    jsonschema.validate(doc, report_schema())
    perf = doc["performance"]
    assert perf["vivado_wns_ns"] == {"value": 0.412, "unit": "ns", "source": "tool-report"}
    assert perf["vivado_routed_wns_ns"]["value"] == -0.137
    assert perf["vivado_fmax_mhz"]["source"] == "tool-report" and perf["ooc_LUT"]["value"] == 1342
    assert perf["finn_estimate_LUT"]["source"] == "finn-estimate"
    assert doc["resources"]["LUT"]["used"] == {"value": 9120, "unit": "count", "source": "tool-report"}
    assert doc["resources"]["FF"]["used"]["value"] == 12004 and doc["fits"] is True
    tool_rows = [e for e in doc["energy"] if e["source"] == "tool-report"]
    assert {"analytical-estimate", "tool-report"} <= {e["source"] for e in doc["energy"]}
    p125 = next(e for e in tool_rows if e["name"] == "PL power (Vivado, toggle 12.5%)")
    assert p125["value"] == 0.81 and p125["unit"] == "W"
    assert any(e["basis"] == "streaming" for e in tool_rows) and any(e["basis"] == "single-shot" for e in tool_rows)
    assert any("timing not met (routed design)" in w for w in doc["warnings"])
    md = Report.from_json(doc).to_markdown()
    assert "tool-report" in md
