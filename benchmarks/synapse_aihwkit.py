"""Cross-check hwkit's synapse devices against IBM aihwkit: same curve, same pulses, same trajectory; and speed.

    bash scripts/setup-aihwkit.sh                              # builds aihwkit into .venv-aihwkit (once)
    .venv-aihwkit/bin/python benchmarks/synapse_aihwkit.py [--epochs 2] [--tolerance 1e-4]

Not part of the test run (aihwkit is an optional extra in its own venv). One thread everywhere
(torch.set_num_threads(1); run with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1, set below before imports).

(a) Trajectories. hwkit's NeuroSim-exponential device (per pulse: LTP g += c_p (b_p - g), LTD g -= c_d (g - 1 + b_d),
    c = 1 - exp(-1/A), b = 1/(1 - exp(-Pmax/A)), clipped to [0, 1]) is mapped onto aihwkit's LinearStepDevice
    (w += s_up (1 - gamma_up w / w_max), w -= s_dn (1 - gamma_dn w / w_min), hard bounds), every variation and noise
    off (dw_min_dtod, dw_min_std, up_down_dtod, w_min/max_dtod, gamma_*_dtod, write noise = 0):

    * single device, both directions, w = 2 g - 1 in [-1, 1]: s_up = c_p b'_p, s_dn = c_d b'_d with b' = 2 b - 1,
      gamma_up = 1/b'_p, gamma_down = 1/b'_d, dw_min = max(s_up, s_dn), up_down = 1 - s_dn/s_up (s_up >= s_dn) else
      -(1 - s_up/s_dn) (aihwkit's C++ applies up_down one-sided: the larger step is dw_min);
    * unidirectional pair (only potentiation): each sub-device w_sub = g in [0, 1] is LinearStepDevice(w_min=0,
      w_max=1, dw_min = c_p b_p, gamma_up = 1/b_p, up_down=0) inside OneSidedUnitCell (refresh off), which applies
      a weight increase as an up pulse on G+ and a decrease as an up pulse on G-; hwkit: DifferentialArray with the
      unidirectional rule (refresh off).

    Pulses go to an aihwkit tile one coincidence per call (DeterministicImplicit pulse type, BL = 1, update
    management off, learning rate = dw_min, x = 1, d = -sign: exactly one pulse per selected device; aihwkit descends,
    so d > 0 is a down pulse). Every device gets its own random sequence of +-n pulse bursts; the weight after each
    burst is compared, max |w_aihwkit - w_hwkit| relative to the weight range, PASS below the tolerance (float32).

(b) Speed. Hardware-aware training of the same 64-32-10 ReLU MLP on scikit-learn digits (batch 8, lr 0.1, pixels/16),
    samples/s in this process: hwkit (hardware_aware_train) vs aihwkit (AnalogSequential of AnalogLinear, AnalogSGD,
    forward/backward is_perfect, default stochastic pulse trains BL 31) with the mapped device -- bidirectional vs
    SingleRPUConfig(LinearStepDevice), unidirectional vs UnitCellRPUConfig(OneSidedUnitCell, refresh every batch).
    The algorithms differ as they are (hwkit: one pulse-count update per mini-batch; aihwkit: per-sample stochastic
    pulse trains), so the ratio is of simulators, not of identical arithmetic. Accuracies are printed for sanity.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from hwkit.compress.synapse.device import (  # noqa: E402
    DeviceModel,
    DifferentialArray,
    UpdateRule,
    a_from_nl_label,
    apply_pulses,
    load_device,
)
from hwkit.compress.synapse.train import TrainConfig, build_mlp, digits_split, hardware_aware_train  # noqa: E402

try:
    import aihwkit
    from aihwkit.nn import AnalogLinear, AnalogSequential
    from aihwkit.optim import AnalogSGD
    from aihwkit.simulator.configs import SingleRPUConfig, UnitCellRPUConfig
    from aihwkit.simulator.configs.compounds import OneSidedUnitCell
    from aihwkit.simulator.configs.devices import LinearStepDevice
    from aihwkit.simulator.parameters.enums import PulseType
    from aihwkit.simulator.tiles import AnalogTile
except ImportError as exc:  # pragma: no cover - depends on the optional venv
    raise SystemExit(f"synapse_aihwkit.py: aihwkit is not importable ({exc}); run bash scripts/setup-aihwkit.sh and "
                     "use .venv-aihwkit/bin/python") from None

NO_VARIATION = {"dw_min_dtod": 0.0, "dw_min_std": 0.0, "up_down_dtod": 0.0, "w_min_dtod": 0.0, "w_max_dtod": 0.0,
                "gamma_up_dtod": 0.0, "gamma_down_dtod": 0.0, "write_noise_std": 0.0, "reset_std": 0.0,
                "reset_dtod": 0.0, "mult_noise": False, "mean_bound_reference": True}


def exp_steps(pmax: int, a: float) -> tuple[float, float]:
    """(c, b) of the per-pulse recurrence of hwkit's exponential curve with A = a * Pmax."""
    big_a = a * pmax
    return -math.expm1(-1.0 / big_a), 1.0 / -math.expm1(-pmax / big_a)


