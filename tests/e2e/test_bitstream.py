"""The --bitstream path without Vivado: refused before any work; the flow, its finn-plus config, the
Vivado-failure message, design-hash and the baseline checker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, ROOT

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "XILINX_VIVADO"}
    return subprocess.run([sys.executable, "-m", "hwkit.cli", *args], capture_output=True, text=True,
                          env={**e, **(env or {})}, cwd=ROOT, timeout=300)


def test_bitstream_refused_without_vivado(tmp_path):
    out = tmp_path / "b"
    proc = run("compile", str(EXAMPLE), "--target", "zcu104", "--bitstream", "--out", str(out))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 5 and len(lines) == 1 and lines[0].startswith("hwkit: error: ")
    assert "XILINX_VIVADO" in lines[0] and "hwkit doctor" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists() and proc.stdout == ""
    broken = run("compile", str(EXAMPLE), "--target", "zcu104", "--bitstream", "--out", str(out),
                 env={"XILINX_VIVADO": str(tmp_path / "no-vivado")})
    assert broken.returncode == 5 and "has no bin/vivado" in broken.stderr and not out.exists()
    both = run("compile", str(EXAMPLE), "--target", "zcu104", "--bitstream", "--flow", "finn-estimate")
    assert both.returncode == 2 and "--bitstream" in both.stderr


def test_bitstream_flow_and_its_finn_config(tmp_path):
    from hwkit.backends.finn.passes import VIVADO_STEPS, dataflow_config
    from hwkit.board import load_board
    from hwkit.config import CompileSettings, Context
    from hwkit.errors import FlowError
    from hwkit.flow import load_flow

    flow = load_flow("finn-bitstream")
    assert flow.requires == ("vivado",)
    names = [s.spec.name for s in flow.steps]
    estimate = [s.spec.name for s in load_flow("finn-estimate").steps]
    assert names[: len(estimate)] == estimate
    assert names[len(estimate):] == ["finn.hw_ipgen", "finn.set_fifo_depths", "finn.create_stitched_ip",
                                     "finn.out_of_context_synthesis", "finn.vivado_power_estimation",
                                     "finn.prepare_synthesis", "finn.synthesize_bitfile", "finn.make_driver",
                                     "finn.deployment_package"]
    assert {f"step_{n.removeprefix('finn.')}" for n in names[len(estimate):-2]} <= VIVADO_STEPS
    step = flow.steps[flow.find("synthesize_bitfile")]
    assert "bitfile" in step.params["generate_outputs"] and "label" not in step.params
    board = load_board("zcu104")
    ctx = Context(board, CompileSettings(clock_ns=5.0), tmp_path, tmp_path, step.params)
    cfg = dataflow_config(ctx)
    assert {o.value for o in cfg.generate_outputs} == {"estimate_reports", "stitched_ip", "out_of_context_synth",
                                                      "bitfile", "pynq_driver", "deployment_package"}
    assert cfg.board == "ZCU104" and cfg.vivado_power_simulate_activity is False and not cfg.enable_build_pdb_debug
    verify = flow.steps[flow.find("finn-hw")]
    assert "generate_outputs" not in verify.params  # pass_params."finn." reaches only finn.<step> passes
    default = dataflow_config(Context(board, CompileSettings(clock_ns=5.0), tmp_path, tmp_path, {}))
    assert [o.value for o in default.generate_outputs] == ["estimate_reports"]
    with pytest.raises(FlowError, match="no field"):
        dataflow_config(Context(board, CompileSettings(clock_ns=5.0), tmp_path, tmp_path, {"bogus": 1}))
    with pytest.raises(FlowError, match="unknown output"):
        dataflow_config(Context(board, CompileSettings(clock_ns=5.0), tmp_path, tmp_path,
                                {"generate_outputs": ["bitstream"]}))


def test_vivado_step_refuses_and_failure_shows_the_log_tail(tmp_path):
    from hwkit.artifact import Artifact
    from hwkit.backends.finn.passes import VivadoRequired, _make_step_pass, vivado_failure
    from hwkit.board import load_board
    from hwkit.config import CompileSettings, Context

    env = os.environ.pop("XILINX_VIVADO", None)
    try:
        ctx = Context(load_board("zcu104"), CompileSettings(clock_ns=5.0), tmp_path, tmp_path / "16-finn.hw_ipgen")
        with pytest.raises(VivadoRequired, match="step_hw_ipgen needs AMD Vivado"):
            _make_step_pass("step_hw_ipgen")(Artifact(stage="finn", path=tmp_path / "m.onnx"), ctx)
    finally:
        if env is not None:
            os.environ["XILINX_VIVADO"] = env
    work = tmp_path / "passes" / "18-finn.create_stitched_ip"
    log = work / "finn_build" / "vivado_stitch_proj_1" / "vivado.log"
    log.parent.mkdir(parents=True)
    log.write_text("\n".join(f"INFO: line {i}" for i in range(40)) + "\nERROR: [Synth 8-439] module 'x' not found\n")
    (work / "pass.log").write_text("python noise\n")
    err = vivado_failure("step_create_stitched_ip", RuntimeError("Vivado returned 1"), work, tmp_path, work.name)
    lines = str(err).splitlines()
    assert "step_create_stitched_ip failed: RuntimeError: Vivado returned 1" in lines[0]
    assert "--from 18-finn.create_stitched_ip" in lines[0] and str(log) in lines[0]
    assert len(lines) == 21 and lines[-1].strip() == "ERROR: [Synth 8-439] module 'x' not found"


def test_design_hash(tmp_path):
    a = run("design-hash", str(EXAMPLE), "--target", "zcu104", "--vivado-version", "2024.2")
    assert a.returncode == 0, a.stderr
    h = a.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert run("design-hash", str(EXAMPLE), "--target", "zcu104", "--vivado-version", "2024.2").stdout.strip() == h
    others = {run("design-hash", str(EXAMPLE), "--target", "zcu104", "--vivado-version", "2022.2").stdout.strip(),
              run("design-hash", str(EXAMPLE), "--target", "zcu104", "--vivado-version", "2024.2",
                  "--clock-ns", "4").stdout.strip(),
              run("design-hash", str(EXAMPLE), "--target", "pynq-z2", "--vivado-version", "2024.2").stdout.strip()}
    assert h not in others and len(others) == 3
    missing = run("design-hash", str(tmp_path / "nope.pt"), "--target", "zcu104")
    assert missing.returncode == 2 and "not found" in missing.stderr


def _doc(lut: float, fmax: float, power: float) -> dict:
    q = {"unit": "count", "source": "tool-report"}
    return {"schema": "hwkit-report", "target": {"board": "zcu104"}, "passes": [], "fits": True,
            "resources": {"LUT": {"used": {"value": lut, **q}, "utilisation_pct": {"value": None, **q}}},
            "performance": {"vivado_fmax_mhz": {"value": fmax, "unit": "MHz", "source": "tool-report"},
                            "vivado_wns_ns": {"value": 0.2, "unit": "ns", "source": "tool-report"}},
            "energy": [{"name": "PL power (Vivado, toggle 12.5%)", "unit": "W", "value": power,
                        "source": "tool-report"}]}


def test_baseline_tolerances(tmp_path):
    from hwkit.report.baseline import Tolerance, check, failed

    base = _doc(1000, 250.0, 0.80)
    ok = check(base, _doc(1030, 245.0, 0.85))  # +3 % LUT, -2 % fmax, +6 % power: all within tolerance
    assert {v.metric: v.status for v in ok} == {"resources.LUT.used": "ok", "performance.vivado_fmax_mhz": "ok",
                                                "performance.vivado_wns_ns": "ok",
                                                "energy.PL power (Vivado, toggle 12.5%)": "ok"}
    worse = {v.metric: v.status for v in check(base, _doc(1100, 230.0, 0.95))}
    assert worse["resources.LUT.used"] == "regressed" and worse["performance.vivado_fmax_mhz"] == "regressed"
    assert worse["energy.PL power (Vivado, toggle 12.5%)"] == "regressed"
    better = check(base, _doc(800, 300.0, 0.80))
    assert {v.status for v in better} == {"ok", "improved"} and not failed(better) and failed(better, strict=True)
    tight = check(base, _doc(1030, 250.0, 0.80), (Tolerance("resources.*.used", rel_pct=1.0),))
    assert [v.status for v in tight] == ["regressed"]
    gone = _doc(1000, 250.0, 0.80)
    gone["performance"].pop("vivado_fmax_mhz")
    assert [v.metric for v in failed(check(base, gone))] == ["performance.vivado_fmax_mhz"]
    # the script: exit 0 / 1, JSON output
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(_doc(1100, 250.0, 0.80)))
    script = [sys.executable, str(ROOT / "scripts" / "compare_baseline.py")]
    same = subprocess.run([*script, str(tmp_path / "a.json"), str(tmp_path / "a.json")], capture_output=True,
                          text=True, cwd=ROOT)
    assert same.returncode == 0 and "within tolerance" in same.stdout
    reg = subprocess.run([*script, str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json"],
                         capture_output=True, text=True, cwd=ROOT)
    assert reg.returncode == 1 and json.loads(reg.stdout)["ok"] is False
    bad = subprocess.run([*script, str(tmp_path / "a.json"), str(Path(tmp_path / "none"))], capture_output=True,
                         text=True, cwd=ROOT)
    assert bad.returncode == 2 and "error" in bad.stderr
