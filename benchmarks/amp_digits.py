"""AMP on models trained here on scikit-learn's digits: size, FLOPs, accuracy, search time, ORT latency, FINN.

    .venv/bin/python benchmarks/amp_digits.py [--quick] [--no-finn] [--out build/amp_bench]

1. A small ViT (timm structure, 4 blocks, dim 32, MLP 64) and a float MLP (64-128-64-10) are trained,
   then pruned by AMP (entropy criterion, signed rise, 1/τ = 15, batch 64) for several ΔE, each
   followed by feature-distillation recovery. Printed per ΔE: kept widths, parameter and FLOP
   reduction, test accuracy before / after pruning / after distillation, search wall time, and
   ONNX Runtime batch-1 latency (p50 of 2,000 runs, 1 thread) of the pruned vs the unpruned model.
   The "best" row is the largest parameter reduction with at most a 1-point accuracy drop after recovery.
2. A CQMLP-topology 2-bit MLP (64-256-128-64-32-10, Brevitas, BatchNorm) is trained on digits, pruned
   and distilled, then both it and the unpruned model are compiled with ``compile_model(..., "zcu104")``
   (finn-estimate flow) and their FINN LUT/BRAM estimates compared.

Everything runs on one torch thread in one process; numbers are from the machine it runs on.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwkit.compress.amp import search as amp  # noqa: E402
from hwkit.compress.amp.toy import TinyTransformer, digits_splits, float_mlp, train_classifier  # noqa: E402


def ort_p50_ms(model: Any, n_in: int, runs: int) -> float:
    import onnxruntime as ort

    from hwkit.backends.ort import latency_stats, time_calls

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        with torch.no_grad():
            torch.onnx.export(model.eval(), (torch.zeros(1, n_in),), str(path), input_names=["x"],
                              output_names=["y"], dynamo=False)  # the TorchScript exporter hwkit's ONNX export uses
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).uniform(0, 16, (1, n_in)).astype(np.float32)
        return latency_stats(time_calls(lambda: sess.run(None, {"x": x}), 200, runs))["p50_ms"]


def sweep(name: str, model: Any, d: dict[str, Any], deltas: list[float], distill_epochs: int, runs: int) -> None:
    calib, val = amp.batches(*d["train"], 64), amp.batches(*d["val"], 64)
    x_te, y_te = d["test"]
    acc0 = amp.accuracy(model, x_te, y_te)
    p0, f0 = amp.count_params(model), amp.count_flops(model, x_te)
    lat0 = ort_p50_ms(model, 64, runs)
    print(f"\n{name}: {p0:,} params, {f0:,} FLOPs/sample, test accuracy {acc0 * 100:.2f} %, "
          f"ORT p50 {lat0 * 1e3:.1f} us")
    print("  rise    dE      widths                 params   FLOPs    acc prune  acc distill  search s  ORT p50 us")
    best = None
    for rise, de in [(ri, de) for ri in ("signed", "abs") for de in deltas]:
        t0 = time.perf_counter()
        r = amp.amp_search(model, calib, val, amp.AmpConfig(delta_e=de, batch_size=64, rise=rise))
        wall = time.perf_counter() - t0
        acc1 = amp.accuracy(r.model, x_te, y_te)
        student = copy.deepcopy(r.model)
        amp.distill(student, model, d["train"][0], d["val"][0], amp.head_name(model, x_te[:8]),
                    amp.DistillConfig(epochs=distill_epochs))
        acc2 = amp.accuracy(student, x_te, y_te)
        p1, f1 = amp.count_params(student), amp.count_flops(student, x_te)
        lat1 = ort_p50_ms(student, 64, runs)
        row = (de, r.widths_after, 1 - p1 / p0, 1 - f1 / f0, acc1, acc2, wall, lat1, rise)
        print(f"  {rise:7s} {de:<7g} {str(r.widths_after):22s} -{row[2] * 100:4.1f} %  -{row[3] * 100:4.1f} %  "
              f"{acc1 * 100:6.2f} %   {acc2 * 100:6.2f} %     {wall:6.2f}    {lat1 * 1e3:6.1f}")
        if acc0 - acc2 <= 0.01 and (best is None or row[2] > best[2]):
            best = row
    if best:
        print(f"  best within 1 point: {best[8]} rise, dE {best[0]:g}: params -{best[2] * 100:.1f} %, "
              f"FLOPs -{best[3] * 100:.1f} %, "
              f"accuracy {acc0 * 100:.2f} -> {best[5] * 100:.2f} %, search {best[6]:.2f} s, "
              f"ORT p50 {lat0 * 1e3:.1f} -> {best[7] * 1e3:.1f} us")
    else:
        print("  no dE kept the accuracy drop within 1 point after recovery")


def finn_compare(d: dict[str, Any], out: Path, epochs: int, distill_epochs: int) -> None:
    from hwkit.api import compile_model
    from hwkit.models.mlp import build_qmlp

    kw = {"in_features": 64, "hidden": [256, 128, 64, 32], "out_features": 10, "weight_bits": 2, "act_bits": 2}
    torch.manual_seed(0)
    t0 = time.perf_counter()
    m = train_classifier(build_qmlp(**kw), *d["train"], epochs=epochs, lr=5e-3)
    x_te, y_te = d["test"]
    acc0 = amp.accuracy(m, x_te, y_te)
    print(f"\nCQMLP topology 64-256-128-64-32-10 w2a2 on digits: trained {epochs} epochs in "
          f"{time.perf_counter() - t0:.1f} s, test accuracy {acc0 * 100:.2f} %")
    out.mkdir(parents=True, exist_ok=True)
    base = {"hwkit_checkpoint": 1, "arch": "qmlp", "input_shape": [1, 64], "input_dtype": "UINT8",
            "golden_inputs": d["val"][0][:32]}
    torch.save({**base, "arch_kwargs": kw, "state_dict": m.state_dict()}, out / "cqmlp.pt")
    chosen = None
    for de in (3e-2, 1e-2, 3e-3):
        t0 = time.perf_counter()
        r = amp.amp_search(m, amp.batches(*d["train"], 64), amp.batches(*d["val"], 64),
                           amp.AmpConfig(delta_e=de, batch_size=64))
        search_s = time.perf_counter() - t0
        student = copy.deepcopy(r.model)
        amp.distill(student, m, d["train"][0], d["val"][0], amp.head_name(m, x_te[:8]),
                    amp.DistillConfig(epochs=distill_epochs))
        acc = amp.accuracy(student, x_te, y_te)
        print(f"  dE {de:g}: widths {r.widths_after}, search {search_s:.1f} s, accuracy after prune "
              f"{amp.accuracy(r.model, x_te, y_te) * 100:.2f} %, after distillation {acc * 100:.2f} %")
        if acc0 - acc <= 0.01:
            chosen = (de, r, student, acc)
            break
    if chosen is None:
        print("  no dE within 1 point of the unpruned accuracy; FINN comparison skipped")
        return
    de, r, student, acc = chosen
    torch.save({**base, "arch_kwargs": {**kw, "hidden": r.widths_after}, "state_dict": student.state_dict()},
               out / "cqmlp_pruned.pt")
    for fps in (None, 100_000.0):
        res = {}
        for tag in ("cqmlp", "cqmlp_pruned"):
            t0 = time.perf_counter()
            rep = compile_model(out / f"{tag}.pt", "zcu104", out / f"build_{tag}_{fps or 'min'}", target_fps=fps)
            res[tag] = {k: v.used.value for k, v in rep.resources.items()}
            print(f"  {tag} (target fps {fps or 'none: PE=SIMD=1'}): compiled in {time.perf_counter() - t0:.1f} s; "
                  f"FINN estimate {json.dumps(res[tag])}")
        for k in ("LUT", "BRAM_18K"):
            a, b = res["cqmlp"].get(k), res["cqmlp_pruned"].get(k)
            if a:
                print(f"  {k}: {a:,.0f} -> {b:,.0f} ({(1 - b / a) * 100:.1f} % less) at accuracy "
                      f"{acc0 * 100:.2f} -> {acc * 100:.2f} % (dE {de:g}, target fps {fps or 'none'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs, ΔE values and timing runs")
    ap.add_argument("--no-finn", action="store_true", help="skip the FINN comparison")
    ap.add_argument("--out", default="build/amp_bench")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = digits_splits(0)
    deltas = [1e-2, 3e-2] if args.quick else [3e-3, 1e-2, 3e-2]
    runs = 500 if args.quick else 2000
    dist = 15 if args.quick else 30
    torch.manual_seed(0)
    vit = train_classifier(TinyTransformer("vit", dim=32, hidden=64, depth=4), *d["train"], epochs=25)
    sweep("ViT (timm structure, 4 blocks, dim 32, MLP 64)", vit, d, deltas, dist, runs)
    torch.manual_seed(0)
    mlp = train_classifier(float_mlp(64, (128, 64), 10), *d["train"], epochs=40)
    sweep("float MLP 64-128-64-10", mlp, d, deltas, dist, runs)
    if not args.no_finn:
        finn_compare(d, Path(args.out), 20 if args.quick else 40, dist)


if __name__ == "__main__":
    main()