def bidirectional_device(dev: DeviceModel) -> tuple[LinearStepDevice, dict[str, float]]:
    """aihwkit LinearStepDevice on w = 2g - 1 with hwkit's LTP and LTD curves (see the module docstring)."""
    c_p, b_p = exp_steps(dev.levels_ltp, dev.nl_ltp)
    c_d, b_d = exp_steps(dev.levels_ltd, dev.nl_ltd)
    bp, bd = 2 * b_p - 1, 2 * b_d - 1
    s_up, s_dn = c_p * bp, c_d * bd
    up_down = 1 - s_dn / s_up if s_up >= s_dn else -(1 - s_up / s_dn)
    params = {"w_min": -1.0, "w_max": 1.0, "dw_min": max(s_up, s_dn), "up_down": up_down, "gamma_up": 1 / bp,
              "gamma_down": 1 / bd}
    return LinearStepDevice(**params, **NO_VARIATION), params


def potentiation_device(dev: DeviceModel) -> tuple[LinearStepDevice, dict[str, float]]:
    """aihwkit LinearStepDevice on w_sub = g in [0, 1] following hwkit's LTP curve (up pulses only)."""
    c_p, b_p = exp_steps(dev.levels_ltp, dev.nl_ltp)
    params = {"w_min": 0.0, "w_max": 1.0, "dw_min": c_p * b_p, "up_down": 0.0, "gamma_up": 1 / b_p,
              "gamma_down": 0.0, "reset": 0.0}
    return LinearStepDevice(**params, **NO_VARIATION), params


def pulse_tile(rpu_config, rows: int, dw_min: float) -> AnalogTile:  # noqa: ANN001
    """A rows x 1 aihwkit tile set up so that update(x=1, d=+-1) is exactly one pulse per device with d != 0."""
    up = rpu_config.update
    up.pulse_type = PulseType.DETERMINISTIC_IMPLICIT
    up.desired_bl = 1
    up.update_bl_management = False
    up.update_management = False
    up.fixed_bl = True
    rpu_config.forward.is_perfect = True
    rpu_config.backward.is_perfect = True
    tile = AnalogTile(rows, 1, rpu_config)
    tile.set_learning_rate(dw_min)  # A = B = sqrt(lr / (dw_min BL)) = 1: one coincidence per unit x * d
    return tile


def aihwkit_bursts(tile: AnalogTile, signs: torch.Tensor, counts: torch.Tensor) -> list[torch.Tensor]:
    """Apply burst k (count[:, k] pulses of sign[:, k] per device) one pulse per call; weights after each burst."""
    x = torch.ones(1, 1)
    out = []
    for k in range(signs.shape[1]):
        for p in range(int(counts[:, k].max())):
            active = counts[:, k] > p
            d = torch.where(active, -signs[:, k], torch.zeros_like(signs[:, k])).float().view(1, -1)
            tile.update(x, d)
        out.append(tile.get_weights()[0].view(-1).double().clone())
    return out


