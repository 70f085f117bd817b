"""Synapse-device models, differential-pair mapping, update rules, noise statistics, small training run."""

from __future__ import annotations

import math

import pytest
import torch

from hwkit.compress.synapse.device import (
    DeviceModel,
    DifferentialArray,
    UpdateRule,
    WriteVerify,
    a_from_nl_label,
    apply_pulses,
    device_names,
    load_device,
    load_device_file,
    ltd_curve,
    ltp_curve,
    quantise_pulses,
)
from hwkit.errors import BoardError

EXP = DeviceModel("exp", "exponential", 64, 32, a_from_nl_label(2.0), a_from_nl_label(4.0), 1e-5, 1e-6)
POW = DeviceModel("pow", "power", 64, 64, 3.0, 0.5, 1e-5, 1e-6)
LIN = DeviceModel("lin", "linear", 64, 64)


@pytest.mark.parametrize("dev", [EXP, POW, LIN], ids=["exponential", "power", "linear"])
def test_curves_monotone_bounded_and_saturating(dev):
    p = torch.arange(0, 2 * dev.levels_ltp + 1)
    g = ltp_curve(dev, p)
    assert g[0] == pytest.approx(0, abs=1e-12) and g[dev.levels_ltp] == pytest.approx(1, abs=1e-12)
    assert torch.all(torch.diff(g) >= -1e-12)
    assert torch.all(g[dev.levels_ltp:] == g[dev.levels_ltp])  # saturates at Gmax
    d = ltd_curve(dev, torch.arange(0, dev.levels_ltd + 1))
    assert d[0] == pytest.approx(1) and d[-1] == pytest.approx(0, abs=1e-12)
    assert torch.all(torch.diff(d) <= 1e-12)
    if dev.family != "linear":  # nonlinear LTP: big steps first, small steps near Gmax
        steps = torch.diff(g[: dev.levels_ltp + 1])
        assert steps[0] > 3 * steps[-1]


def test_linear_limit_of_both_families():
    p = torch.arange(0, 65)
    lin = p.double() / 64
    assert torch.allclose(ltp_curve(EXP.with_(nl_ltp=1e6), p), lin, atol=1e-5)
    assert torch.allclose(ltp_curve(POW.with_(nl_ltp=1.0), p), lin, atol=1e-12)
    assert a_from_nl_label(0.01) == pytest.approx(126.3) and a_from_nl_label(1.0) == pytest.approx(1.263)


def test_asymmetry_plus_n_minus_n_does_not_return():
    g0 = torch.full((1,), 0.5, dtype=torch.float64)
    n = torch.full((1,), 4.0, dtype=torch.float64)
    up = apply_pulses(EXP, g0, n, True)
    back = apply_pulses(EXP, up, n, False)
    assert up > g0 and abs(back.item() - 0.5) > 0.01  # asymmetric LTP/LTD: a net drift
    sym = DeviceModel("s", "exponential", 64, 64, 2.0, 2.0)
    back_lin = apply_pulses(LIN, apply_pulses(LIN, g0, n, True), n, False)
    assert back_lin.item() == pytest.approx(0.5)
    assert sym.levels_ltd == 64


def test_levels_linear_device_has_pmax_equal_steps():
    g = torch.zeros(1, dtype=torch.float64)
    seen = [0.0]
    for _ in range(70):
        g = apply_pulses(LIN, g, torch.ones(1, dtype=torch.float64), True)
        seen.append(round(g.item(), 9))
    assert len(set(seen)) == 65 and max(seen) == 1.0  # 64 steps of 1/64, then stuck at Gmax


