"""What shift weights cost in FINN: the finn-plus estimate of power-of-two weights vs ordinary integer weights.

    .venv/bin/python benchmarks/shiftadd_finn.py [--epochs 30] [--variants int4,pow2-4,...] [--out build/shiftadd_finn]
                                                [--target zcu104] [--target-fps 100000,2000000] [--json out.json]

A Brevitas MLP 64-64-32-10 with 2-bit ReLU activations and integer inputs (scikit-learn digits, pixel values
0..16 as UINT8; 60/20/20 split, seed 0) is trained here once per weight variant (Adam, ``--epochs``, the same seed
and recipe): ordinary INTb weights (``int<b>``) and power-of-two weights on the INTb grid (``pow2-<b>``: exponents
0..b-2, i.e. a DeepShift weight with b-1 exponents; ``hwkit.compress.shiftadd.finn``). Each model is saved as a state
dict and compiled with hwkit's ``finn-estimate`` flow (``hwkit.api.compile_model``, up to FINN's estimate
reports: export to QONNX, streamline, HW layers, folding for each ``--target-fps``, bit-width minimisation, estimate;
torch/QONNX/FINN outputs are verified on the golden batch at each hand-off). Printed per variant: test accuracy
(PyTorch), the MVAU weight types FINN ended with, total LUT and BRAM_18K (finn-estimate) and the estimated
throughput; and for the power-of-two variants, that the exported QONNX weights are exact powers of two.

Which DeepShift settings the pow2 widths stand for: PS 3-bit (pmin -2) -> INT4, PS 4-bit (pmin -6) -> INT8,
PS 5-bit (pmin -14, the DeepShift default) -> INT16 (``shift_finn.ps_int_width``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

HIDDEN = (64, 32)


def data(seed: int = 0) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(seed).permutation(len(x))
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    part = {"train": idx[:a], "val": idx[a:b], "test": idx[b:]}
    return {k: (torch.tensor(x[v], dtype=torch.float32), torch.tensor(y[v])) for k, v in part.items()}


def train(kind: str, bits: int, d: dict[str, Any], epochs: int, seed: int = 0) -> tuple[Any, float]:
    from hwkit.compress.shiftadd.finn import build_shift_mlp

    torch.manual_seed(seed)
    model = build_shift_mlp(64, HIDDEN, 10, weight_bits=bits, act_bits=2, weight_values=kind)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    x, y = d["train"]
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(d["test"][0]).argmax(1) == d["test"][1]).float().mean())
    return model, acc


def pow2_check(model: Any, bits: int) -> dict[str, Any]:
    """Integer weights of each QuantLinear decoded as shifts (raises if one is not a power of two)."""
    from hwkit.compress.shiftadd.finn import shift_codes
    from hwkit.compress.shiftadd.pow2 import integer_weights

    out = {}
    for n, m in model.named_modules():
        if type(m).__name__ == "QuantLinear":
            sign, e = shift_codes(integer_weights(m).detach(), bits)
            out[n] = {"exponents_used": sorted({int(v) for v in e[sign != 0].unique()}),
                      "zero_fraction": float((sign == 0).float().mean())}
    return out


def compile_variant(path: Path, kwargs: dict[str, Any], out: Path, target: str, fps: int) -> dict[str, Any]:
    """``hwkit compile`` (finn-estimate flow, up to the estimate reports) of one state dict; report figures."""
    from hwkit.api import compile_model

    compile_model(path, target, out, to_step="finn.generate_estimate_reports",
                  arch="hwkit.compress.shiftadd.finn:build_shift_mlp", arch_kwargs=kwargs, input_shape=(1, 64),
                  input_dtype="UINT8", target_fps=fps)
    r = json.loads((out / "report.json").read_text())
    res = r["resources"]
    perf = r.get("performance", {})
    return {"LUT": res["LUT"]["used"]["value"], "BRAM_18K": res["BRAM_18K"]["used"]["value"],
            "DSP": res["DSP"]["used"]["value"],
            "weight_dtypes": [lay["weight_dtype"] for lay in r["layers"] if lay["op"].startswith("MVAU")],
            "layer_LUT": [lay["resources"]["LUT"]["value"] for lay in r["layers"] if lay["op"].startswith("MVAU")],
            "folding": [(lay.get("pe"), lay.get("simd")) for lay in r["layers"] if lay["op"].startswith("MVAU")],
            "throughput_fps": (perf.get("throughput_fps") or {}).get("value"),
            "verification": [(v["stage"], v["ok"], v["max_abs_err"]) for v in r["verification"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--variants", default="int2,int3,int4,pow2-4,int5,int8,pow2-8,int16,pow2-16")
    ap.add_argument("--out", default="build/shiftadd_finn")
    ap.add_argument("--target", default="zcu104")
    ap.add_argument("--target-fps", default="100000,2000000", help="comma list: one compile per variant and value")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from hwkit.compress.shiftadd.finn import ps_int_width
    from hwkit.compress.shiftadd.pow2 import project

    d = data()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fps_list = [int(v) for v in a.target_fps.split(",")]
    print(f"digits MLP 64-{'-'.join(map(str, HIDDEN))}-10, 2-bit activations, UINT8 inputs; finn-estimate for "
          f"{a.target}; {a.epochs} epochs per variant; target fps {', '.join(map(str, fps_list))}\n")
    hdr = (f"{'variant':<10} {'weights':<38} {'test acc':>8} {'fps target':>10} {'MVAU weights':<18} "
           f"{'PE/SIMD':<16} {'LUT':>6} {'BRAM18':>6} {'est. fps':>9}")
    print(hdr + "\n" + "-" * len(hdr))
    rows = []
    for v in a.variants.split(","):
        kind, bits = ("pow2", int(v.split("-")[1])) if v.startswith("pow2") else ("int", int(v[3:]))
        model, acc = train(kind, bits, d, a.epochs)
        info: dict[str, Any] = {"variant": v, "kind": kind, "bits": bits, "test_acc": acc}
        if kind == "pow2":
            project(model)  # the float weights now equal the quantised ones (export rounds ordinarily)
            info["shift"] = pow2_check(model, bits)
            ps = [b for b in range(2, 6) if ps_int_width(b) == bits]
            desc = f"+-2^0..2^{bits - 2} and 0 ({bits - 1} exp.)" + (f" = PS {ps[0]}-bit" if ps else "")
        else:
            desc = f"every INT{bits} integer ({2 ** bits - 1} levels)"
        path = out / f"{v}.pt"
        torch.save(model.state_dict(), path)
        kwargs = {"in_features": 64, "hidden": list(HIDDEN), "out_features": 10, "weight_bits": bits, "act_bits": 2,
                  "weight_values": kind}
        for fps in fps_list:
            r = {**info, "target_fps": fps, **compile_variant(path, kwargs, out / f"{v}-{fps}", a.target, fps)}
            rows.append(r)
            est = r["throughput_fps"]
            fold = ",".join(f"{pe}/{simd}" for pe, simd in r["folding"])
            print(f"{v:<10} {desc:<38} {acc * 100:>7.2f}% {fps:>10} {','.join(r['weight_dtypes']):<18} {fold:<16} "
                  f"{r['LUT']:>6.0f} {r['BRAM_18K']:>6.0f} {'-' if est is None else f'{est:>9.0f}'}")
    print("\nLUT of the power-of-two variants (finn-estimate) vs ordinary integers at the same target:")
    by = {(r["variant"], r["target_fps"]): r for r in rows}
    for r in rows:
        if r["kind"] != "pow2":
            continue
        fps = r["target_fps"]
        same = by.get((f"int{r['bits']}", fps))
        if same:
            print(f"  {fps:>8} fps  {r['variant']:<8} {r['LUT']:>6.0f} LUT vs int{r['bits']:<3} {same['LUT']:>6.0f} "
                  f"({r['LUT'] / same['LUT']:.2f}x): the same width, so FINN builds the same MVAU")
        levels = 2 * (r["bits"] - 1) + 1
        nb = int(np.ceil(np.log2(levels + 1)))
        fewer = by.get((f"int{nb}", fps))
        if fewer and fewer is not same:
            print(f"  {fps:>8} fps  {r['variant']:<8} {levels} levels; int{nb} ({2 ** nb - 1} levels) costs "
                  f"{fewer['LUT']:.0f} LUT / {fewer['BRAM_18K']:.0f} BRAM: the shift form costs "
                  f"{r['LUT'] / fewer['LUT']:.2f}x LUT, {r['BRAM_18K'] / max(fewer['BRAM_18K'], 1):.2f}x BRAM")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
