"""LUT-GEMV kernel for binary-coded (BCQ) layers vs torch fp32 at batch 1, against this machine's memory bandwidth.

    .venv/bin/python benchmarks/shiftadd_kernel.py [--shapes 1024x1024,4096x4096] [--bits 2,3] [--threads 1,2]
                                                  [--reps 200] [--json out.json]

Measured in one run, per shape, bits and thread count (medians of ``--reps`` timed calls, interleaved):
* torch fp32: ``torch.mv(W, x)`` and ``F.linear(x[None], W)`` (what an ``nn.Linear`` does at batch 1); the ratio
  uses the faster of the two.
* the LUT kernel (``hwkit.compress.shiftadd.lutgemv``: AVX-512 ``vpermps`` on 16-entry half tables when the CPU has it,
  numba scalar otherwise), including building the tables for ``x`` on every call.
* bytes of weights each reads, achieved GB/s and the fraction of the measured memory bandwidth (the best
  single-thread streaming read over 512 MiB: numpy sum, BLAS dot, torch.sum, at the start and the end of the run,
  or torch.mv's own cold rate where that is higher; the same run). "hot": the same
  weight every call (the BCQ weight of a 4096^2 layer, 9.4 MB, fits in a 32 MB L3); "cold": calls rotate over
  enough copies of the weight to exceed the last-level cache, like the layers of a model, which is what a
  bandwidth bound is about.
* the weight memory of the BCQ layer (codes + fp32 scales) at each bit width vs fp32.

Weights: random binary planes and random power-of-two-sum scales (the kernel's speed does not depend on the values);
the kernel's output is checked against the dense fp32 ``W_hat x`` in float64 for every configuration.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from hwkit.compress.shiftadd import bcq, lutgemv

LLC_BYTES = 32 * 2 ** 20  # last-level cache of the benchmark machine is read from sysfs when available


def _llc_bytes() -> int:
    from pathlib import Path

    best = 0
    for p in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        t = p.read_text().strip()
        mult = {"K": 2 ** 10, "M": 2 ** 20}.get(t[-1], 1)
        best = max(best, int(t.rstrip("KM")) * mult)
    return best or LLC_BYTES


def bandwidth(reps: int = 9) -> dict[str, float]:
    """Single-thread streaming read bandwidth over 512 MiB (GB/s, medians): the best of numpy sum, BLAS dot(a, a)
    and torch.sum (each reads the array once); and numpy copy (read + write)."""
    a = np.ones(2 ** 27, dtype=np.float32)
    b = np.empty_like(a)
    t = torch.from_numpy(a)
    torch.set_num_threads(1)
    kernels = {"numpy sum": a.sum, "BLAS dot(a,a)": lambda: np.dot(a, a), "torch.sum": t.sum,
               "numpy copy": lambda: np.copyto(b, a)}
    out = {}
    for name, f in kernels.items():
        f()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        out[name] = (2 if "copy" in name else 1) * a.nbytes / float(np.median(ts)) / 1e9
    out["read_gbs"] = max(out["numpy sum"], out["BLAS dot(a,a)"], out["torch.sum"])
    return out


def _random_bcq(n: int, k: int, bits: int, seed: int) -> bcq.QuantisedLinear:
    g = torch.Generator().manual_seed(seed)
    c = -(-k // 8)
    codes = torch.randint(0, 256, (c, n, bits), dtype=torch.uint8, generator=g)
    e = torch.randint(-9, -3, (c, -(-n // 8), bits, 3), generator=g).float()
    s = torch.where(torch.rand(e.shape, generator=g) < 0.8, 1.0, -1.0)
    alpha = (s * torch.pow(2.0, e - torch.arange(3) * 2)).sum(-1).abs()  # sums of 3 signed powers of two
    return bcq.QuantisedLinear(codes, alpha.sort(dim=-1, descending=True).values, k, 8)


def _median_us(fns: dict[str, Any], reps: int, block: int = 10) -> dict[str, float]:
    """Median time per call: rounds of ``block`` consecutive calls of each function in turn, so that drift on a
    shared machine hits all alike and a "hot" weight stays cached within its block."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(max(1, reps // block)):
        for k, f in fns.items():
            for _ in range(block):
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) * 1e6 for k, v in times.items()}


