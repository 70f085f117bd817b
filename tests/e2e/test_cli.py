"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from hwkit.report import report_schema
from tests.conftest import EXAMPLE, ROOT

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains


def hwkit(*args: str, home: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "hwkit.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=600)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The error is one line, the last on stderr (after any progress lines), with no traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("hwkit: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.returncode != 0
    return errors[0]


def test_compile_example_json_and_no_home_pollution(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "b"
    proc = hwkit("compile", str(EXAMPLE), "--target", "zcu104", "--out", str(out), "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # nothing but the report on stdout
    jsonschema.validate(data, report_schema())
    assert data == json.loads((out / "report.json").read_text())
    assert data["model"]["checkpoint_meta"]["test_accuracy"] > 0.9
    assert data["fits"] is True and all(v["ok"] for v in data["verification"])
    assert not (home / ".finn").exists()  # finn-plus settings stay in the build directory

    again = hwkit("compile", str(EXAMPLE), "--target", "zcu104", "--out", str(out), "--quiet", home=home)
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
    assert all(p["cached"] for p in json.loads((out / "report.json").read_text())["passes"])

    shown = hwkit("report", str(out))
    assert shown.returncode == 0 and "Resources vs part" in shown.stdout and "PL+PS power" in shown.stdout


def test_progress_and_tables_on_the_console(tmp_path):
    proc = hwkit("compile", str(EXAMPLE), "--target", "pynq-z2", "--out", str(tmp_path / "p"), "--to", "4")
    assert proc.returncode == 0, proc.stderr
    assert "04-finn.streamline" in proc.stderr and "4/4" in proc.stderr
    assert "Performance" in proc.stdout


def test_boards_and_flows_listing():
    proc = hwkit("boards", "--json")
    assert proc.returncode == 0
    names = {b["name"] for b in json.loads(proc.stdout)}
    assert {"zcu104", "kv260", "u250", "cpu"} <= names
    flows = json.loads(hwkit("flows", "--json").stdout)
    assert any(f["name"] == "finn-estimate" for f in flows)


def test_unknown_target(tmp_path):
    proc = hwkit("compile", str(EXAMPLE), "--target", "zcu105", "--out", str(tmp_path / "x"))
    line = one_line_error(proc)
    assert proc.returncode == 2 and "zcu105" in line and "zcu104" in line
    assert not (tmp_path / "x").exists()


def test_missing_and_corrupt_model(tmp_path):
    proc = hwkit("compile", str(tmp_path / "nope.pt"), "--target", "zcu104", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "nope.pt" in one_line_error(proc) and "not found" in proc.stderr
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(EXAMPLE.read_bytes()[:4000])
    proc = hwkit("compile", str(bad), "--target", "zcu104", "--out", str(tmp_path / "y"))
    line = one_line_error(proc)
    assert proc.returncode == 2 and "corrupt.pt" in line and "not a readable PyTorch file" in line
    assert not (tmp_path / "y").exists()  # nothing half-written


def test_malformed_board_file(tmp_path):
    board = tmp_path / "myboard.toml"
    board.write_text('kind = "fpga"\ndescription = "x"\ndefault_flow = "finn-estimate"\nclock_ns = 5\n')
    proc = hwkit("compile", str(EXAMPLE), "--target", str(board), "--out", str(tmp_path / "x"))
    line = one_line_error(proc)
    assert proc.returncode == 2 and "myboard.toml" in line and "shell_flow" in line


def test_unsupported_layer_from_cli(tmp_path):
    import torch

    from tests.e2e.models import sigmoid_mlp

    path = tmp_path / "sig.pt"
    torch.save(sigmoid_mlp().state_dict(), path)
    proc = hwkit("compile", str(path), "--target", "zcu104", "--out", str(tmp_path / "o"),
                 "--arch", "tests.e2e.models:sigmoid_mlp", "--input-shape", "1,16", "--input-dtype", "UINT8")
    line = one_line_error(proc)
    assert proc.returncode == 3 and "QuantLinear" in line and "MatMul" in line


def test_bad_flag_values(tmp_path):
    proc = hwkit("compile", str(EXAMPLE), "--target", "zcu104", "--clock-ns", "-1")
    assert proc.returncode == 2 and "--clock-ns" in proc.stderr and "Traceback" not in proc.stderr
    proc = hwkit("compile", str(EXAMPLE), "--target", "cpu", "--flow", "ort-npu", "--out", str(tmp_path / "c"))
    line = one_line_error(proc)
    assert proc.returncode == 2 and "ort-npu" in line and "ort-cpu" in line  # names the known flows


def test_require_fit_exit_code(tmp_path):
    small = tmp_path / "small.toml"
    src = (ROOT / "boards" / "pynq-z1.toml").read_text()
    small.write_text(src.replace("LUT = 53200", "LUT = 50"))
    proc = hwkit("compile", str(EXAMPLE), "--target", str(small), "--out", str(tmp_path / "s"), "--require-fit")
    assert proc.returncode == 6
    assert "DOES NOT FIT" in proc.stdout
    assert json.loads((tmp_path / "s" / "report.json").read_text())["fits"] is False


@pytest.mark.parametrize("args", [["--help"], ["compile", "--help"], ["explore", "--help"]])
def test_help_does_not_import_toolchains(args):
    code = (f"import sys, runpy; sys.argv=['hwkit', *{args!r}]\n"
            "try:\n    runpy.run_module('hwkit.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'finn', 'onnxruntime', 'brevitas', 'optuna', 'sqlalchemy')"
            " if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "HEAVY []" in proc.stdout


def test_report_rerender_and_compare(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert hwkit("compile", str(EXAMPLE), "--target", "zcu104", "--out", str(a), "--quiet").returncode == 0
    assert hwkit("compile", str(EXAMPLE), "--target", "zcu104", "--out", str(b), "--quiet",
                 "--clock-ns", "10").returncode == 0
    for name in ("report.md", "report.html"):
        (a / name).unlink()
    proc = hwkit("report", str(a), "--quiet")
    assert proc.returncode == 0 and (a / "report.md").is_file() and (a / "report.html").is_file()
    assert "Power and energy" in (a / "report.md").read_text()

    proc = hwkit("compare", str(a), str(b), "--json")
    assert proc.returncode == 0
    rows = {r["metric"]: r for r in json.loads(proc.stdout)}
    thr = rows["performance.throughput_fps"]
    assert thr["b"] == pytest.approx(thr["a"] / 2) and thr["delta_pct"] == pytest.approx(-50.0)
    assert rows["target.clock_ns"]["delta"] == 5.0
    proc = hwkit("compare", str(a), str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no report.json" in one_line_error(proc)


def test_measure_power_into_a_build(tmp_path, tiny_build_copy):
    hw = tmp_path / "hwmon"
    for i, (name, uw) in enumerate([("ina226", 2_000_000), ("ina226", 1_000_000)]):
        d = hw / f"hwmon{i}"
        d.mkdir(parents=True)
        (d / "name").write_text(name)
        (d / "power1_input").write_text(str(uw))
    proc = hwkit("measure-power", "--hwmon", str(hw), "--seconds", "0.3", "--idle-seconds", "0.1",
                 "--inferences", "1000", "--into", str(tiny_build_copy), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["rows"]}
    assert rows["rails power"]["value"] == pytest.approx(3.0)
    assert rows["rails power over idle"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert rows["rails energy per inference"]["value"] == pytest.approx(3.0 * 0.3 / 1000 * 1e3, rel=0.1)
    doc = json.loads((tiny_build_copy / "report.json").read_text())
    jsonschema.validate(doc, report_schema())
    measured = [e for e in doc["energy"] if e["source"] == "measured"]
    assert len(measured) == 3 and any(e["source"] == "analytical-estimate" for e in doc["energy"])
    assert "rails power" in (tiny_build_copy / "report.html").read_text()

    proc = hwkit("measure-power", "--hwmon", str(tmp_path / "none"), "--seconds", "0.1")
    assert proc.returncode == 5 and "no readable INA2xx" in one_line_error(proc)
