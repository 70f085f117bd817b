"""A non-editable install must carry the boards, flows and schema (they are read at run time)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_wheel_ships_boards_flows_and_schema(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("hwkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for board in ("zcu104", "zcu102", "pynq-z1", "pynq-z2", "ultra96-v2", "kv260", "u250", "cpu"):
        assert f"hwkit/boards/{board}.toml" in names
    assert "hwkit/flows/finn-estimate.toml" in names
    for family in ("zynq-7000", "zynq-ultrascale+", "alveo-ultrascale+"):
        assert f"hwkit/boards/families/{family}.toml" in names
    for extra in ("boards/gpu.toml", "flows/ort-cpu.toml", "flows/ort-gpu.toml", "energy/cpu.py"):
        assert f"hwkit/{extra}" in names
    assert "hwkit/schemas/report-1.schema.json" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hwkit = hwkit.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_every_hwkit_package_is_listed():
    """A subpackage missing from pyproject's list would be absent from a non-editable install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hwkit").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