def test_mapping_round_trip_exact_and_quantised():
    gen = torch.Generator().manual_seed(0)
    w = (torch.rand(20, 30, generator=gen) * 2 - 1) * 0.8
    arr = DifferentialArray(LIN, (20, 30), beta=0.8, generator=gen)
    arr.program(w, "exact")
    assert torch.allclose(arr.weights(), w.double(), atol=1e-12)
    assert torch.all((arr.g[0] == 0) | (arr.g[1] == 0))  # one device of each pair at Gmin
    arr.program(w, "open-loop")  # 64 levels: error <= half a level
    assert (arr.weights() - w.double()).abs().max() <= 0.8 / 64 / 2 + 1e-9


def test_quantisers_and_stochastic_rounding_is_unbiased():
    x = torch.tensor([0.2, 1.5, 2.7], dtype=torch.float64)
    assert quantise_pulses(x, "truncate").tolist() == [0, 1, 2]
    assert quantise_pulses(x, "round").tolist() == [0, 2, 3]
    assert quantise_pulses(x, "round", n_max=2).tolist() == [0, 2, 2]
    gen = torch.Generator().manual_seed(1)
    big = torch.full((200_000,), 0.3, dtype=torch.float64)
    mean = quantise_pulses(big, "stochastic", gen).mean().item()
    assert mean == pytest.approx(0.3, abs=0.005)
    with pytest.raises(ValueError, match="pulse quantiser"):
        UpdateRule(quantise="ceil")


def test_unidirectional_only_potentiates_and_refreshes_when_saturated():
    gen = torch.Generator().manual_seed(0)
    arr = DifferentialArray(EXP, (8, 8), beta=1.0, generator=gen)
    rule = UpdateRule("unidirectional", "round", refresh_threshold=0.95)
    dw = torch.randn(8, 8, generator=gen) * 0.05
    before = arr.g.clone()
    arr.update(dw, rule)
    assert torch.all(arr.g >= before)  # no depression, ever
    assert torch.all(arr.g[0][dw < 0] == before[0][dw < 0]) and torch.all(arr.g[1][dw > 0] == before[1][dw > 0])
    # Drive one pair to saturation with repeated +/- updates: a refresh resets it and keeps the weight.
    one = torch.zeros(8, 8)
    for _ in range(200):
        one[0, 0] = 0.05
        arr.update(one, rule)
        one[0, 0] = -0.04
        arr.update(one, rule)
    assert arr.refreshes > 0
    # A saturated pair is read, reset to Gmin and its weight re-written onto one device.
    arr.g[:, 1:, :] = 0.2
    arr.g[0, 1, 1], arr.g[1, 1, 1] = 0.97, 0.6
    w_before = arr.weights()[1, 1].item()
    assert arr.refresh(0.95) == 1
    assert arr.g[1, 1, 1] == 0 and 0 < arr.g[0, 1, 1] < 0.95
    assert arr.weights()[1, 1].item() == pytest.approx(w_before, abs=0.03)
    assert torch.all(arr.g[:, 2:, :] == 0.2)  # unsaturated pairs untouched


def test_bidirectional_moves_both_devices_oppositely():
    arr = DifferentialArray(LIN, (4,), beta=1.0)
    arr.program(torch.zeros(4), "exact")
    arr.g[:] = 0.5
    arr.update(torch.tensor([0.1, -0.1, 0.0, 0.2]), UpdateRule("bidirectional", "round"))
    w = arr.weights()
    assert torch.allclose(w, torch.tensor([0.1, -0.1, 0.0, 0.2], dtype=torch.float64), atol=1 / 64)
    assert arr.g[0, 0] > 0.5 and arr.g[1, 0] < 0.5 and arr.g[0, 1] < 0.5 and arr.g[1, 1] > 0.5


def test_adaptive_rule_corrects_nonlinearity():
    """Same desired change on a nearly saturated nonlinear device: the device-aware count gets much closer."""
    errs = {}
    for adaptive in (False, True):
        arr = DifferentialArray(EXP, (1000,), beta=1.0)
        arr.g[0] = 0.7
        arr.update(torch.full((1000,), 0.1), UpdateRule("unidirectional", "stochastic", adaptive=adaptive,
                                                        refresh_threshold=1.1))
        errs[adaptive] = abs(arr.weights().mean().item() - 0.8)
    assert errs[True] < 0.01 < errs[False]