def random_bursts(devices: int, bursts: int, max_n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    signs = torch.where(torch.rand(devices, bursts, generator=gen) < 0.5, -1.0, 1.0)
    counts = torch.randint(0, max_n + 1, (devices, bursts), generator=gen)
    return signs, counts


def check_bidirectional(dev: DeviceModel, devices: int, bursts: int, tol: float, perturb: str = "") -> bool:
    """One device per row, random +-n bursts from mid range, in both simulators; hwkit's w = 2g - 1.

    ``perturb``: a negative control -- the named aihwkit parameter is made 1 % larger, the check must fail.
    """
    aih, params = bidirectional_device(dev)
    if perturb:
        params = {**params, perturb: params[perturb] * 1.01}
        aih = LinearStepDevice(**params, **NO_VARIATION)
    signs, counts = random_bursts(devices, bursts, 6, seed=1)
    g0 = torch.linspace(0.05, 0.95, devices, dtype=torch.float64)
    tile = pulse_tile(SingleRPUConfig(device=aih), devices, params["dw_min"])
    tile.set_weights((2 * g0 - 1).float().view(devices, 1))
    ref = aihwkit_bursts(tile, signs, counts)
    g, dev_max = g0.clone(), 0.0
    for k in range(bursts):
        n = counts[:, k].double()
        g = apply_pulses(dev, g, torch.where(signs[:, k] > 0, n, 0.0), True)
        g = apply_pulses(dev, g, torch.where(signs[:, k] < 0, n, 0.0), False)
        dev_max = max(dev_max, float(((2 * g - 1) - ref[k]).abs().max()) / 2.0)
    ok = dev_max <= tol
    moved = float(((2 * g - 1) - (2 * g0 - 1)).abs().max())
    if perturb:
        print(f"  negative control, {dev.name} with aihwkit {perturb} +1 %: max deviation / range = {dev_max:.2e}: "
              f"{'PASS (the check would not notice!)' if ok else 'FAIL, as it must'}")
        return not ok
    print(f"  {dev.name}: LinearStepDevice {fmt(params)}")
    print(f"  {dev.name}: {devices} devices x {bursts} bursts of 0-6 pulses ({int(counts.sum())} pulses), weights "
          f"moved up to {moved:.3f}; max |w_aihwkit - w_hwkit| / range = {dev_max:.2e} (tolerance {tol:g}): "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def check_unidirectional(dev: DeviceModel, devices: int, bursts: int, tol: float) -> bool:
    """Differential pairs from Gmin, random +-n bursts, potentiation only (no refresh) in both simulators."""
    aih, params = potentiation_device(dev)
    signs, counts = random_bursts(devices, bursts, 3, seed=2)
    cell = OneSidedUnitCell(unit_cell_devices=[aih], refresh_every=0)
    tile = pulse_tile(UnitCellRPUConfig(device=cell), devices, params["dw_min"])
    tile.set_weights(torch.zeros(devices, 1))
    ref = aihwkit_bursts(tile, signs, counts)
    arr = DifferentialArray(dev, (devices,), beta=1.0)
    rule = UpdateRule("unidirectional", "round", refresh_threshold=2.0)  # never refresh
    dev_max = 0.0
    for k in range(bursts):
        arr.update(signs[:, k].double() * counts[:, k].double() / dev.levels_ltp, rule)  # exactly n pulses
        dev_max = max(dev_max, float((arr.weights() - ref[k]).abs().max()) / 2.0)
    ok = dev_max <= tol
    print(f"  {dev.name}: OneSidedUnitCell(LinearStepDevice {fmt(params)}), refresh off")
    print(f"  {dev.name}: {devices} pairs x {bursts} bursts of 0-3 pulses ({int(counts.sum())} pulses), "
          f"{int((arr.g >= 0.999).sum())} of {2 * devices} devices saturated at the end; max |w_aihwkit - w_hwkit| / "
          f"range = {dev_max:.2e} (tolerance {tol:g}): {'PASS' if ok else 'FAIL'}")
    return ok


def fmt(params: dict[str, float]) -> str:
    return "(" + ", ".join(f"{k}={v:.6g}" for k, v in params.items()) + ")"


# ----------------------------------------------------------------------------------------------- speed


def aihwkit_train(rpu_config, data: tuple, epochs: int, batch: int, lr: float, seed: int) -> tuple[float, float]:  # noqa: ANN001
    """(samples/s, test accuracy) of aihwkit hardware-aware training of 64-32-10 ReLU."""
    xtr, ytr, xte, yte = data
    rpu_config.forward.is_perfect = True
    rpu_config.backward.is_perfect = True
    torch.manual_seed(seed)
    model = AnalogSequential(AnalogLinear(64, 32, bias=True, rpu_config=rpu_config), torch.nn.ReLU(),
                             AnalogLinear(32, 10, bias=True, rpu_config=rpu_config))
    ref = build_mlp([64, 32, 10])  # same initial weights as hwkit's run (clipped to the device range)
    with torch.no_grad():
        for lay, lin in zip((model[0], model[2]), (ref[0], ref[2])):
            lay.set_weights(lin.weight.clamp(-1, 1), lin.bias)
    opt = AnalogSGD(model.parameters(), lr=lr)
    opt.regroup_param_groups(model)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    return len(xtr) * epochs / seconds, acc


def hwkit_train(dev: DeviceModel, rule: UpdateRule, data: tuple, epochs: int, batch: int, lr: float,
                seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    cfg = TrainConfig(rule=rule, lr=lr, epochs=epochs, batch_size=batch, seed=seed)
    _, res = hardware_aware_train(build_mlp([64, 32, 10]), dev, *data, cfg)
    return res.samples_per_s, res.final_test_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="training epochs per speed run (default 2)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64], help="batch sizes (default 1 8 64)")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max trajectory deviation / range (float32)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"aihwkit {aihwkit.__version__}, torch {torch.__version__}, 1 thread")
    sweep = DeviceModel("sweep-64-nl1-2", "exponential", 64, 64, a_from_nl_label(1.0), a_from_nl_label(-2.0))
    devices = [sweep, load_device("ag-asi").with_(c2c=0.0), load_device("pcmo").with_(c2c=0.0)]
    print("(a) same curve, same pulses -> same trajectory")
    ok = True
    for dev in devices:
        ok &= check_bidirectional(dev, 16, 80, args.tolerance)
        ok &= check_unidirectional(dev, 16, 80, args.tolerance)
    for param in ("gamma_down", "up_down"):
        ok &= check_bidirectional(sweep, 16, 80, args.tolerance, perturb=param)
    print(f"(a) overall: {'PASS' if ok else 'FAIL'}")

    print(f"(b) hardware-aware training speed, 64-32-10 ReLU on digits, lr 0.1, {args.epochs} epochs, device "
          f"{sweep.name} (hwkit's curve; aihwkit: the mapped LinearStepDevice)")
    data = digits_split(0)
    bi, _ = bidirectional_device(sweep)
    uni, _ = potentiation_device(sweep)
    print("| rule | batch | hwkit samples/s | aihwkit samples/s | hwkit / aihwkit | hwkit acc | aihwkit acc |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batch:
        rows = [
            ("bidirectional", UpdateRule("bidirectional", "stochastic"), lambda: SingleRPUConfig(device=bi)),
            ("unidirectional + refresh", UpdateRule("unidirectional", "stochastic"),
             lambda: UnitCellRPUConfig(device=OneSidedUnitCell(unit_cell_devices=[uni], refresh_every=1))),
        ]
        for name, rule, config in rows:
            sh, ah = hwkit_train(sweep, rule, data, args.epochs, batch, 0.1, 0)
            sa, aa = aihwkit_train(config(), data, args.epochs, batch, 0.1, 0)
            print(f"| {name} | {batch} | {sh:,.0f} | {sa:,.0f} | {sh / sa:.2f}x | {ah:.4f} | {aa:.4f} |", flush=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
