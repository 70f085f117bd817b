"""How large a single-head quantised encoder maps through finn-plus's attention layers onto zcu104: a size sweep.

    .venv/bin/python benchmarks/transformer_sizes.py [--sizes 1x16x32x8,2x32x64x8,...] [--norm batch|layer]
        [--epochs 3] [--target zcu104] [--also kv260,u250] [--target-fps 100000] [--golden 4]
        [--timeout 2700] [--out build/transformer_sizes] [--json sizes.json]

Each size ``LxDxFxT`` is hwkit's ``encoder`` arch (hwkit/models/encoder.py) with L layers, embedding dim D, FFN
width F, T tokens, one head, 4-bit weights and activations, ``--norm`` normalisation. Tokens come from
scikit-learn's 8x8 digits (pixels 0..16, UINT5): T=8 is 8 image rows of 8 pixels, T=16 is 16 2x2 patches of
4 pixels, T=32 is 32 half-rows... (any T dividing 64: the image in raster order cut into T equal pieces),
each with its one-hot position appended. Each model is trained briefly here (Adam, cosine, ``--epochs``; accuracy
is secondary: it shows the model is not degenerate), saved as a hwkit checkpoint with ``--golden`` test samples
as its golden batch, then compiled with the CLI in a subprocess

    hwkit compile SIZE.pt --target zcu104 --flow finn-transformer --target-fps N --golden-batch G --json

time-boxed by ``--timeout`` seconds. Recorded per size: test accuracy, LUT/BRAM_18K/URAM/DSP, estimated fps and
latency, whether finn-plus's estimate fits the board, the compile wall time and peak RSS of the compile process,
every hand-off's verification, and for a size that does not compile: the exit code and hwkit's one-line error
(or "timeout after N s"). A size that does not fit ``--target`` is estimated again for each ``--also`` board.
The sweep keeps going after a failure (the sizes after it show whether the failure is a size limit).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_SIZES = "1x16x32x8,2x32x64x8,2x32x64x16,1x64x128x16,4x64x128x16,1x128x256x16,3x128x256x16"


def parse_size(text: str) -> dict[str, int]:
    """``LxDxFxT`` -> encoder arch kwargs (layers, dim, hidden, tokens)."""
    try:
        layers, dim, hidden, tokens = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"size '{text}': expected LAYERSxDIMxFFNxTOKENS, e.g. 2x32x64x16") from None
    if 64 % tokens:
        raise SystemExit(f"size '{text}': tokens must divide the 64 digit pixels")
    return {"layers": layers, "dim": dim, "hidden": hidden, "tokens": tokens}


def digits_as_tokens(tokens: int, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """Digits 8x8 as ``tokens`` tokens: rows (8), 2x2 patches (16) or raster-order pieces, one-hot positions
    appended; the same fixed 80/20 split as hwkit.models.encoder.digits_tokens."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from hwkit.models.encoder import with_positions

    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))
    img = d.images[order]  # (n, 8, 8)
    if tokens == 16:  # 2x2 patches, row-major over the 4x4 patch grid
        x = img.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 16, 4)
    else:
        x = img.reshape(-1, tokens, 64 // tokens)
    x = with_positions(torch.tensor(x, dtype=torch.float32))
    y = torch.tensor(d.target[order], dtype=torch.long)
    cut = int(0.8 * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def make_checkpoint(size: dict[str, int], args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Train the encoder of ``size`` briefly and save it as a hwkit checkpoint; returns its facts."""
    import torch

    from hwkit.models.encoder import accuracy, build_encoder, checkpoint, train_encoder

    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits_as_tokens(size["tokens"])
    kw = {**size, "features": int(xtr.shape[2]) - size["tokens"], "heads": 1, "norm": args.norm}
    t0 = time.perf_counter()
    model = train_encoder(build_encoder(**kw), xtr, ytr, epochs=args.epochs)
    train_s = time.perf_counter() - t0
    acc = accuracy(model, xte, yte)
    torch.save(checkpoint(model, kw, xte[:args.golden], {"test_accuracy": acc}), path)
    params = sum(p.numel() for p in model.parameters())
    return {"arch_kwargs": kw, "test_accuracy": acc, "train_s": round(train_s, 1), "parameters": params}


def compile_size(ckpt: Path, board: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``hwkit compile`` in a subprocess, time-boxed; returns the report's numbers or what stopped it."""
    cmd = [sys.executable, "-m", "hwkit.cli", "compile", str(ckpt), "--target", board, "--flow", "finn-transformer",
           "--out", str(out), "--force", "--target-fps", f"{args.target_fps:g}", "--golden-batch", str(args.golden),
           "--json"]
    log = out.parent / f"{out.name}.log"
    t0 = time.perf_counter()
    with open(log.with_suffix(".json"), "w", encoding="utf-8") as so, open(log, "w", encoding="utf-8") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, start_new_session=True)
        while True:  # wait4: this child's own peak RSS
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > args.timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                running = sorted(p.name for p in (out / "passes").glob("*") if p.is_dir())
                where = f" in pass {running[-1]}" if running else ""
                return {"board": board, "ok": False, "wall_s": round(time.perf_counter() - t0, 1),
                        "stopped_by": f"timeout after {args.timeout} s{where} (hwkit compile killed)"}
            time.sleep(1.0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    row: dict[str, Any] = {"board": board, "rc": rc, "wall_s": round(wall, 1),
                           "peak_rss_mib": round(usage.ru_maxrss / 1024)}
    stderr = log.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        row.update(ok=False, stopped_by=lines[-1] if lines else f"exit {proc.returncode}")
        return row
    rep = json.loads(log.with_suffix(".json").read_text(encoding="utf-8"))
    res = rep.get("resources", {})
    row.update(ok=True, fits=rep.get("fits"))
    for k in ("LUT", "BRAM_18K", "URAM", "DSP"):
        used = (res.get(k) or {}).get("used", {}).get("value")
        avail = (res.get(k) or {}).get("available", {}).get("value") if isinstance(res.get(k), dict) else None
        row[k] = used
        if avail:
            row[f"{k}_pct"] = round(100 * used / avail, 2) if used is not None else None
    perf = rep.get("performance", {})
    row["fps"] = (perf.get("throughput_fps") or {}).get("value")
    row["latency_ms"] = (perf.get("latency_ms") or {}).get("value")
    ops: dict[str, int] = {}
    for layer in rep.get("layers", []):
        ops[layer["op"]] = ops.get(layer["op"], 0) + 1
    row["hw_ops"] = ops
    row["bottleneck_layer"] = rep.get("bottleneck_layer")
    row["pass_s"] = {p["id"]: round(p["seconds"], 1) for p in rep.get("passes", []) if p.get("seconds") is not None}
    row["verification"] = [{"stage": f"{v['reference']}->{v['stage']}", "ok": v["ok"],
                            "max_abs_err": v.get("max_abs_err"), "int_exact": v.get("int_exact"),
                            "class_agreement": v.get("class_agreement")} for v in rep.get("verification", [])]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma-separated LxDxFxT (default {DEFAULT_SIZES})")
    ap.add_argument("--norm", default="batch", choices=("batch", "layer"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--target", default="zcu104")
    ap.add_argument("--also", default="kv260,u250", help="boards to try for a size that does not fit --target")
    ap.add_argument("--target-fps", type=float, default=100000)
    ap.add_argument("--golden", type=int, default=4, help="golden-batch samples verified at every hand-off")
    ap.add_argument("--timeout", type=int, default=2700, help="seconds per compile (4x64x128x16: 1,751 s here)")
    ap.add_argument("--out", default="build/transformer_sizes")
    ap.add_argument("--json")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: list[dict[str, Any]] = []
    for text in args.sizes.split(","):
        size = parse_size(text.strip())
        tag = f"{text.strip()}-{args.norm}"
        ckpt = out / f"{tag}.pt"
        row: dict[str, Any] = {"size": text.strip(), **make_checkpoint(size, args, ckpt)}
        row["compile"] = [compile_size(ckpt, args.target, out / f"build_{tag}_{args.target}", args)]
        first = row["compile"][0]
        if first.get("ok") and not first.get("fits"):
            for board in [b for b in args.also.split(",") if b]:
                row["compile"].append(compile_size(ckpt, board, out / f"build_{tag}_{board}", args))
        results.append(row)
        print(json.dumps(row, default=str), flush=True)
        if args.json:  # rewritten after every size, so a killed sweep keeps what it measured
            Path(args.json).write_text(json.dumps({"args": vars(args), "sizes": results}, indent=1, default=str),
                                       encoding="utf-8")


if __name__ == "__main__":
    main()