def test_d2d_c2c_and_read_noise_statistics():
    gen = torch.Generator().manual_seed(0)
    dev = LIN.with_(d2d_levels=0.1, d2d_gmax=0.1, c2c=0.02, read_noise=0.05)
    arr = DifferentialArray(dev, (200, 200), beta=1.0, generator=gen)
    assert arr.pmax_ltp.std().item() / 64 == pytest.approx(0.1, rel=0.1)
    assert arr.scale.std().item() == pytest.approx(0.1 * 1e-5 / (1e-5 - 1e-6), rel=0.1)
    # c2c: 16 pulses from g = 0.25 on a linear device: mean +16/Pmax, sigma 0.02 * sqrt(16)
    g = torch.full((200_000,), 0.25, dtype=torch.float64)
    out = apply_pulses(LIN.with_(c2c=0.02), g, torch.full_like(g, 16.0), True, generator=gen)
    assert out.mean().item() == pytest.approx(0.5, abs=0.002)
    assert out.std().item() == pytest.approx(0.08, rel=0.03)
    # read noise: relative sigma of the absolute conductance
    arr2 = DifferentialArray(LIN.with_(read_noise=0.05), (500, 400), beta=1.0, generator=gen)
    arr2.g[:] = 0.5
    reads = arr2.conductance(read_noise=True)
    gabs = LIN.gmin_norm + 0.5
    assert (reads - 0.5).std().item() == pytest.approx(0.05 * gabs, rel=0.03)
    assert torch.equal(arr2.conductance(), torch.full_like(reads, 0.5))


def test_presets_load_and_every_number_has_a_source():
    names = device_names()
    assert {"ag-asi", "taox-hfox", "pcmo", "pcm-gst", "ideal-linear"} <= set(names)
    from hwkit.compress.synapse.device import devices_dir

    for n in names:
        dev, raw = load_device_file(devices_dir() / f"{n}.toml")
        numbers = [k for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)]
        missing = [k for k in numbers if not raw.get("sources", {}).get(k)]
        assert not missing, f"{n}: no source for {missing}"
        assert dev.gmax_s > dev.gmin_s
    ag = load_device("ag-asi")
    assert (ag.levels_ltp, ag.levels_ltd) == (97, 100) and ag.on_off_ratio == pytest.approx(12.5, rel=1e-3)


def test_bad_device_errors_name_the_field(tmp_path):
    with pytest.raises(BoardError, match="unknown device preset 'nope'"):
        load_device("nope")
    p = tmp_path / "bad.toml"
    p.write_text('family = "exponential"\nlevels_ltp = 0\n')
    with pytest.raises(BoardError, match=r"bad\.toml.*levels_ltp must be >= 1"):
        load_device(str(p))
    p.write_text('family = "linear"\ngmin_s = 2e-5\n')
    with pytest.raises(BoardError, match="gmin_s < gmax_s"):
        load_device(str(p))


def test_small_hardware_aware_training_learns_digits():
    from hwkit.compress.synapse.train import TrainConfig, build_mlp, digits_split, hardware_aware_train

    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits_split(0)
    torch.manual_seed(0)
    cfg = TrainConfig(rule=UpdateRule("unidirectional", "stochastic"), lr=0.1, epochs=2, batch_size=8)
    _, res = hardware_aware_train(build_mlp([64, 32, 10]), load_device("ag-asi"), xtr, ytr, xte, yte, cfg)
    assert res.final_test_accuracy > 0.6  # chance is 0.1
    assert res.pulses > 0 and res.samples_per_s > 0 and not math.isnan(res.final_test_accuracy)


