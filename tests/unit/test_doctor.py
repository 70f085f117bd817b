"""hwkit doctor against fake Vivado trees and stub `vivado -version` scripts (no real Vivado here)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hwkit.board import load_board
from hwkit.doctor import Probe, find_vivado, require_tools, run_checks
from hwkit.errors import ToolError
from tests.conftest import ROOT


def _stub(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{text}'\n")
    path.chmod(0o755)


def fake_xilinx(root: Path, version: str = "2024.2", unified: bool = False, said: str | None = None,
                board_files: bool = True, part_dir: str = "zynquplus") -> Path:
    """A Xilinx install tree with stub executables; returns the Vivado directory."""
    vivado = root / version / "Vivado" if unified else root / "Vivado" / version
    _stub(vivado / "bin" / "vivado", f"vivado v{said or version} (64-bit)\nSW Build 5239630 on Fri Nov 08 2024")
    (vivado / "settings64.sh").write_text(f"export XILINX_VIVADO={vivado}\nexport PATH={vivado}/bin:$PATH\n")
    if unified:
        _stub(root / version / "Vitis" / "bin" / "vitis-run", "vitis-run")
    else:
        _stub(root / "Vitis_HLS" / version / "bin" / "vitis_hls", "vitis_hls")
    if board_files:
        bf = vivado / "data" / "boards" / "board_files" / "zcu104" / "1.1"
        bf.mkdir(parents=True)
        (bf / "board.xml").write_text("<board name='zcu104'/>")
    (vivado / "data" / "parts" / "xilinx" / part_dir).mkdir(parents=True)
    return vivado


@pytest.fixture
def libs(tmp_path) -> list[str]:
    d = tmp_path / "lib"
    d.mkdir()
    for so in ("libtinfo.so.5", "libncurses.so.5", "libudev.so.1"):
        (d / so).write_text("")
    return [str(d)]


def probe(env: dict[str, str], libs: list[str], ram: float = 64.0) -> Probe:
    return Probe(env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env}, lib_dirs=libs, ram_gib=ram)


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_classic_layout_all_ok(tmp_path, libs):
    viv = fake_xilinx(tmp_path / "Xilinx")
    checks = run_checks(load_board("zcu104"), probe({"XILINX_VIVADO": str(viv)}, libs), build_dir=tmp_path)
    bad = [c for c in checks if c.status not in ("ok", "skip")]
    assert not bad, bad
    c = by_name(checks)
    assert c["vivado version"].detail == "2024.2"
    assert c["install layout"].detail.startswith("classic")
    assert c["hls tool"].detail.endswith("Vitis_HLS/2024.2/bin/vitis_hls")
    assert "WebPACK" in c["license"].detail and "zcu104" in c["board files"].detail


def test_unified_layout_2025_uses_vitis_run(tmp_path, libs):
    viv = fake_xilinx(tmp_path / "Xilinx", "2025.1", unified=True)
    c = by_name(run_checks(load_board("zcu104"), probe({"XILINX_VIVADO": str(viv)}, libs), build_dir=tmp_path))
    assert c["install layout"].status == "ok" and c["install layout"].detail.startswith("unified")
    assert c["hls tool"].detail.endswith("2025.1/Vitis/bin/vitis-run")
    assert c["vivado version"].status == "warn"  # not a version finn-plus 1.6.1 is tested with
    assert c["libtinfo.so.5"].status == "ok"


def test_found_by_path_but_not_sourced(tmp_path, libs):
    root = tmp_path / "Xilinx"
    viv = fake_xilinx(root)
    checks = run_checks(load_board("zcu104"), probe({}, libs), xilinx_path=str(root), build_dir=tmp_path)
    env = by_name(checks)["vivado environment"]
    assert env.status == "fail" and env.fix == f"source {viv}/settings64.sh"
    # and through PATH alone (vivado on PATH, settings not sourced)
    inst = find_vivado(probe({"PATH": f"{viv}/bin:/usr/bin"}, libs))
    assert inst is not None and inst.vivado_dir == viv and not inst.from_env


def test_missing_vivado_and_version_mismatch(tmp_path, libs):
    c = by_name(run_checks(load_board("zcu104"), probe({}, libs), build_dir=tmp_path))
    assert c["vivado"].status == "fail" and "settings64.sh" in c["vivado"].fix
    viv = fake_xilinx(tmp_path / "X", "2024.2", said="2023.1")
    c = by_name(run_checks(load_board("zcu104"), probe({"XILINX_VIVADO": str(viv)}, libs), build_dir=tmp_path))
    assert c["vivado version"].status == "fail" and "2023.1" in c["vivado version"].detail


def test_unversioned_path_fails_because_finn_plus_reads_the_path(tmp_path, libs):
    viv = tmp_path / "vivado-current"
    _stub(viv / "bin" / "vivado", "vivado v2024.2 (64-bit)")
    c = by_name(run_checks(load_board("zcu104"), probe({"XILINX_VIVADO": str(viv)}, libs), build_dir=tmp_path))
    assert c["vivado version"].status == "fail" and "XILINX_VIVADO" in c["vivado version"].detail
    assert c["install layout"].status == "warn"


def test_license_for_a_paid_part(tmp_path, libs):
    viv = fake_xilinx(tmp_path / "Xilinx")
    zcu102 = load_board("zcu102")
    assert zcu102.webpack is False
    base = {"XILINX_VIVADO": str(viv)}
    lic = by_name(run_checks(zcu102, probe(base, libs), build_dir=tmp_path))["license"]
    assert lic.status == "fail" and "XILINXD_LICENSE_FILE" in lic.fix
    f = tmp_path / "Xilinx.lic"
    f.write_text("INCREMENT ...")
    ok = by_name(run_checks(zcu102, probe({**base, "XILINXD_LICENSE_FILE": str(f)}, libs), build_dir=tmp_path))
    assert ok["license"].status == "ok"
    missing = probe({**base, "LM_LICENSE_FILE": str(tmp_path / "nope.lic")}, libs)
    assert by_name(run_checks(zcu102, missing, build_dir=tmp_path))["license"].status == "fail"
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        served = probe({**base, "XILINXD_LICENSE_FILE": f"{port}@127.0.0.1"}, libs)
        assert by_name(run_checks(zcu102, served, build_dir=tmp_path))["license"].status == "ok"
    down = probe({**base, "XILINXD_LICENSE_FILE": f"{port}@127.0.0.1"}, libs)
    lic = by_name(run_checks(zcu102, down, build_dir=tmp_path))["license"]
    assert lic.status == "fail" and "not reachable" in lic.detail


def test_board_files_ram_and_libs(tmp_path, libs):
    viv = fake_xilinx(tmp_path / "Xilinx", board_files=False, part_dir="zynq")
    c = by_name(run_checks(load_board("zcu104"), probe({"XILINX_VIVADO": str(viv)}, libs, ram=15.6),
                           build_dir=tmp_path))
    assert c["board files"].status == "fail" and "zcu104" in c["board files"].fix
    assert c["ram"].status == "fail" and "32" in c["ram"].fix  # min_ram_gib of boards/zcu104.toml
    assert c["part installed"].status == "warn"
    deps = tmp_path / "finn_deps" / "board_files" / "zcu104" / "1.1"
    deps.mkdir(parents=True)
    (deps / "board.xml").write_text("<board/>")
    no_libs = probe({"XILINX_VIVADO": str(viv), "FINN_DEPS": str(tmp_path / "finn_deps")}, [str(tmp_path / "empty")])
    c = by_name(run_checks(load_board("zcu104"), no_libs, build_dir=tmp_path))
    assert c["board files"].status == "ok"
    assert c["libtinfo.so.5"].status == "fail" and c["libtinfo.so.5"].fix.startswith("apt-get install libtinfo5")
    assert c["libudev.so.1"].status == "warn"


def test_require_tools():
    with pytest.raises(ToolError, match="XILINX_VIVADO is not set"):
        require_tools(("vivado",), "finn-bitstream", {})
    with pytest.raises(ToolError, match="has no bin/vivado"):
        require_tools(("vivado",), "finn-bitstream", {"XILINX_VIVADO": "/nonexistent"})
    require_tools((), "finn-estimate", {})


def test_doctor_cli_json_and_exit_code(tmp_path):
    viv = fake_xilinx(tmp_path / "Xilinx")
    env = {**os.environ, "XILINX_VIVADO": str(viv), "PATH": f"{viv}/bin:{os.environ['PATH']}"}
    env.pop("XILINXD_LICENSE_FILE", None)
    env.pop("LM_LICENSE_FILE", None)
    proc = subprocess.run([sys.executable, "-m", "hwkit.cli", "doctor", "--target", "zcu102", "--json",
                           "--out", str(tmp_path)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    data = json.loads(proc.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["vivado version"]["detail"] == "2024.2" and checks["license"]["status"] == "fail"
    assert proc.returncode == 1 and data["ok"] is False
    table = subprocess.run([sys.executable, "-m", "hwkit.cli", "doctor", "--target", "zcu102", "--out",
                            str(tmp_path)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert table.returncode == 1 and "fix license: set XILINXD_LICENSE_FILE" in table.stdout
    assert "Traceback" not in table.stderr