def run(shape: tuple[int, int], bits: int, threads: int, reps: int) -> dict[str, Any]:
    n, k = shape
    torch.set_num_threads(threads)
    qw = _random_bcq(n, k, bits, seed=bits)
    wq = qw.dequantise()
    x = torch.randn(k)
    xn = x.numpy()
    packed = lutgemv.pack(qw.codes.numpy(), qw.alpha.numpy(), 8, k)
    gemv = lutgemv.LUTGemv(packed, threads=threads)
    ref = (wq.double() @ x.double()).numpy()
    err = float(np.abs(gemv(xn) - ref).max() / np.abs(ref).max())
    llc = _llc_bytes()
    ncold_lut = max(2, -(-3 * llc // packed.nbytes))
    cold_lut = [gemv] + [lutgemv.LUTGemv(lutgemv.pack(qw.codes.numpy().copy(), qw.alpha.numpy().copy(), 8, k),
                                         threads=threads) for _ in range(ncold_lut - 1)]
    ncold_w = max(2, -(-3 * llc // (4 * n * k)))
    cold_w = [wq] + [wq.clone() for _ in range(ncold_w - 1)]
    it = {"lut": 0, "w": 0}

    def lut_cold() -> None:
        it["lut"] = (it["lut"] + 1) % ncold_lut
        cold_lut[it["lut"]](xn)

    def mv_cold() -> None:
        it["w"] = (it["w"] + 1) % ncold_w
        torch.mv(cold_w[it["w"]], x)

    xb = x[None]
    with torch.no_grad():
        t = _median_us({"torch.mv": lambda: torch.mv(wq, x), "F.linear": lambda: torch.nn.functional.linear(xb, wq),
                        "lut": lambda: gemv(xn), "torch.mv cold": mv_cold, "lut cold": lut_cold}, reps)
    w_bytes = 4 * n * k
    l_bytes = packed.nbytes + packed.codes.shape[1] * 2 * 16 * 4  # codes + scales + the half tables
    best_torch = min(t["torch.mv"], t["F.linear"])
    gbs = {key: (w_bytes if "torch" in key or key == "F.linear" else l_bytes) / (t[key] * 1e-6) / 1e9 for key in t}
    return {"shape": [n, k], "bits": bits, "threads": threads, "kernel": gemv.kernel, "max_rel_error": err,
            "time_us": t, "ratio_torch_over_lut_hot": best_torch / t["lut"],
            "ratio_torch_over_lut_cold": t["torch.mv cold"] / t["lut cold"],
            "weight_bytes": {"fp32": w_bytes, "lut": l_bytes}, "gbs": gbs,
            "memory": lutgemv.weight_memory(n, k, bits, 8), "cold_copies": {"lut": ncold_lut, "fp32": ncold_w}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="1024x1024,4096x4096")
    ap.add_argument("--bits", default="2,3")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json")
    a = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    print(f"CPU kernel: {'AVX-512 vpermps' if lutgemv.has_avx512() else 'numba scalar'}; torch {torch.__version__}; "
          f"last-level cache {_llc_bytes() / 2 ** 20:.0f} MiB")
    bw = bandwidth()
    rows = []
    for shape in shapes:
        for bits in [int(b) for b in a.bits.split(",")]:
            for th in [int(v) for v in a.threads.split(",")]:
                rows.append(run(shape, bits, th, a.reps))
    bw2 = bandwidth()  # again at the end: the machine is shared, take the best of both
    bw = {k: max(bw[k], bw2[k]) for k in bw}
    mv_best = max(r["gbs"]["torch.mv cold"] for r in rows)
    bound = max(bw["read_gbs"], mv_best)
    print("memory bandwidth (1 thread, 512 MiB, best of start and end of the run): "
          + ", ".join(f"{k} {v:.1f} GB/s" for k, v in bw.items() if k != "read_gbs")
          + f"; best cold torch.mv: {mv_best:.1f} GB/s; read bound used below (the highest): {bound:.1f} GB/s")
    hdr = (f"{'shape':>10} {'bits':>4} {'thr':>3} | {'torch.mv':>9} {'F.linear':>9} {'LUT':>8} {'ratio':>6} | "
           f"{'mv cold':>8} {'LUT cold':>8} {'ratio':>6} | {'fp32 MB':>7} {'LUT MB':>6} | "
           f"{'mv GB/s':>7} {'LUT GB/s':>8} (cold, % of read bound) | max rel err")
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for r in rows:
        t, g = r["time_us"], r["gbs"]
        r["fraction_of_read_bound"] = {k: v / bound for k, v in g.items()}
        fr = r["fraction_of_read_bound"]
        n, k = r["shape"]
        print(f"{n:>5}x{k:<4} {r['bits']:>4} {r['threads']:>3} | {t['torch.mv']:>7.0f}us {t['F.linear']:>7.0f}us "
              f"{t['lut']:>6.0f}us {r['ratio_torch_over_lut_hot']:>5.2f}x | {t['torch.mv cold']:>6.0f}us "
              f"{t['lut cold']:>6.0f}us {r['ratio_torch_over_lut_cold']:>5.2f}x | "
              f"{r['weight_bytes']['fp32'] / 1e6:>7.1f} {r['weight_bytes']['lut'] / 1e6:>6.2f} | "
              f"{g['torch.mv cold']:>5.1f} ({fr['torch.mv cold'] * 100:>3.0f}%) "
              f"{g['lut cold']:>5.1f} ({fr['lut cold'] * 100:>3.0f}%) | {r['max_rel_error']:.1e}")
    bound_time = {f"{r['shape'][0]}x{r['shape'][1]} {r['bits']}-bit": r["weight_bytes"]["lut"] / bound / 1e3
                  for r in rows if r["threads"] == 1}
    print("\ntime to stream the LUT weights once at the read bound: " + ", ".join(
        f"{k} {v:.0f} us" for k, v in bound_time.items()))
    print("\nratio = fastest torch fp32 time / LUT time (> 1: the LUT kernel is faster). LUT bytes: codes + fp32 scales"
          " + tables.\n\nWeight memory of a BCQ layer (codes + one fp32 scale per 8 columns x 8 rows x plane):")
    for shape in shapes:
        for bits in [int(b) for b in a.bits.split(",")]:
            m = lutgemv.weight_memory(shape[0], shape[1], bits, 8)
            print(f"  {shape[0]}x{shape[1]} {bits}-bit: {m['total_bytes'] / 1e6:.2f} MB "
                  f"({m['bits_per_weight']:.2f} bits/weight) vs fp32 {m['fp32_bytes'] / 1e6:.2f} MB: "
                  f"{m['reduction_vs_fp32'] * 100:.1f} % less (vs fp16: {m['reduction_vs_fp16'] * 100:.1f} % less)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bandwidth": bw, "read_bound_gbs": bound, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