def test_analog_deployment_degrades_with_noise_and_is_exact_when_ideal():
    from hwkit.compress.synapse.train import (
        CrossbarConfig,
        accuracy,
        build_mlp,
        digits_split,
        evaluate_instances,
        to_analog,
        train_float,
    )

    xtr, ytr, xte, yte = digits_split(0)
    torch.manual_seed(0)
    model = train_float(build_mlp([64, 16, 10]), xtr, ytr, epochs=3)
    ideal = to_analog(model, LIN, CrossbarConfig(16, 16, None, None), xte, program="exact", read_noise=False)
    with torch.no_grad():
        assert torch.allclose(ideal(xte), model(xte), atol=1e-5)  # 4 row tiles summed digitally
    sw = accuracy(model, xte, yte)
    clean = evaluate_instances(model, load_device("ideal-linear"), CrossbarConfig(), xte, yte, 2)
    noisy = evaluate_instances(model, LIN.with_(levels_ltp=8, c2c=0.05, read_noise=0.1, d2d_gmin=0.3),
                               CrossbarConfig(adc_bits=4, dac_bits=4), xte, yte, 3)
    assert abs(clean["mean"] - sw) < 0.01
    assert noisy["mean"] < clean["mean"] and noisy["std"] > 0 and len(noisy["accuracies"]) == 3


def test_centred_programming_for_bidirectional():
    arr = DifferentialArray(LIN, (3,), beta=1.0)
    arr.program(torch.tensor([0.5, -0.5, 0.0]), "exact", centred=True)
    assert torch.allclose(arr.g[0], torch.tensor([0.75, 0.25, 0.5], dtype=torch.float64))
    assert torch.allclose(arr.weights(), torch.tensor([0.5, -0.5, 0.0], dtype=torch.float64))


# ------------------------------------------------------------------------------------ write-verify

NOISY = DeviceModel("noisy", "exponential", 128, 128, a_from_nl_label(0.5), a_from_nl_label(1.0), 1e-5, 1e-6,
                    c2c=0.03, read_noise=0.01, d2d_levels=0.1, d2d_nl=0.1, d2d_gmax=0.05, d2d_gmin=0.05)


