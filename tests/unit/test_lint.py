"""The code base stays ruff- and mypy-clean (the rules are in pyproject.toml), with both linters pinned."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    proc = subprocess.run([ruff, "check", "hwkit", "tests", "benchmarks", "examples"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.slow  # a full mypy run (no cache, see [tool.mypy]) takes minutes on 2 cores
def test_mypy_clean():
    """mypy over hwkit with the settings in pyproject.toml ([tool.mypy]): 0 errors."""
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "Success: no issues found" in proc.stdout


def test_linters_pinned_exactly():
    """ruff and mypy are pinned to one version in requirements-dev.txt and the dev extra (rules change)."""
    import tomllib

    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    reqs = (ROOT / "requirements-dev.txt").read_text().split()
    for tool in ("ruff", "mypy"):
        pins = [r for r in (*dev, *reqs) if r.split("=")[0].split(">")[0] == tool]
        assert len(pins) == 2 and all(p.startswith(f"{tool}==") for p in pins), pins
