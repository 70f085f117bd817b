"""``hwkit quantize`` on three float models trained here: accuracy per bit width, FPGA and CPU compiles.

    .venv/bin/python benchmarks/quantize_models.py --out /tmp/qbench [--json results.json] [--skip-compile]

Models (scikit-learn digits, stratified 60/20/20 split, seed 0, one torch thread): ``mlp`` 64-64-32-10,
``cnn`` (two 3x3 conv + BatchNorm + ReLU, max-pool, 64-wide head) and ``rescnn`` (stem conv + two
residual blocks with BatchNorm and skip connections, max-pool, Linear head), trained 30 epochs with
AdamW + cosine (``hwkit.compress.amp.toy.train_classifier``).

Each is quantised with ``hwkit.compress.quantize.run.quantize_file`` (the code of ``hwkit quantize``):
w8a8 PTQ, w4a4 PTQ and w4a4 PTQ + 3 QAT epochs, w2a2 PTQ and w2a2 PTQ + 3 QAT epochs; accuracy on the
test split (360 images) and the quantisation wall time are recorded. Then the float model is compiled
for ``cpu`` (ONNX Runtime, latency at batch 1), and the w8a8 / w4a4 (QAT) / w2a2 (QAT) models for
``zcu104`` (finn-estimate: LUT, BRAM_18K, fps at the default minimal folding) and w8a8 / w4a4 for ``cpu``
(ort-cpu with 300 timed batch-1 runs; latency is the median).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

MODELS: dict[str, tuple[dict[str, Any], list[int]]] = {
    "mlp": ({"in_features": 64, "hidden": [64, 32], "out_features": 10}, [1, 64]),
    "cnn": ({}, [1, 1, 8, 8]),
    "rescnn": ({}, [1, 1, 8, 8]),
}
RUNS = [("w8a8", 8, 8, "ptq"), ("w4a4", 4, 4, "ptq"), ("w4a4+qat", 4, 4, "qat"), ("w2a2", 2, 2, "ptq"),
        ("w2a2+qat", 2, 2, "qat")]
ZCU = ("w8a8", "w4a4+qat", "w2a2+qat")
CPU = ("float", "w8a8", "w4a4+qat")


def train(name: str, out: Path, epochs: int) -> Path:
    """Train the float model ``name`` on digits and save it as a hwkit checkpoint."""
    import torch

    from hwkit.compress.amp.toy import digits_splits, train_classifier
    from hwkit.models import builder

    kw, shape = MODELS[name]
    d = digits_splits(0)
    torch.manual_seed(0)
    m = train_classifier(builder(name)(**kw), d["train"][0].reshape(-1, *shape[1:]), d["train"][1], epochs=epochs)
    path = out / f"{name}_float.pt"
    golden = d["val"][0][:32].reshape(-1, *shape[1:])
    torch.save({"hwkit_checkpoint": 1, "arch": name, "arch_kwargs": kw, "state_dict": m.state_dict(),
                "input_shape": shape, "input_dtype": "FLOAT32", "golden_inputs": golden,
                "meta": {"dataset": "sklearn-digits"}}, path)
    return path


CPU_FLOW = """
name = "ort-cpu-bench"
description = "ort-cpu with fewer timing runs (benchmarks/quantize_models.py)"
board_kinds = ["cpu"]
passes = [
    { name = "export_onnx", test_samples = 2000, lower = true },
    { name = "quantize_onnx", method = "auto" },
    "ort.session",
    { name = "ort.verify", rtol = 1e-4, min_class_agreement = 0.999, min_class_agreement_ptq = 0.98 },
    { name = "ort.measure", warmup = 20, runs = 300, batch_sizes = [1, 64], batch_runs = 10, energy_runs = 20 },
]
"""


def compile_metrics(model: Path, target: str, out: Path, flow: str | None = None) -> dict[str, Any]:
    """Compile and pick the numbers of interest from report.json."""
    from hwkit.api import compile_model
    from hwkit.errors import HwkitError

    t0 = time.perf_counter()
    try:
        rep = compile_model(model, target, out, flow=flow, force=True).to_json()
    except HwkitError as exc:  # recorded, and the other compiles go on
        return {"target": target, "error": f"{type(exc).__name__}: {exc}", "compile_s": time.perf_counter() - t0}
    perf, res = rep.get("performance", {}), rep.get("resources", {})

    def val(d: dict[str, Any], *keys: str) -> Any:
        for k in keys:
            d = d.get(k, {}) if isinstance(d, dict) else {}
        return d if not isinstance(d, dict) else None

    ok = all(v.get("ok", True) for v in rep.get("verification", []) if isinstance(v, dict))
    return {"target": target, "compile_s": time.perf_counter() - t0, "verified": ok,
            "lut": val(res, "LUT", "used", "value"), "bram_18k": val(res, "BRAM_18K", "used", "value"),
            "fps": val(perf, "throughput_fps", "value"),
            "latency_ms": val(perf, "latency_ms", "value") or val(perf, "latency_p50_ms", "value"),
            "performance": {k: v.get("value") for k, v in perf.items() if isinstance(v, dict)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="work directory (models, reports, builds)")
    ap.add_argument("--epochs", type=int, default=30, help="float training epochs")
    ap.add_argument("--qat-epochs", type=int, default=3)
    ap.add_argument("--models", default="mlp,cnn,rescnn")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--zcu", default=",".join(ZCU), help="quantised variants compiled for zcu104")
    ap.add_argument("--json")
    a = ap.parse_args()

    import torch

    from hwkit.compress.quantize.run import quantize_file
    from hwkit.config import CompileSettings

    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu_flow = out / "ort-cpu-bench.toml"
    cpu_flow.write_text(CPU_FLOW)
    results: dict[str, Any] = {}
    for name in a.models.split(","):
        src = train(name, out, a.epochs)
        res: dict[str, Any] = {"quantize": {}, "compile": {}}
        paths = {"float": src}
        for label, w, act, method in RUNS:
            q = out / f"{name}_{label}" / "q.pt"
            q.parent.mkdir(exist_ok=True)
            t0 = time.perf_counter()
            rep = quantize_file(src, CompileSettings(), {"weight_bits": w, "act_bits": act, "calib": "digits",
                                                         "method": method, "qat_epochs": a.qat_epochs}, q, q.parent)
            wall = time.perf_counter() - t0
            acc = rep["accuracy"]
            res["quantize"][label] = {"float_acc": acc["float"], "quant_acc": acc["quantized"],
                                      "drop_points": acc["drop_points"], "wall_s": wall,
                                      "quantize_s": rep["timing_s"]["quantize"],
                                      "steps": {s["step"]: s["applied"] for s in rep["steps"]},
                                      "weight_bytes": rep["weight_memory"]["quantized_bytes"],
                                      "float_weight_bytes": rep["weight_memory"]["float_bytes"]}
            paths[label] = q
            print(f"{name} {label}: float {acc['float'] * 100:.2f} % -> {acc['quantized'] * 100:.2f} % "
                  f"({acc['drop_points']:+.2f} pt drop) in {wall:.1f} s", flush=True)
        if not a.skip_compile:
            for label in [z for z in a.zcu.split(",") if z]:
                m = compile_metrics(paths[label], "zcu104", out / f"build_{name}_{label}_zcu104")
                res["compile"][f"{label}@zcu104"] = m
                print(f"{name} {label} zcu104: {m.get('error') or (m['lut'], m['bram_18k'], m['fps'], m['verified'])}",
                      flush=True)
            for label in CPU:
                m = compile_metrics(paths[label], "cpu", out / f"build_{name}_{label}_cpu", str(cpu_flow))
                res["compile"][f"{label}@cpu"] = m
                print(f"{name} {label} cpu: {m.get('error') or m['latency_ms']}", flush=True)
        results[name] = res
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
