"""The hwmon rail meter against a fake sysfs tree whose values a writer thread changes."""

from __future__ import annotations

import time

import pytest

from hwkit.energy.rails import RailMeter


def _rail(root, n, name, **files):
    d = root / f"hwmon{n}"
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    for k, v in files.items():
        (d / k).write_text(f"{v}\n")
    return d


def test_finds_ina_rails_and_reads_both_abi_forms(tmp_path):
    _rail(tmp_path, 0, "ina226", power1_input=1_500_000, label="vccint")
    _rail(tmp_path, 1, "ina226", curr1_input=500, in2_input=3300)   # 0.5 A at 3.3 V
    _rail(tmp_path, 2, "k10temp", temp1_input=40000)                  # not a power monitor
    meter = RailMeter(tmp_path)
    assert [r.name for r in meter.rails] == ["ina226:vccint", "ina226:hwmon1"]
    assert meter.total_w() == pytest.approx(1.5 + 1.65)


def test_energy_integrates_a_changing_power(tmp_path):
    rail = _rail(tmp_path, 0, "ina226", power1_input=2_000_000)
    meter = RailMeter(tmp_path, period_s=0.002)

    def work():
        time.sleep(0.2)
        (rail / "power1_input").write_text("4000000\n")  # 2 W for 0.2 s, then 4 W for 0.2 s
        time.sleep(0.2)

    s = meter.measure(work)
    assert s.samples > 50
    assert s.mean_power_w == pytest.approx(3.0, abs=0.25)
    assert s.energy_j == pytest.approx(1.2, abs=0.1)


def test_no_rails(tmp_path):
    meter = RailMeter(tmp_path)
    assert not meter.available
    with pytest.raises(RuntimeError, match="no readable power rails"):
        meter.measure(seconds=0.01)


def test_a_rail_read_mid_update_skips_that_sample(tmp_path):
    """A rail file read while it is rewritten (empty) once killed the sampler thread after it had stored the time
    but not the power, and the energy sum then failed with an IndexError (seen in a full-suite run under load)."""
    rail = _rail(tmp_path, 0, "ina226", power1_input=2_000_000)
    meter = RailMeter(tmp_path, period_s=0.002)

    def work():
        time.sleep(0.02)
        (rail / "power1_input").write_text("")  # what a reader sees between truncate and write
        time.sleep(0.05)
        (rail / "power1_input").write_text("2000000\n")
        time.sleep(0.1)

    s = meter.measure(work)
    assert s.samples > 20
    assert s.mean_power_w == pytest.approx(2.0, abs=0.05)