class _Recording(DifferentialArray):
    """Records the direction of every non-empty pulse batch."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches: list[tuple[int, bool, int]] = []

    def _pulse(self, idx, n, ltp):
        if int(n.sum()) > 0:
            self.batches.append((idx, ltp, int(n.sum())))
        super()._pulse(idx, n, ltp)


def _program(dev, w, mode, verify=None, seed=1):
    arr = _Recording(dev, tuple(w.shape), 1.0, torch.Generator().manual_seed(seed))
    stats = arr.program(w, mode, verify=verify)
    return arr, stats, (arr.weights() - w.double()).pow(2).mean().sqrt().item()


def test_write_verify_reduces_programming_error_and_counts_pulses():
    w = torch.rand(48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ol, s_ol, err_ol = _program(NOISY, w, "open-loop")
    wv, s_wv, err_wv = _program(NOISY, w, "write-verify", WriteVerify(tolerance=0.02, max_iterations=20))
    assert err_ol > 0.08  # c2c noise accumulated over the open-loop pulses
    assert err_wv < err_ol / 3
    # the same open-loop write first (same generator), then verify pulses on top, all counted
    assert s_wv["open_loop_pulses"] == s_ol["pulses"] == s_ol["open_loop_pulses"] > 0
    assert s_wv["pulses"] == s_wv["open_loop_pulses"] + s_wv["verify_pulses"] == wv.pulses
    assert s_wv["verify_pulses"] > 0 and s_ol["verify_pulses"] == 0
    assert s_wv["reads"] >= w.numel() and 1 <= s_wv["rounds"] <= 20
    assert s_wv["unconverged"] < 0.1 * w.numel()
    within = lambda a: ((a.weights() - w.double()).abs() <= 0.02).float().mean().item()  # noqa: E731
    assert within(wv) > 0.8 > within(ol)
    # both directions are used to correct (LTD takes excess off the over-programmed device)
    assert any(not ltp for _, ltp, _ in wv.batches) and all(ltp for _, ltp, _ in ol.batches)


def test_write_verify_zero_rounds_is_open_loop_and_ideal_device_needs_no_correction():
    w = torch.rand(16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    ol, _, _ = _program(NOISY, w, "open-loop")
    wv0, s0, _ = _program(NOISY, w, "write-verify", WriteVerify(max_iterations=0))
    assert torch.equal(ol.g, wv0.g) and s0["verify_pulses"] == 0 and s0["rounds"] == 0
    assert s0["unconverged"] > 0  # read back once: the open-loop error is reported, not corrected
    ideal = load_device("ideal-linear")
    _, s, err = _program(ideal, w, "write-verify")
    assert s["rounds"] == 0 and s["verify_pulses"] == 0 and s["unconverged"] == 0 and err < 1e-3


def test_write_verify_ltp_only_never_depresses_and_validates():
    w = torch.rand(32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    arr, s, err = _program(NOISY, w, "write-verify", WriteVerify(tolerance=0.03, depress=False))
    _, _, err_ol = _program(NOISY, w, "open-loop")
    assert all(ltp for _, ltp, _ in arr.batches) and s["verify_pulses"] > 0 and err < err_ol / 2
    with pytest.raises(ValueError, match="tolerance"):
        WriteVerify(tolerance=0)
    with pytest.raises(ValueError, match="max_iterations"):
        WriteVerify(max_iterations=-1)
    with pytest.raises(ValueError, match="programming mode"):
        DifferentialArray(LIN, (2,), 1.0).program(torch.zeros(2), "closed")
    with pytest.raises(ValueError, match="refresh_program"):
        UpdateRule(refresh_program="verify")


def test_closed_loop_refresh_keeps_the_weight_on_a_varied_device():
    """Refresh of saturated pairs: re-writing with write-verify keeps the read weight, open loop does not."""
    dev = EXP.with_(levels_ltp=64, levels_ltd=64, d2d_levels=0.3, d2d_nl=0.3, d2d_gmax=0.3, d2d_gmin=0.3)
    errs = {}
    for mode in ("open-loop", "write-verify"):
        gen = torch.Generator().manual_seed(4)
        arr = DifferentialArray(dev, (40, 40), beta=1.0, generator=gen)
        arr.g[0] = 0.95
        arr.g[1] = torch.rand(40, 40, generator=gen, dtype=torch.float64) * 0.9
        before = arr.weights()
        assert arr.refresh(0.9, mode, WriteVerify(tolerance=0.02, depress=False)) == 1600
        assert (arr.g[0] + arr.g[1]).mean() < 0.95  # reset and re-written from Gmin
        errs[mode] = (arr.weights() - before).abs().mean().item()
    assert errs["write-verify"] < errs["open-loop"] / 2


def test_deployment_with_write_verify_beats_open_loop():
    from hwkit.compress.synapse.train import CrossbarConfig, build_mlp, digits_split, evaluate_instances, train_float

    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits_split(0)
    torch.manual_seed(0)
    model = train_float(build_mlp([64, 16, 10]), xtr, ytr, epochs=3)
    dev, xbar = load_device("taox-hfox").with_(read_noise=0.01), CrossbarConfig()
    ol = evaluate_instances(model, dev, xbar, xte, yte, 2)
    wv = evaluate_instances(model, dev, xbar, xte, yte, 2, program="write-verify", verify=WriteVerify())
    assert ol["program"] == "open-loop" and wv["program"] == "write-verify"
    assert wv["weight_rms_error"] < ol["weight_rms_error"] / 2
    assert wv["mean"] > ol["mean"] + 0.03
    assert wv["programming"]["pulses"] > ol["programming"]["pulses"] > 0
    assert wv["programming"]["pairs"] == ol["programming"]["pairs"] == 64 * 16 + 16 * 10
