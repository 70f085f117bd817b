"""Refit the per-family dynamic-power scale of hwkit's FPGA power model from published points.

    .venv/bin/python benchmarks/fpga_power_fit.py [--json]

The points are benchmarks/fpga_power.py's POINTS. For each device family, the points marked "fit"
give a one-parameter, least-squares fit through the origin of

    y_i = published_i - static - ps - clock_tree          (what the point leaves for the design's dynamic power)
    x_i = sum_r c_r * N_r * f_clk                          (the model's dynamic power with the stored coefficients)
    k   = sum(x_i * y_i) / sum(x_i ** 2)

i.e. one common factor on all the family's per-resource coefficients (a point with one total power
cannot separate LUT from DSP from BRAM). k is also computed with static and PS power at the high and
low ends of the board's range (k_low, k_high): that spread, not the fit residual, is the dominant
uncertainty. The script prints k, the coefficient triples [value * k_low * s_low, value * k,
value * k_high * s_high] to put into boards/families/<family>.toml, and the error on the "holdout" points
before and after scaling. s_low, s_high are the per-resource spreads (low / value, high / value) of the
engineering priors the fit started from (PRIOR below): one total power cannot tell which resource is
off, so each coefficient keeps its prior's relative uncertainty on top of the fit's.

k is relative to the coefficients stored now: after the fitted values are in the TOML files a re-run
prints k = 1.00 (that is the check that the files hold the fit). A family with no "fit" point keeps
its coefficients (k is not computed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hwkit.board import load_board, parse_board
from hwkit.energy.fpga import RESOURCES, estimate_power, load_family

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fpga_power import POINTS  # noqa: E402

# The engineering priors (uW/MHz at 12.5 % toggle, [low, value, high]) the first fit started from, as in
# boards/families/*.toml before calibration (docs/power-sources.md, section c). Only their spreads are used.
PRIOR = {
    "zynq-ultrascale+": {"LUT": (0.03, 0.05, 0.08), "FF": (0.01, 0.015, 0.03), "BRAM_18K": (2.5, 4.0, 7.5),
                         "URAM": (15.0, 20.0, 30.0), "DSP": (2.0, 3.0, 5.0)},
    "zynq-7000": {"LUT": (0.05, 0.08, 0.12), "FF": (0.02, 0.03, 0.05), "BRAM_18K": (5.0, 7.5, 12.5),
                  "URAM": (0.0, 0.0, 0.0), "DSP": (3.0, 5.0, 10.0)},
}


def _spread(family: str, res: str) -> tuple[float, float]:
    lo, v, hi = PRIOR[family][res]
    return (lo / v, hi / v) if v else (1.0, 1.0)


def _board(pt: dict[str, Any]):
    b = pt["board"]
    return load_board(b) if isinstance(b, str) else parse_board(b, "calibration", "benchmarks/fpga_power.py")


def est_family(pt: dict[str, Any]) -> str:
    return _board(pt).family or ""


def decompose(pt: dict[str, Any]) -> dict[str, float]:
    """The model's parts for one point: dynamic without the clock tree (x), and y at low/central/high."""
    est = estimate_power(pt["resources"], pt["clock_mhz"], _board(pt))
    fam = load_family(est_family(pt))
    ct = fam.clock_tree_mw.scale(1e-3)
    x = est.pl_dynamic_w.value - ct.value
    fixed = est.pl_static_w
    if pt["tier"] == "PL+PS" and est.ps_w is not None:
        fixed = fixed + est.ps_w
    p = pt["published_w"]
    return {"x": x, "y": p - fixed.value - ct.value,
            # large static + PS leave the least for dynamic power: the low end of k
            "y_low": p - fixed.high - ct.high, "y_high": p - fixed.low - ct.low,
            "fixed_w": fixed.value + ct.value}


def fit_family(family: str, points: list[dict[str, Any]] = POINTS) -> dict[str, Any]:
    """Least-squares scale k (with k_low, k_high) of ``family``'s coefficients from its "fit" points."""
    fit = [p for p in points if p["fit"] == "fit" and est_family(p) == family]
    out: dict[str, Any] = {"family": family, "fit_points": [p["design"] for p in fit]}
    if not fit:
        return out
    d = [decompose(p) for p in fit]
    sxx = sum(v["x"] ** 2 for v in d)
    for key, name in (("y", "k"), ("y_low", "k_low"), ("y_high", "k_high")):
        out[name] = sum(v["x"] * v[key] for v in d) / sxx
    fam = load_family(family)
    out["coefficients"] = {}
    for r, c in fam.uw_per_mhz.items():
        s_low, s_high = _spread(family, r)
        out["coefficients"][r] = [round(c.value * out["k_low"] * s_low, 4), round(c.value * out["k"], 4),
                                  round(c.value * out["k_high"] * s_high, 4)]
    out["holdout"] = []
    for p in points:
        if p["fit"] != "holdout" or est_family(p) != family:
            continue
        v = decompose(p)
        before = v["fixed_w"] + v["x"]
        after = v["fixed_w"] + out["k"] * v["x"]
        pub = p["published_w"]
        out["holdout"].append({"design": p["design"], "published_w": pub,
                               "before_w": before, "before_error_pct": 100 * (before - pub) / pub,
                               "after_w": after, "after_error_pct": 100 * (after - pub) / pub})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    families = sorted({est_family(p) for p in POINTS})
    results = [fit_family(f) for f in families]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['family']}:")
        if "k" not in r:
            print("  no 'fit' point: coefficients kept as stored")
            continue
        print(f"  fit points: {'; '.join(r['fit_points'])}")
        print(f"  k = {r['k']:.3f} (k_low {r['k_low']:.3f} with static and PS at their high ends, "
              f"k_high {r['k_high']:.3f} at their low ends), relative to the stored coefficients")
        print("  [dynamic_uw_per_mhz] = [value * k_low * s_low, value * k, value * k_high * s_high]:")
        for res in RESOURCES:
            print(f"    {res} = {r['coefficients'][res]}")
        for h in r["holdout"]:
            print(f"  holdout {h['design'][:50]}: published {h['published_w']:.3f} W; stored coefficients "
                  f"{h['before_w']:.3f} W ({h['before_error_pct']:+.1f}%), scaled by k {h['after_w']:.3f} W "
                  f"({h['after_error_pct']:+.1f}%)")


if __name__ == "__main__":
    main()
