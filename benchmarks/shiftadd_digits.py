"""ShiftAdd modes on a float MLP trained here on scikit-learn's digits, and the LUT-GEMV kernel speed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shiftadd_digits.py [--quick] [--out build/shiftadd_bench]

1. A float MLP (64-128-64-10, BatchNorm, ReLU) is trained (30 epochs, seed 0). Each mode is applied to a copy:
   DeepShift q / ps (5 bits) converted, then fine-tuned 10 epochs (RAdam, lr 1e-3); BCQ (post-training, no
   training) at 2 and 3 bits and with per-layer 2/3-bit allocation, with and without error compensation;
   the mult/shift MoE trained 10 epochs. Printed per mode: test accuracy, relative output (logit) error vs the
   float model, analytical-estimate energy saving of the Linear layers (hwkit.energy.ops), and
   |PyTorch - ONNX Runtime| of the exported model.
2. The LUT-GEMV kernels (3-bit, APoT scales, group_rows 8): the scalar reference ``bcq.lut_gemm`` and the packed
   ``hwkit.compress.shiftadd.lutgemv`` kernel, against dense fp32 mat-vec at the same shape (numpy ``W @ x`` and
   ``torch.mv``), batch 1, median of timed runs, single thread. ``benchmarks/shiftadd_kernel.py`` has the full
   kernel comparison (2/3 bits, cold caches, memory bandwidth).

Everything runs in one process; numbers are from the machine it runs on.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _data() -> Any:
    from hwkit.compress.amp.run import load_data

    return load_data("digits", None, 0)


def modes_table(quick: bool) -> list[dict[str, Any]]:
    from hwkit.compress.amp.toy import float_mlp, train_classifier
    from hwkit.compress.shiftadd.run import reparameterise, save_outputs

    data = _data()
    torch.manual_seed(0)
    base = train_classifier(float_mlp(64, (128, 64), 10), data.calib_x, data.calib_y, epochs=10 if quick else 30)
    ep = 3 if quick else 10
    runs: list[tuple[str, dict[str, Any]]] = [
        ("q 5-bit (converted + fine-tuned)", {"mode": "q", "epochs": ep}),
        ("ps 5-bit (converted + fine-tuned)", {"mode": "ps", "epochs": ep}),
        ("ps 5-bit (converted only)", {"mode": "ps", "epochs": 0}),
        ("bcq 3-bit", {"mode": "bcq", "bits": 3}),
        ("bcq 2-bit", {"mode": "bcq", "bits": 2}),
        ("bcq 2-bit, no compensation", {"mode": "bcq", "bits": 2, "no_compensate": True}),
        ("bcq 2/3-bit allocated", {"mode": "bcq", "bits": 0}),
        ("moe mult+shift (trained)", {"mode": "moe", "epochs": ep}),
    ]
    rows = []
    print("\nmode                                  acc before  acc after  out rel err  energy saving  ORT max diff")
    for label, params in runs:
        t0 = time.perf_counter()
        model, rep = reparameterise(copy.deepcopy(base), data, {"rounds": 20, **params})
        with tempfile.TemporaryDirectory() as tmp:
            save_outputs(model, rep, Path(tmp) / "m.pt", None, None, (1, 64), data.test_x[:64])
        a = rep["accuracy"]
        row = {"mode": label, "acc_before": a["before"], "acc_after": a["after"],
               "output_rel_error": rep["output_rel_error"], "energy_saving": rep["energy"]["saving"],
               "energy_kind": rep["energy"]["kind"], "ort_max_abs_diff": rep["onnx"]["ort_max_abs_diff"],
               "seconds": time.perf_counter() - t0, "layers": rep.get("layers")}
        if "avg_bits" in rep:
            row["avg_bits"] = rep["avg_bits"]
        if "memory" in rep:
            row["memory"] = rep["memory"]
        rows.append(row)
        print(f"{label:37s} {a['before'] * 100:8.2f} %  {a['after'] * 100:7.2f} %  {rep['output_rel_error']:10.4f}"
              f"  {rep['energy']['saving'] * 100:11.1f} %  {rep['onnx']['ort_max_abs_diff']:11.2g}")
        if params["mode"] == "bcq":
            print("      per layer (bits, weight rel err, output rel err): " + "; ".join(
                f"{x['name']}: {x['bits']}, {x['weight_rel_error']:.3f}, {x['output_rel_error']:.3f}"
                for x in rep["layers"]))
            m = rep["memory"]
            print(f"      weight memory: {m['weight_bytes']:,.0f} B vs fp32 {m['fp32_bytes']:,} B "
                  f"({m['reduction_vs_fp32'] * 100:.1f} % less)")
        if params["mode"] == "moe":
            print("      shift token share per layer, eval (clean arg-max) / last training epoch (noisy): " + "; ".join(
                f"{x['name']}: {x['shift_token_share']:.2f} / {x['train_shift_token_share']:.2f}"
                for x in rep["layers"]))
    return rows


def kernel_table(quick: bool) -> list[dict[str, Any]]:
    from hwkit.compress.shiftadd import bcq, lutgemv

    torch.set_num_threads(1)
    rows = []
    shapes = [(1024, 1024)] if quick else [(1024, 1024), (4096, 4096)]
    print("\nLUT-GEMV (3-bit, APoT scales) vs dense fp32 mat-vec, batch 1, 1 thread (median us); scalar: "
          "bcq.lut_gemm (256-entry tables), packed: hwkit.compress.shiftadd.lutgemv "
          "(see benchmarks/shiftadd_kernel.py)")
    print("shape         scalar us  packed us   numpy us  torch us  max rel err vs dense(W_hat) scalar / packed")
    rng = np.random.default_rng(0)
    for n, k in shapes:
        w = torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32) * 0.02)
        qw = bcq.quantise_weight(w, None, 3, bcq.BCQConfig(bits=3, rounds=5))
        wh = qw.dequantise().numpy()
        x = rng.standard_normal(k).astype(np.float32)
        codes, alpha = qw.codes.numpy(), qw.alpha.numpy()
        y = bcq.lut_gemm(x, codes, alpha, 8)  # compiles
        gemv = lutgemv.LUTGemv(lutgemv.pack(codes, alpha, 8, k))
        ref = wh.astype(np.float64) @ x.astype(np.float64)
        err = float(np.abs(y - ref).max() / np.abs(ref).max())
        perr = float(np.abs(gemv(x) - ref).max() / np.abs(ref).max())
        wt, xt = torch.from_numpy(wh), torch.from_numpy(x)

        def med(fn: Any, reps: int) -> float:
            fn()
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return float(np.median(ts)) * 1e6

        reps = 50 if quick else 200
        lut_us = med(lambda x=x, c=codes, a=alpha: bcq.lut_gemm(x, c, a, 8), reps)
        packed_us = med(lambda x=x, g=gemv: g(x), reps)
        np_us = med(lambda w=wh, x=x: w @ x, reps)
        th_us = med(lambda w=wt, x=xt: torch.mv(w, x), reps)
        rows.append({"shape": [n, k], "lut_us": lut_us, "packed_us": packed_us, "packed_kernel": gemv.kernel,
                     "numpy_us": np_us, "torch_us": th_us, "max_rel_err": err, "packed_max_rel_err": perr,
                     "weight_bytes": {"fp32": n * k * 4, "bcq_codes": codes.nbytes, "bcq_scales": alpha.nbytes}})
        print(f"{n}x{k:<9d} {lut_us:9.1f} {packed_us:10.1f} {np_us:10.1f} {th_us:9.1f}  {err:.2e} / {perr:.2e}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs, one kernel shape")
    ap.add_argument("--out", default="build/shiftadd_bench", help="directory for results.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = {"modes": modes_table(args.quick), "kernel": kernel_table(args.quick)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    print(f"\nwrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
