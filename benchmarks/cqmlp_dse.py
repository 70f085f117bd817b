"""CQMLP design-space exploration: bit width {2,3,4} x depth, accuracy vs FINN/QONNX inference cost.

    .venv/bin/python benchmarks/cqmlp_dse.py [--seconds 60] [--epochs 4] [--max-train-windows 150000]

Each design is trained on the same synthetic Car-Hacking-style data (time split), exported to QONNX
with a UINT8 input, and costed with ``qonnx.util.inference_cost`` (weight memory bits, output
(activation) memory bits, bit-operations; zero weights discounted, as FINN's cost does by default).
The paper (FPL'23) reports a normalised inference cost of 0.27 / 0.67 / 1.0 for 2 / 3 / 4 bits;
this script prints ours under several normalisations, since the paper does not say how it combined
memory and operations. Pareto-optimal designs (no other design is both cheaper and more accurate)
are marked. Runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from hwkit.compress.cqmlp.train import TrainConfig, prepare_data, train_cqmlp


def qonnx_cost(model, window: int, workdir: Path, discount_sparsity: bool = True) -> dict[str, float]:
    """inference_cost of the QONNX export of ``model`` (input annotated UINT8)."""
    import torch
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model
    from qonnx.util.inference_cost import inference_cost

    path = workdir / "model.onnx"
    model.eval()
    with torch.no_grad():
        export_qonnx(model, torch.zeros(1, 10 * window), str(path))
    mw = cleanup_model(ModelWrapper(str(path)))
    mw.set_tensor_datatype(mw.graph.input[0].name, DataType["UINT8"])
    res = inference_cost(mw, discount_sparsity=discount_sparsity)["total_cost"]
    return {k: float(res[k]) for k in ("total_bops", "total_macs", "total_mem_w_bits", "total_mem_o_bits")}


def pareto(rows: list[dict]) -> None:
    """Mark rows that no other row beats on both cost and accuracy."""
    for r in rows:
        r["pareto"] = not any(o is not r and o["cost"] <= r["cost"] and o["acc"] >= r["acc"]
                              and (o["cost"] < r["cost"] or o["acc"] > r["acc"]) for o in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="synthetic seconds per file")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-train-windows", type=int, default=150_000)
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--depths", default="4,2")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t_all = time.perf_counter()
    base = TrainConfig(epochs=args.epochs, batch_size=512, lr=1e-3, patience=0,
                       max_train_windows=args.max_train_windows, seed=args.seed)
    split, desc = prepare_data(None, args.seconds, base)
    print(f"data: {desc['name']}, time split {split.sizes()} (test classes {split.test.class_counts()})")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for depth in (int(d) for d in args.depths.split(",")):
            for bits in (int(b) for b in args.bits.split(",")):
                cfg = replace(base, bits=bits, depth=depth)
                t0 = time.perf_counter()
                res = train_cqmlp(split, cfg, Path(tmp) / f"w{bits}d{depth}.pt", desc)
                from hwkit.config import CompileSettings
                from hwkit.load import load_model

                model = load_model(res.checkpoint, CompileSettings()).module
                cost = qonnx_cost(model, cfg.window, Path(tmp))
                dense = qonnx_cost(model, cfg.window, Path(tmp), discount_sparsity=False)
                test = res.summary["metrics"]["test"]
                rows.append({"bits": bits, "depth": depth, "acc": test["accuracy"], "errors": test["misclassified"],
                             "n": test["samples"], **cost, "dense_bops": dense["total_bops"],
                             "dense_mem_w_bits": dense["total_mem_w_bits"], "train_s": time.perf_counter() - t0})
                print(f"  w{bits}a{bits} depth {depth}: test accuracy {test['accuracy'] * 100:.3f}% "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)

    ref = next((r for r in rows if r["bits"] == 4 and r["depth"] == 4), rows[-1])
    for r in rows:
        r["n_bops"] = r["total_bops"] / ref["total_bops"]
        r["n_mem"] = r["total_mem_w_bits"] / ref["total_mem_w_bits"]
        r["n_dense"] = (r["dense_bops"] / ref["dense_bops"] + r["dense_mem_w_bits"] / ref["dense_mem_w_bits"]) / 2
        r["cost"] = (r["n_bops"] + r["n_mem"]) / 2
    pareto(rows)
    print()
    print("| bits | depth | test acc % | errors / test | kBOPs | weight kbit | act kbit | norm BOPs | norm w-mem "
          "| norm cost (BOPs+mem)/2 | dense norm cost | Pareto |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bits']} | {r['depth']} | {r['acc'] * 100:.3f} | {r['errors']} / {r['n']:,} | "
              f"{r['total_bops'] / 1e3:,.0f} | {r['total_mem_w_bits'] / 1e3:,.1f} | "
              f"{r['total_mem_o_bits'] / 1e3:,.2f} | "
              f"{r['n_bops']:.2f} | {r['n_mem']:.2f} | {r['cost']:.2f} | {r['n_dense']:.2f} | "
              f"{'yes' if r['pareto'] else ''} |")
    print("\npaper (depth 4): normalised cost 2-bit 0.27, 3-bit 0.67, 4-bit 1.0; "
          "errors 147 / 74 / 31 of 180,000 test samples")
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
