"""Synapse-device claims on other real data sets bundled with scikit-learn (wine, breast_cancer, iris).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/synapse_datasets.py [--out build/synapse-datasets]
        [--seeds 10] [--epochs 40] [--datasets wine breast_cancer iris digits] [--no-adaptive] [--quick]

``--datasets digits --epochs 8`` repeats synapse_sweeps.py's digits comparison (64-32-10, its split per seed)
over seeds.

Repeats the two claims of benchmarks/synapse_sweeps.py (which measures them on digits) on data sets that ship
inside scikit-learn (no download):

1. a linear symmetric device with 1024 levels (boards/devices/ideal-linear.toml) trains within 1 % of software
   backprop, with either update rule;
2. on nonlinear asymmetric devices (ag-asi, pcmo) the unidirectional rule (with refresh) beats the bidirectional
   rule (the adaptive variants of both are run too unless ``--no-adaptive``).

Inputs: :func:`hwkit.compress.synapse.train.tabular_split` (stratified split, features standardised with the
training split's statistics, clipped to +-3 std, mapped onto [0, 1] like digits' pixels / 16). Network
in-16-classes ReLU, SGD batch 8, lr 0.1, beta = 1, the update rules of synapse_sweeps.py. The test splits are
small (30-114 samples), so every configuration runs ``--seeds`` times; seed k fixes the split, the
initialisation, the shuffling and the device noise, and is the same for every configuration, so differences
between configurations are paired per seed. Reported: mean +- std (over seeds) of the best-epoch, the last-epoch
and the mean of the last five epochs' test accuracy (the per-epoch accuracy swings by several points on the
devices with the fixed learning rate), and for each claim the paired difference with a 95 % t interval
("exceeds spread" = the interval excludes 0). One process, one thread. Writes ``results.json`` and
``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # synapse_sweeps.py next to this file
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from synapse_sweeps import RULES, best  # noqa: E402

from hwkit.compress.synapse.device import DeviceModel, UpdateRule, load_device  # noqa: E402
from hwkit.compress.synapse.train import (  # noqa: E402
    SKLEARN_TABULAR,
    TrainConfig,
    build_mlp,
    digits_split,
    hardware_aware_train,
    tabular_split,
)

HIDDEN = 16
DIGITS_HIDDEN = 32  # digits runs synapse_sweeps.py's 64-32-10 network
# Two-sided 97.5 % quantile of Student's t for n - 1 degrees of freedom (n = seeds), no scipy needed.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def configs(adaptive: bool) -> list[tuple[str, str, UpdateRule]]:
    """(device, rule name, rule) of every configuration; 'software' first."""
    rules = [r for r in RULES if adaptive or not r.endswith("adaptive")]
    out = [("software", "software", UpdateRule("software"))]
    out += [("ideal-linear", r, RULES[r]) for r in ("bidirectional", "unidirectional")]
    out += [(d, r, RULES[r]) for d in ("ag-asi", "pcmo") for r in rules]
    return out


def train_one(data: tuple, dev: DeviceModel, rule: UpdateRule, epochs: int, seed: int,
              hidden: int = HIDDEN) -> dict:
    torch.manual_seed(seed)
    n_in, n_cls = data[0].shape[1], int(data[1].max()) + 1
    model = build_mlp([n_in, hidden, n_cls])
    cfg = TrainConfig(rule=rule, lr=0.1, epochs=epochs, batch_size=8, seed=seed)
    _, res = hardware_aware_train(model, dev, *data, cfg)
    pe = list(res.test_accuracy_per_epoch)
    return {"best": best(res), "last": res.final_test_accuracy, "tail5": statistics.fmean(pe[-5:]), "per_epoch": pe,
            "refreshes": res.refreshes, "pulses": res.pulses, "seconds": res.seconds}


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def paired(a: list[float], b: list[float]) -> dict:
    """a - b per seed: mean, std, 95 % t half-width, and whether the interval excludes 0."""
    d = [x - y for x, y in zip(a, b)]
    m, s = mean_std(d)
    hw = T975.get(len(d) - 1, 1.96) * s / len(d) ** 0.5 if len(d) > 1 else float("inf")
    return {"diffs": d, "mean": m, "std": s, "ci95": hw, "exceeds_spread": abs(m) > hw,
            "wins": sum(x > 0 for x in d), "ties": sum(x == 0 for x in d), "losses": sum(x < 0 for x in d)}


def pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/synapse-datasets"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--datasets", nargs="+", default=["wine", "breast_cancer", "iris"],
                    choices=(*SKLEARN_TABULAR, "digits"))
    ap.add_argument("--no-adaptive", action="store_true", help="skip the adaptive variants of both rules")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 5 epochs, no adaptive (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.no_adaptive = 2, 5, True
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    cfgs = configs(not args.no_adaptive)
    devices = {d: DeviceModel("software") if d == "software" else load_device(d) for d, _, _ in cfgs}
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()
    doc: dict = {"network": f"in-{HIDDEN}-classes ReLU", "batch": 8, "lr": 0.1, "beta": 1.0, "epochs": args.epochs,
                 "seeds": seeds, "test_size": 0.2, "inputs": "train-split z-score, clip +-3, mapped to [0, 1]",
                 "datasets": {}}
    lines = [f"# Synapse-device claims on scikit-learn's bundled tabular data ({args.epochs} epochs, "
             f"{len(seeds)} seeds, mean ± std over seeds)", "",
             f"Network in-{HIDDEN}-classes ReLU, SGD batch 8, lr 0.1, β = 1, 80/20 stratified split per seed, "
             "features z-scored on the training split, clipped to ±3σ and mapped onto [0, 1].", ""]
    summary = ["## Claims (paired over seeds: mean difference ± 95 % t interval; W/T/L = seeds won/tied/lost)", "",
               "| data set | comparison | best-epoch diff (pts) | exceeds spread | W/T/L | last-epoch diff (pts) "
               "| exceeds spread | last-5 mean diff (pts) | exceeds spread |", "|---|---|---|---|---|---|---|---|---|"]
    for name in args.datasets:
        # digits: synapse_sweeps.py's split (75/25, pixels / 16) and network (64-32-10), with seeds
        splits = {s: digits_split(s) if name == "digits" else tabular_split(name, s) for s in seeds}
        hidden = DIGITS_HIDDEN if name == "digits" else HIDDEN
        xtr, ytr, xte, _ = splits[0]
        info = {"features": xtr.shape[1], "classes": int(ytr.max()) + 1, "train": len(xtr), "test": len(xte),
                "hidden": hidden}
        runs: dict[str, dict[str, list[dict]]] = {}
        td = time.perf_counter()
        for dname, rname, rule in cfgs:
            runs.setdefault(dname, {})[rname] = [train_one(splits[s], devices[dname], rule, args.epochs, s, hidden)
                                                 for s in seeds]
        info["seconds"] = time.perf_counter() - td
        lines += [f"## {name} ({info['features']} features, {info['classes']} classes, {info['train']} train / "
                  f"{info['test']} test; one test sample = {100 / info['test']:.1f} pts; {info['seconds']:.0f} s)", "",
                  "| device | rule | best-epoch acc | last-epoch acc | last-5-epoch mean | refreshes | pulses |",
                  "|---|---|---|---|---|---|---|"]
        table = {}
        for dname, rname, _ in cfgs:
            rs = runs[dname][rname]
            b, la, t5 = (mean_std([r[k] for r in rs]) for k in ("best", "last", "tail5"))
            refr, pul = statistics.fmean(r["refreshes"] for r in rs), statistics.fmean(r["pulses"] for r in rs)
            table[f"{dname}/{rname}"] = {"best_mean": b[0], "best_std": b[1], "last_mean": la[0], "last_std": la[1],
                                         "tail5_mean": t5[0], "tail5_std": t5[1],
                                         "refreshes_mean": refr, "pulses_mean": pul, "runs": rs}
            lines.append(f"| {dname} | {rname} | {b[0]:.4f} ± {b[1]:.4f} | {la[0]:.4f} ± {la[1]:.4f} | "
                         f"{t5[0]:.4f} ± {t5[1]:.4f} | {refr:,.0f} | {pul:,.0f} |")
        lines.append("")

        def get(d: str, r: str, k: str) -> list[float]:
            return [x[k] for x in runs[d][r]]  # noqa: B023 (used inside this iteration only)

        comps = [(f"ideal-linear {r} − software", ("ideal-linear", r), ("software", "software"))
                 for r in ("bidirectional", "unidirectional")]
        for d in ("ag-asi", "pcmo"):
            comps.append((f"{d} unidirectional − bidirectional", (d, "unidirectional"), (d, "bidirectional")))
            if not args.no_adaptive:
                comps.append((f"{d} uni-adaptive − bi-adaptive", (d, "unidirectional-adaptive"),
                               (d, "bidirectional-adaptive")))
        claims = {}
        for label, a, b in comps:
            pb, pl, pt = (paired(get(*a, k), get(*b, k)) for k in ("best", "last", "tail5"))
            claims[label] = {"best": pb, "last": pl, "tail5": pt}
            summary.append(f"| {name} | {label} | {pts(pb['mean'])} ± {100 * pb['ci95']:.1f} | "
                           f"{'yes' if pb['exceeds_spread'] else 'no'} | {pb['wins']}/{pb['ties']}/{pb['losses']} | "
                           f"{pts(pl['mean'])} ± {100 * pl['ci95']:.1f} | {'yes' if pl['exceeds_spread'] else 'no'} | "
                           f"{pts(pt['mean'])} ± {100 * pt['ci95']:.1f} | {'yes' if pt['exceeds_spread'] else 'no'} |")
        doc["datasets"][name] = {**info, "results": table, "claims": claims}
        print("\n".join(lines[-(len(cfgs) + 4):]), flush=True)
    wall = time.perf_counter() - t0
    doc["wall_seconds"] = wall
    lines += summary + ["", f"Total wall time {wall:.0f} s (1 thread)."]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    print("\n".join(summary + ["", f"Total wall time {wall:.0f} s (1 thread)."]))


if __name__ == "__main__":
    main()
