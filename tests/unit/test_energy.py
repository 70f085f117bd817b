"""Energy meters against a fake powercap tree, and the documented estimate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hwkit.backends.ort import energy_meter
from hwkit.board import load_board, parse_board
from hwkit.energy.cpu import RaplMeter, UtilisationEstimate, rapl_zones
from hwkit.energy.gpu import BoardPowerEstimate, NvmlMeter
from hwkit.errors import BoardError


def _zone(root: Path, name: str, uj: int, rng: int = 2**32, label: str = "package-0") -> Path:
    z = root / name
    z.mkdir(parents=True)
    (z / "energy_uj").write_text(f"{uj}\n")
    (z / "max_energy_range_uj").write_text(f"{rng}\n")
    (z / "name").write_text(label + "\n")
    return z


def test_rapl_sums_package_zones_and_handles_wrap(tmp_path):
    a = _zone(tmp_path, "intel-rapl:0", 1_000_000)
    b = _zone(tmp_path, "intel-rapl:1", 2**32 - 500_000, rng=2**32, label="package-1")
    _zone(tmp_path, "intel-rapl:0:0", 5, label="core")  # a sub-zone: part of package 0, not added again
    (tmp_path / "intel-rapl:2").mkdir()  # no counter file (unreadable): ignored
    meter = RaplMeter(tmp_path)
    assert meter.available and [z.name for z in meter.zones] == ["intel-rapl:0", "intel-rapl:1"]

    def work():
        (a / "energy_uj").write_text("3500000\n")  # +2.5 J
        (b / "energy_uj").write_text("1500000\n")  # wrapped: +0.5 J + 1.5 J = 2.0 J

    r = meter.measure(work)
    assert r.source == "measured" and r.energy_j == pytest.approx(4.5)
    assert "intel-rapl:0 (package-0)" in r.method


def test_no_rapl_tree_means_no_meter(tmp_path):
    assert rapl_zones(tmp_path / "missing") == []
    assert not RaplMeter(tmp_path).available


def test_utilisation_estimate_is_labelled_and_bounded():
    est = UtilisationEstimate(100.0, cores=2)
    burnt = {}

    def spin():
        # burn 50 ms of this process's CPU time, however long a loaded machine makes that take in wall time
        c0, t0 = time.process_time(), time.perf_counter()
        while time.process_time() - c0 < 0.05:
            pass
        burnt["cpu"], burnt["wall"] = time.process_time() - c0, time.perf_counter() - t0

    r = est.measure(spin)
    assert r.source == "analytical-estimate" and "tdp_w 100" in r.method
    # energy = TDP x process CPU / cores: at least the spin's own CPU time, never more than TDP x wall
    assert r.energy_j >= 100.0 * burnt["cpu"] / 2 * 0.99
    assert r.energy_j <= 100.0 * r.wall_s + 1e-9 and r.wall_s >= burnt["wall"]
    # an idle wait costs (almost) nothing: utilisation comes from CPU time, not wall time
    idle = est.measure(lambda: time.sleep(0.05))
    assert idle.energy_j < 0.2 * 100.0 * idle.wall_s


def test_gpu_estimate_and_nvml_absent():
    r = BoardPowerEstimate(250.0).measure(lambda: time.sleep(0.01))
    assert r.source == "analytical-estimate" and r.energy_j == pytest.approx(250.0 * r.wall_s)
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert not NvmlMeter().available


def test_board_chooses_meter_from_data(tmp_path):
    _zone(tmp_path, "intel-rapl:0", 10)
    base = {"kind": "cpu", "description": "x", "default_flow": "ort-cpu",
            "onnxruntime": {"execution_providers": ["CPUExecutionProvider"]}}
    b = parse_board({**base, "power": {"meter": "rapl", "tdp_w": 35.0, "powercap_root": str(tmp_path)}}, "m", "m.toml")
    assert isinstance(energy_meter(b), RaplMeter)
    b = parse_board({**base, "power": {"meter": "rapl", "tdp_w": 35.0, "powercap_root": str(tmp_path / "no")}},
                    "m", "m.toml")
    assert isinstance(energy_meter(b), UtilisationEstimate)
    assert energy_meter(parse_board(base, "m", "m.toml")) is None
    with pytest.raises(BoardError, match="m.toml.*meter"):
        energy_meter(parse_board({**base, "power": {"meter": "joulemeter"}}, "m", "m.toml"))
    cpu = load_board("cpu")
    assert cpu.power is not None and cpu.power.meter == "rapl" and cpu.power.tdp_w and cpu.power.tdp_w > 0
    gpu = load_board("gpu")
    assert gpu.onnxruntime is not None and gpu.onnxruntime.execution_providers[-1] == "CPUExecutionProvider"
