"""Hardware-aware training on synapse devices: claims, sweeps and simulation speed (scikit-learn digits).

    .venv/bin/python benchmarks/synapse_sweeps.py [--out build/synapse-sweeps] [--epochs 8] [--quick]

One process, one thread (torch.set_num_threads(1)). Network 64-32-10 ReLU, SGD batch 8, lr 0.1, weights
on differential pairs with beta = 1, inputs = pixels / 16, 75/25 stratified split (seed 0). Writes
``sweeps.md`` (tables), ``sweeps.json`` and one PNG + SVG per sweep (accuracy vs levels, vs
nonlinearity, vs d2d variation, one line per update rule, software backprop as the reference line).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hwkit.compress.synapse.device import (
    DeviceModel,
    DifferentialArray,
    UpdateRule,
    WriteVerify,
    a_from_nl_label,
    load_device,
)
from hwkit.compress.synapse.train import TrainConfig, build_mlp, digits_split, hardware_aware_train

RULES = {
    "bidirectional": UpdateRule("bidirectional", "stochastic"),
    "bidirectional-adaptive": UpdateRule("bidirectional", "stochastic", adaptive=True),
    "unidirectional": UpdateRule("unidirectional", "stochastic"),
    "unidirectional-adaptive": UpdateRule("unidirectional", "stochastic", adaptive=True),
}
# Closed-loop refresh (d2d sweeps only): the saturated pair is read, reset and re-written with write-verify
# (tolerance 0.02 beta, <= 10 rounds, LTD pulses allowed for the fine correction).
VERIFIED_REFRESH = UpdateRule("unidirectional", "stochastic", refresh_program="write-verify",
                              refresh_verify=WriteVerify(tolerance=0.02, max_iterations=10, depress=True))
assert VERIFIED_REFRESH.refresh_verify == UpdateRule().refresh_verify  # the library's default closed-loop refresh
D2D_RULES = {**RULES, "unidirectional-verified-refresh": VERIFIED_REFRESH}


def base_device(levels: int = 64, nl_ltp: float = 1.0, nl_ltd: float = -2.0, d2d: float = 0.0) -> DeviceModel:
    """The sweep's device: NeuroSim-exponential, asymmetric (LTD twice as nonlinear), no c2c noise."""
    return DeviceModel("sweep", "exponential", levels, levels, a_from_nl_label(nl_ltp), a_from_nl_label(nl_ltd),
                       1e-5, 1e-6, d2d_levels=d2d, d2d_nl=d2d, d2d_gmax=d2d, d2d_gmin=d2d)


def cycle_drift(dev: DeviceModel, rule: UpdateRule, cycles: int = 20, pairs: int = 20_000) -> float:
    """rms weight drift (units of beta) after ``cycles`` of +dw then -dw (one nominal pulse each) from w = 0.

    A zero-mean update sequence should leave w where it was; a mismatch between the step that raises w and
    the one that lowers it makes it drift. Refresh off.
    """
    import torch

    arr = DifferentialArray(dev, (pairs,), 1.0, torch.Generator().manual_seed(0))
    arr.program(torch.zeros(pairs), "exact", centred=rule.rule == "bidirectional")
    w0 = arr.weights()
    step = (2.0 if rule.rule == "bidirectional" else 1.0) / dev.levels_ltp
    rule = UpdateRule(rule.rule, "round", refresh_threshold=2.0)
    for _ in range(cycles):
        arr.update(torch.full((pairs,), step), rule)
        arr.update(torch.full((pairs,), -step), rule)
    return float((arr.weights() - w0).pow(2).mean().sqrt())


def run(dev: DeviceModel, rule: UpdateRule, data: tuple, epochs: int, seed: int = 0, batch: int = 8) -> tuple:
    torch.manual_seed(seed)
    model = build_mlp([64, 32, 10])
    cfg = TrainConfig(rule=rule, lr=0.1, epochs=epochs, batch_size=batch, seed=seed)
    _, res = hardware_aware_train(model, dev, *data, cfg)
    return res


def best(res) -> float:  # noqa: ANN001
    return max(res.test_accuracy_per_epoch)


