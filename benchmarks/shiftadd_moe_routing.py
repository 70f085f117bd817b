"""Why the mult/shift MoE routes every evaluation token to the shift expert: a sweep of the router settings.

    .venv/bin/python benchmarks/shiftadd_moe_routing.py [--epochs 10] [--json out.json]

The float MLP 64-128-64-10 of ``shiftadd_digits.py`` (digits, 30 epochs, seed 0) is converted to MoE layers
(``hwkit.compress.shiftadd.moe``) and trained ``--epochs`` with each setting: balancing coefficient (0.01 default,
1), router noise std (0.5 default, 0.05) and the straight-through task gradient to the router (off by default);
the last row calibrates the default routers' arg-max thresholds to a 0.6 shift share on the training split
(``shift_moe.calibrate_routing``).
Printed per setting and MoE layer: the shift-token share of the noisy training routing (last epoch) and of the
deterministic arg-max routing on the test split, and test accuracy. The latency balance point is 0.6 shift.
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

import torch

SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("default (coef 0.01, noise 0.5)", {}),
    ("coef 1", {"coef": 1.0}),
    ("noise 0.05", {"noise_std": 0.05}),
    ("noise 0.05, coef 1", {"noise_std": 0.05, "coef": 1.0}),
    ("task grad", {"router_task_grad": True}),
    ("task grad, coef 1", {"router_task_grad": True, "coef": 1.0}),
    ("task grad, coef 10", {"router_task_grad": True, "coef": 10.0}),
    ("default + calibrated to 0.6", {"route_share": 0.6}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--json")
    a = ap.parse_args()
    from hwkit.compress.amp.run import load_data
    from hwkit.compress.amp.toy import float_mlp, train_classifier
    from hwkit.compress.shiftadd import moe as shift_moe

    torch.set_num_threads(1)
    data = load_data("digits", None, 0)
    torch.manual_seed(0)
    base = train_classifier(float_mlp(64, (128, 64), 10), data.calib_x, data.calib_y, epochs=30)

    def acc(m: Any) -> float:
        with torch.no_grad():
            return float((m(data.test_x).argmax(1) == data.test_y).float().mean())

    print(f"float MLP test accuracy {acc(base) * 100:.2f} %; balance point 0.6 shift; {a.epochs} epochs each\n")
    print(f"{'setting':<32} {'test acc':>8}  shift share per layer: train (noisy) -> eval (arg-max)")
    rows = []
    for label, kw in SETTINGS:
        m = copy.deepcopy(base)
        kw = dict(kw)
        route = kw.pop("route_share", None)
        cfg = shift_moe.MoEConfig(**kw)
        shift_moe.convert(m, cfg)
        hist = shift_moe.train(m, data.calib_x, data.calib_y, a.epochs, 1e-3, cfg.coef)
        if route is not None:  # arg-max thresholds moved to the target share on the training split
            shift_moe.calibrate_routing(m, data.calib_x, route)
        ev = shift_moe.shares(m, data.test_x)
        tr = hist[-1]["train_shift_share"]
        gaps = {}
        with torch.no_grad():  # spread of the router's clean logit gap over the test tokens, per layer
            for n, mod in m.named_modules():
                if shift_moe.is_moe(mod):
                    xs: list[Any] = []
                    h = mod.register_forward_hook(lambda _m, i, _o, xs=xs: xs.append(i[0]))
                    m(data.test_x)
                    h.remove()
                    lg = mod.router(xs[0])
                    d = lg[:, 1] - lg[:, 0]
                    gaps[n] = [float(d.min()), float(d.median()), float(d.max())]
        rows.append({"setting": label, "config": kw, "test_acc": acc(m), "train_shift_share": tr,
                     "eval_shift_share": ev, "logit_gap_min_median_max": gaps})
        print(f"{label:<32} {acc(m) * 100:>7.2f}%  " + ", ".join(f"{n}: {tr[n]:.2f} -> {ev[n]:.2f}" for n in ev))
    print("\nclean logit gap (shift - mult) over the test tokens, min / median / max, per layer:")
    for r in rows:
        print(f"  {r['setting']:<32} " + "; ".join(f"{n}: {g[0]:+.2f} / {g[1]:+.2f} / {g[2]:+.2f}"
                                                  for n, g in r["logit_gap_min_median_max"].items()))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
