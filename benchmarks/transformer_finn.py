"""A quantised transformer encoder on the FPGA (finn-plus's attention layers) beside ONNX Runtime CPU:
dense vs AMP-pruned vs AMP-pruned + ShiftAdd power-of-two weights.

    .venv/bin/python benchmarks/transformer_finn.py [--epochs 10] [--dim 16] [--heads 1] [--layers 1] [--hidden 32]
        [--remove 50%] [--shift-epochs 3] [--target zcu104] [--target-fps 100000] [--skip-cpu]
        [--out build/transformer_finn] [--json out.json]

The model is hwkit's ``encoder`` architecture (hwkit/models/encoder.py): scikit-learn digits as 8 tokens (image
rows of 8 pixels, UINT5) plus a one-hot position, a QuantLinear embedding, ``--layers`` post-norm encoder blocks
(Brevitas QuantMultiheadAttention, residual QuantEltwiseAdd, BatchNorm, QuantLinear-QuantReLU-QuantLinear FFN) at
4-bit weights and activations, and a QuantLinear head on the flattened tokens. It is trained here (Adam, cosine,
``--epochs``; 80/20 split, seed 0), then:

* ``amp``: ``hwkit prune --remove`` (AMP on the FFN hidden neurons, label-free entropy criterion);
* ``amp+shift``: the pruned model rebuilt with ShiftAdd power-of-two weights in the encoder blocks (exponents
  0..2 on the INT4 grid, hwkit.compress.shiftadd.pow2) and fine-tuned for ``--shift-epochs`` (QAT).

Each variant is compiled with ``hwkit.api.compile_model`` for ``--target`` (flow finn-transformer: every hand-off
verified on the golden batch; finn-plus estimates) and for ``cpu`` (ONNX Runtime, QCDQ; measured here). Printed per
variant: test accuracy (PyTorch), FFN widths, LUT/BRAM_18K/DSP/URAM, fps and latency (finn-plus estimates), PL
power and energy per inference (hwkit's analytical model), and ORT CPU latency/throughput/energy (measured on
this machine, so load from other processes shows in them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _percent(text: str) -> str:
    return text if text.endswith("%") else f"{float(text) * 100:g}%"


def make_models(args: argparse.Namespace, out: Path) -> dict[str, dict[str, Any]]:
    """Train the dense encoder, prune it with AMP, make the shift variant; checkpoints under ``out``."""
    import numpy as np
    import torch

    from hwkit.cli import main as hwkit_main
    from hwkit.models.encoder import accuracy, build_encoder, checkpoint, digits_tokens, train_encoder

    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits_tokens()
    kw = {"tokens": 8, "features": 8, "dim": args.dim, "heads": args.heads, "layers": args.layers,
          "hidden": args.hidden, "norm": "batch"}
    dense = train_encoder(build_encoder(**kw), xtr, ytr, epochs=args.epochs)
    golden = xte[:32]
    models: dict[str, dict[str, Any]] = {}
    path = out / "dense.pt"
    torch.save(checkpoint(dense, kw, golden), path)
    models["dense"] = {"path": path, "accuracy": accuracy(dense, xte, yte), "hidden": [args.hidden] * args.layers}

    np.save(out / "calib_x.npy", xtr.numpy())
    np.save(out / "calib_y.npy", ytr.numpy())
    path = out / "amp.pt"
    rc = hwkit_main(["prune", str(out / "dense.pt"), "--calib", str(out / "calib_x.npy"), "--labels",
                     str(out / "calib_y.npy"), "--remove", _percent(args.remove), "--out", str(path), "--quiet"])
    if rc != 0:
        raise SystemExit(f"hwkit prune failed ({rc})")
    ck = torch.load(path, weights_only=True)
    pruned = build_encoder(**ck["arch_kwargs"])
    pruned.load_state_dict(ck["state_dict"])
    pruned.eval()
    models["amp"] = {"path": path, "accuracy": accuracy(pruned, xte, yte), "hidden": list(ck["arch_kwargs"]["hidden"])}

    skw = {**ck["arch_kwargs"], "weights": "pow2"}
    shift = build_encoder(**skw)
    missing = shift.load_state_dict(ck["state_dict"], strict=False)
    shift = train_encoder(shift, xtr, ytr, epochs=args.shift_epochs, lr=1e-3)
    path = out / "amp_shift.pt"
    torch.save(checkpoint(shift, skw, golden), path)
    models["amp+shift"] = {"path": path, "accuracy": accuracy(shift, xte, yte), "hidden": list(skw["hidden"]),
                           "state_keys_not_loaded": sorted(missing.missing_keys)}
    return models


def _q(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def fpga_row(rep: dict[str, Any]) -> dict[str, Any]:
    res = {k: _q(rep, "resources", k, "used", "value") for k in ("LUT", "BRAM_18K", "DSP", "URAM")}
    energy = {e["name"]: e["value"] for e in rep.get("energy", [])}
    mvau = [(layer["name"], layer.get("weight_dtype")) for layer in rep["layers"] if layer["op"].startswith("MVAU")]
    no_model = sorted({layer["op"] for layer in rep["layers"]
                       if all(_q(layer, "resources", k, "value") in (0, None) for k in ("LUT", "BRAM_18K", "DSP"))})
    return {**res, "fps": _q(rep, "performance", "throughput_fps", "value"),
            "latency_ms": _q(rep, "performance", "latency_ms", "value"), "pl_power_w": energy.get("PL power"),
            "pl_energy_mj_streaming": energy.get("PL energy, streaming"),
            "pl_energy_mj_single": energy.get("PL energy, single-shot"), "fits": rep.get("fits"),
            "verified": all(v["ok"] for v in rep["verification"]),
            "int_exact": rep["verification"][-1].get("int_exact"), "mvau_weight_dtypes": mvau,
            "ops_with_zero_estimate": no_model}


def cpu_row(rep: dict[str, Any]) -> dict[str, Any]:
    p = rep["performance"]
    return {"latency_p50_ms": _q(p, "latency_p50_ms", "value"),
            "throughput_b1": _q(p, "throughput_b1_samples_per_s", "value"),
            "throughput_best": _q(p, "throughput_samples_per_s", "value"),
            "energy_b1_mj": _q(p, "energy_per_inference_b1_mj", "value"),
            "verified": all(v["ok"] for v in rep["verification"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--remove", default="50%")
    ap.add_argument("--shift-epochs", type=int, default=3)
    ap.add_argument("--target", default="zcu104")
    ap.add_argument("--target-fps", type=float, default=100000)
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--out", default="build/transformer_finn")
    ap.add_argument("--json")
    args = ap.parse_args()

    from hwkit.api import compile_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = make_models(args, out)
    result: dict[str, Any] = {"args": vars(args), "variants": {}}
    for name, m in models.items():
        tag = name.replace("+", "_")
        rep = compile_model(m["path"], args.target, out / f"{tag}_{args.target}", flow="finn-transformer",
                            target_fps=args.target_fps, force=True).to_json()
        row = {"accuracy": m["accuracy"], "hidden": m["hidden"], "fpga": fpga_row(rep)}
        if not args.skip_cpu:
            row["cpu"] = cpu_row(compile_model(m["path"], "cpu", out / f"{tag}_cpu", force=True).to_json())
        result["variants"][name] = row
        print(f"{name:10s} acc {m['accuracy']:.4f} hidden {m['hidden']}  {json.dumps(row['fpga'])}"
              + (f"  cpu {json.dumps(row['cpu'])}" if "cpu" in row else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