def plot(name: str, xs: list, series: dict, software: float, xlabel: str, out: Path, logx: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for rule, ys in series.items():
        ax.plot(xs, ys, marker="o", label=rule)
    ax.axhline(software, color="k", ls="--", lw=1, label="software backprop")
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (digits)")
    ax.set_ylim(0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"{name}.{ext}")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/synapse-sweeps"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="3 points per sweep, 3 epochs (smoke run)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    epochs = 3 if args.quick else args.epochs
    data = digits_split(0)
    t0 = time.perf_counter()
    doc: dict = {"epochs": epochs, "network": "64-32-10 ReLU", "batch": 8, "lr": 0.1, "beta": 1.0}
    lines = [f"# Synapse-device sweeps (digits, 64-32-10, batch 8, lr 0.1, {epochs} epochs, best test accuracy "
             "over epochs)", ""]

    sw = run(DeviceModel("software"), UpdateRule("software"), data, epochs)
    doc["software"] = best(sw)
    lines += [f"Software backprop (float SGD, same settings): **{best(sw):.4f}**", ""]

    # Claim 1: linear device with many levels ~ software.
    lin = load_device("ideal-linear")
    claim1 = {r: best(run(lin, RULES[r], data, epochs)) for r in ("bidirectional", "unidirectional")}
    doc["linear_1024_levels"] = claim1
    lines += ["## Linear symmetric device, 1024 levels (boards/devices/ideal-linear.toml)", "",
              "| rule | accuracy | minus software (pts) |", "|---|---|---|"]
    lines += [f"| {r} | {a:.4f} | {100 * (a - best(sw)):+.2f} |" for r, a in claim1.items()]

    # Claim 2: nonlinear asymmetric device: unidirectional vs bidirectional.
    lines += ["", "## Nonlinear asymmetric devices: unidirectional vs bidirectional", "",
              "| device | rule | accuracy | refreshes | pulses | samples/s |", "|---|---|---|---|---|---|"]
    doc["nonlinear"] = {}
    for dname in ("ag-asi", "pcmo"):
        dev = load_device(dname)
        doc["nonlinear"][dname] = {}
        for r, rule in RULES.items():
            res = run(dev, rule, data, epochs)
            doc["nonlinear"][dname][r] = {"accuracy": best(res), "refreshes": res.refreshes, "pulses": res.pulses,
                                          "samples_per_s": res.samples_per_s}
            lines.append(f"| {dname} | {r} | {best(res):.4f} | {res.refreshes} | {res.pulses} | "
                         f"{res.samples_per_s:,.0f} |")

    sweeps = {
        "levels": ([16, 32, 64, 128, 256] if not args.quick else [16, 64, 256],
                   lambda v: base_device(levels=v), "levels (Pmax, LTP = LTD)", True),
        "nonlinearity": ([0.01, 0.5, 1.0, 2.0, 4.0] if not args.quick else [0.01, 1.0, 4.0],
                         lambda v: base_device(nl_ltp=v, nl_ltd=-2 * v), "NeuroSim NL label of LTP (LTD = -2x)",
                         False),
        "d2d": ([0.0, 0.05, 0.1, 0.2, 0.3] if not args.quick else [0.0, 0.1, 0.3],
                lambda v: base_device(d2d=v), "d2d relative sigma (Pmax, nonlinearity, Gmax, Gmin)", False),
    }
    doc["sweeps"] = {}
    for name, (xs, make, xlabel, logx) in sweeps.items():
        rules = D2D_RULES if name == "d2d" else RULES
        series = {r: [best(run(make(v), rule, data, epochs)) for v in xs] for r, rule in rules.items()}
        doc["sweeps"][name] = {"x": xs, "series": series}
        plot(f"accuracy_vs_{name}", xs, series, best(sw), xlabel, args.out, logx)
        lines += ["", f"## Accuracy vs {name} ({xlabel}; base: 64 levels, NL 1/-2, no d2d, no c2c)", "",
                  "| rule | " + " | ".join(str(v) for v in xs) + " |", "|---|" + "---|" * len(xs)]
        lines += [f"| {r} | " + " | ".join(f"{a:.4f}" for a in ys) + " |" for r, ys in series.items()]

    # Which d2d component hurts the unidirectional rule: one at a time at sigma 0.3.
    comp_rules = {r: D2D_RULES[r] for r in ("bidirectional", "unidirectional", "unidirectional-verified-refresh")}
    sigma = 0.3
    lines += ["", f"## d2d components one at a time (sigma {sigma}; base: 64 levels, NL 1/-2, no c2c)", "",
              "| d2d component | rule | best accuracy | last-epoch accuracy | refreshes |", "|---|---|---|---|---|"]
    doc["d2d_components"] = {}
    for comp in ("d2d_levels", "d2d_nl", "d2d_gmax", "d2d_gmin"):
        doc["d2d_components"][comp] = {}
        for r, rule in comp_rules.items():
            res = run(base_device().with_(**{comp: sigma}), rule, data, epochs)
            doc["d2d_components"][comp][r] = {"best": best(res), "last": res.final_test_accuracy,
                                              "refreshes": res.refreshes}
            lines.append(f"| {comp} | {r} | {best(res):.4f} | {res.final_test_accuracy:.4f} | {res.refreshes} |")

    # Mechanism: +dw/-dw cycles on pairs whose two devices differ (d2d): the rule that raises w with one device
    # and lowers it with the other drifts; the bidirectional rule uses both devices both ways.
    lines += ["", "## rms drift of w after 20 (+dw, -dw) cycles of one nominal pulse (units of beta; refresh off)", "",
              "| d2d component | sigma | bidirectional | unidirectional |", "|---|---|---|---|"]
    doc["cycle_drift"] = {}
    for comp in ("d2d_levels", "d2d_nl", "d2d_gmax", "d2d_gmin"):
        for sg in (0.1, 0.3):
            dev = base_device().with_(**{comp: sg})
            bi, uni = cycle_drift(dev, RULES["bidirectional"]), cycle_drift(dev, RULES["unidirectional"])
            doc["cycle_drift"][f"{comp}={sg}"] = {"bidirectional": bi, "unidirectional": uni}
            lines.append(f"| {comp} | {sg} | {bi:.4f} | {uni:.4f} |")

    # Simulation speed: training samples/s (includes forward, backward, pulse updates, refresh).
    speed = {}
    for b in (1, 8, 64):
        res = run(load_device("ag-asi"), RULES["unidirectional"], data, 1, batch=b)
        speed[b] = res.samples_per_s
    doc["speed_samples_per_s"] = speed
    lines += ["", "## Simulation speed (hardware-aware training, ag-asi, unidirectional, 1 thread)", "",
              "| batch | samples/s |", "|---|---|"] + [f"| {b} | {s:,.0f} |" for b, s in speed.items()]
    lines += ["", "Speed against IBM aihwkit on the same layer sizes: benchmarks/synapse_aihwkit.py "
              "(separate venv, scripts/setup-aihwkit.sh).", "", f"Total wall time {time.perf_counter() - t0:.0f} s."]
    (args.out / "sweeps.md").write_text("\n".join(lines) + "\n")
    (args.out / "sweeps.json").write_text(json.dumps(doc, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
