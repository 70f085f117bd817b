from __future__ import annotations

from pathlib import Path

import pytest

from hwkit.board import all_boards, load_board
from hwkit.energy.fpga import energy_entries, estimate_power, load_family
from hwkit.errors import BoardError

CQMLP = {"LUT": 3999, "FF": 4524, "BRAM_18K": 8, "URAM": 0, "DSP": 0}


def test_every_fpga_board_has_power_data():
    for b in all_boards():
        if b.kind == "fpga":
            est = estimate_power({"LUT": 1000}, 1000.0 / b.clock_ns, b)
            for _, _, p in est.tiers():
                assert 0 < p.low <= p.value <= p.high


def test_dynamic_power_scales_with_clock_toggle_and_resources():
    b = load_board("zcu104")
    base = estimate_power(CQMLP, 200, b).pl_dynamic_w.value
    fam = load_family("zynq-ultrascale+")
    clock_tree = fam.clock_tree_mw.value * 1e-3
    assert estimate_power(CQMLP, 400, b).pl_dynamic_w.value - clock_tree == pytest.approx(2 * (base - clock_tree))
    assert estimate_power(CQMLP, 200, b, toggle_rate=0.25).pl_dynamic_w.value - clock_tree == \
        pytest.approx(2 * (base - clock_tree))
    bigger = estimate_power({**CQMLP, "DSP": 100}, 200, b).pl_dynamic_w.value
    assert bigger - base == pytest.approx(100 * fam.uw_per_mhz["DSP"].value * 200 * 1e-6)


def test_missing_ff_is_estimated_from_lut():
    b = load_board("zcu104")
    est = estimate_power({k: v for k, v in CQMLP.items() if k != "FF"}, 200, b)
    assert est.ff_estimated
    assert not estimate_power(CQMLP, 200, b).ff_estimated
    assert est.pl_dynamic_w.low < est.pl_dynamic_w.value < est.pl_dynamic_w.high


def test_energy_single_shot_and_streaming():
    b = load_board("zcu104")
    est = estimate_power(CQMLP, 200, b)
    rows = {r["name"]: r for r in energy_entries(est, latency_ms=0.1, throughput_fps=10_000)}
    p = rows["PL+PS power"]["value"]
    assert rows["PL+PS energy, single-shot"]["value"] == pytest.approx(p * 0.1)      # W x ms = mJ
    assert rows["PL+PS energy, streaming"]["value"] == pytest.approx(p / 10_000 * 1e3)
    assert {r["source"] for r in rows.values()} == {"analytical-estimate"}
    assert "board power" in rows and rows["board power"]["value"] > 13  # zcu104 has a measured idle power


def test_boards_without_a_processor_have_no_ps_tier():
    names = [n for n, _, _ in estimate_power(CQMLP, 200, load_board("u250")).tiers()]
    assert names == ["PL"]


def test_bad_power_tables(tmp_path):
    src = load_board("zcu104").source
    text = Path(src).read_text()
    p = tmp_path / "b.toml"
    p.write_text(text.replace("static_w = [0.6, 0.694, 1.5]", "static_w = [1.0, 0.5, 2.0]"))
    with pytest.raises(BoardError, match="static_w"):
        estimate_power(CQMLP, 200, load_board(str(p)))
    p.write_text(text.split("[power]")[0])
    with pytest.raises(BoardError, match=r"\[power\]"):
        estimate_power(CQMLP, 200, load_board(str(p)))


def _bench(name: str):
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


def test_stored_ultrascale_coefficients_are_the_fit_of_the_published_points():
    # the least-squares scale of the stored coefficients against the [fit] points is 1: the TOML holds the fit
    fit = _bench("fpga_power_fit").fit_family("zynq-ultrascale+")
    assert fit["fit_points"] and fit["k"] == pytest.approx(1.0, abs=0.01)
    assert fit["k_low"] < 1.0 < fit["k_high"]
    for res, triple in fit["coefficients"].items():
        stored = load_family("zynq-ultrascale+").uw_per_mhz[res]
        assert triple == pytest.approx([stored.low, stored.value, stored.high], rel=0.01)


def test_every_published_point_lies_in_the_model_range():
    for row in _bench("fpga_power").part1():
        assert row["published_inside_range"], row["design"]
