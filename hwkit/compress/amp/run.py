"""AMP end to end: data, search, recovery, the pruned checkpoint and prune_report.{json,md} + widths SVG.

Used by ``hwkit prune`` (hwkit/compress/amp/cli.py) and by the ``prune_amp`` pass (usable in flows).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hwkit.artifact import Artifact, write_json_atomic, write_text_atomic
from hwkit.config import Context
from hwkit.data.calib import SplitData
from hwkit.data.calib import load_data as load_calib
from hwkit.errors import InputError, ModelLoadError
from hwkit.registry import register

REBUILDABLE = ("qmlp", "cqmlp", "encoder")
"""Built-in architectures whose pruned widths are described by the ``hidden`` keyword."""


TUNE_STEPS = 600
"""Default Adam steps per block of the reconstruction's gradient fit (``--reconstruct-steps``)."""
TUNE_LR = 3e-4
"""Default learning rate of that fit (``--reconstruct-lr``)."""

PruneData = SplitData
"""The splits AMP uses (calib: scoring, val: the search, test: accuracy); see :mod:`hwkit.data.calib`."""


def load_token_data(spec: str, labels: str | None = None, seed: int = 0, tokenizer_dir: Path | None = None,
                    max_length: int | None = None, model: Any = None) -> PruneData:
    """A token set (``.npz`` of named integer arrays, or a text file and the tokenizer of ``tokenizer_dir``; see
    :mod:`hwkit.data.tokens`) shuffled once with ``seed`` and split 60/20/20 (calib/val/test); the inputs are
    kept only where ``model``'s forward takes them."""
    import numpy as np

    from hwkit.data import tokens as tok

    x, y = tok.load_tokens(spec, tokenizer_dir, max_length)
    if labels is not None:
        try:
            y = np.load(labels, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read --labels ({exc})") from None
        if len(y) != len(x):
            raise InputError(f"--labels has {len(y)} entries but --calib has {len(x)} samples")
    if model is not None:
        x = tok.fit_to_model(x, model)
    return _split_tokens(x, y, seed, f"{spec} ({len(x)} token sequences, {x.tokens()} tokens, "
                                     f"inputs {', '.join(x.names)})")


def _split_tokens(x: Any, y: Any, seed: int, source: str) -> PruneData:
    import numpy as np
    import torch

    n = len(x)
    if n < 5:
        raise InputError(f"--calib: {n} samples; need at least 5 (split 60/20/20)")
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(n * 0.6), int(n * 0.8)
    yt = None if y is None else torch.tensor(np.asarray(y)[perm], dtype=torch.long)

    def part(i: int, j: int) -> Any:
        return None if yt is None else yt[i:j]

    return PruneData(x[perm[:a]], part(0, a), x[perm[a:b]], part(a, b), x[perm[b:]], part(b, n),
                     f"{source}; 60/20/20 split, seed {seed}")


def load_data(spec: str, labels: str | None = None, seed: int = 0, tokenizer_dir: Path | None = None,
              max_length: int | None = None, model: Any = None) -> PruneData:
    """A token set (a ``.txt``, a ``.npz`` with ``input_ids``, or an integer ``.npy`` for a ``model`` whose forward
    takes ``input_ids``: :func:`load_token_data`), else :func:`hwkit.data.calib.load_data` (digits, .npz of x/y,
    .npy, images, a DataLoader function)."""
    import numpy as np

    from hwkit.data import tokens as tok

    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".txt":
        return load_token_data(spec, labels, seed, tokenizer_dir, max_length, model)
    if path.is_file() and path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                has_ids = "input_ids" in z.files
        except (OSError, ValueError) as exc:
            raise InputError(f"--calib {spec}: cannot read ({exc})") from None
        if has_ids:
            return load_token_data(spec, labels, seed, tokenizer_dir, max_length, model)
    if path.is_file() and path.suffix.lower() == ".npy" and model is not None:
        names, var_kw = tok.accepted_inputs(model)
        if "input_ids" in names or var_kw:
            try:
                x = np.load(path, allow_pickle=False)
                y = None if labels is None else np.load(labels, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read calibration data ({exc})") from None
            if x.ndim == 2 and np.issubdtype(x.dtype, np.integer):  # token ids: int64 input_ids, no padding
                if y is not None and len(y) != len(x):
                    raise InputError(f"--labels has {len(y)} entries but --calib has {len(x)} samples")
                ids = np.ascontiguousarray(x.astype(np.int64))
                toks = tok.Tokens({"input_ids": ids, "attention_mask": np.ones_like(ids)},
                                  np.full(len(ids), ids.shape[1], dtype=np.int64))
                return _split_tokens(tok.fit_to_model(toks, model), y, seed,
                                     f"{path} (token ids, {len(ids)} x {ids.shape[1]}, no padding)")
    return load_calib(spec, labels, seed)




def check_data_fits(module: Any, data: PruneData, spec: str) -> None:
    """One forward of two calibration samples: data the model cannot take is bad input naming --calib."""
    import torch

    if not isinstance(data.calib_x, torch.Tensor) or not data.calib_x.is_floating_point():
        return  # token sets are checked where they are read
    try:
        with torch.no_grad():
            out = module(data.calib_x[:2])
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        text = str(exc).strip().splitlines()
        raise InputError(f"--calib {spec}: samples of shape {tuple(data.calib_x.shape[1:])} do not fit the model "
                         f"({text[0][:160] if text else type(exc).__name__})") from None
    if data.calib_y is not None and isinstance(out, torch.Tensor) and out.dim() == 2 \
            and int(data.calib_y.max()) >= out.shape[1]:
        raise InputError(f"--labels: class {int(data.calib_y.max())} but the model has {out.shape[1]} outputs")


def prune_model(module: Any, data: PruneData, cfg: Any, distill_cfg: Any = None,
                log: Any = None, warn: Any = None, extra: Any = None,
                tune_steps: int = TUNE_STEPS, tune_lr: float = TUNE_LR) -> tuple[Any, dict[str, Any]]:
    """Run AMP (and the optional recovery) on ``module``; returns the pruned model and the report dict.

    ``extra``: more unlabelled samples (a token set) for the recovery only (reconstruction and distillation train
    on the calibration split plus these; the search, early stopping and the held-out figures do not see them).
    ``tune_steps`` / ``tune_lr``: the reconstruction's block-wise gradient fit after the closed form (0: none),
    early-stopped on the validation split."""
    import torch

    from hwkit.compress.amp import search as amp

    module = module.eval()
    say = log or (lambda _s: None)
    tokens = hasattr(data.calib_x, "batch")
    calib = amp.batches(data.calib_x, data.calib_y, cfg.batch_size)
    val = amp.batches(data.val_x, data.val_y, cfg.batch_size)
    example = val[0][0]
    t0 = time.perf_counter()
    res = amp.amp_search(module, calib, val, cfg, log=say, warn=warn)
    total_s = time.perf_counter() - t0
    pruned = res.model
    acc: dict[str, float | None] = {"before": None, "after_prune": None, "after_distill": None}
    if data.test_y is not None:
        acc["before"] = amp.accuracy(module, data.test_x, data.test_y)
        acc["after_prune"] = amp.accuracy(pruned, data.test_x, data.test_y)
    agree: dict[str, Any] = {}
    ref_emb = None
    if tokens and res.pool:
        ref_emb = amp.embed_tokens(module, data.test_x, res.pool)
        agree["after_prune"] = amp.agreement(ref_emb, amp.embed_tokens(pruned, data.test_x, res.pool))
        say(f"held-out agreement after pruning: cosine {agree['after_prune']['cosine_mean']:.4f}, "
            f"top-10 overlap {agree['after_prune'].get('top10_overlap', float('nan')):.3f}")
    train_x, train_src = data.calib_x, "calibration split"
    if extra is not None and tokens:
        from hwkit.data.tokens import concat

        train_x = concat([data.calib_x, extra])
        train_src = f"calibration split + {len(extra)} --recover-calib samples"
    recon = None
    if cfg.reconstruct not in ("auto", "on", "off"):
        raise InputError(f"reconstruct must be auto, on or off, got {cfg.reconstruct!r}")
    if cfg.reconstruct == "on" or (cfg.reconstruct == "auto" and tokens):
        from hwkit.compress.amp.reconstruct import reconstruct

        t1 = time.perf_counter()
        rows = reconstruct(pruned, module, res.blocks, fit_batches(train_x), cfg.reconstruct_ridge, say,
                           tune_steps=tune_steps, tune_lr=tune_lr, val_batches=fit_batches(data.val_x))
        recon = {"ridge": cfg.reconstruct_ridge, "tune_steps": tune_steps, "tune_lr": tune_lr, "blocks": rows,
                 "seconds": time.perf_counter() - t1,
                 "data": train_src, "samples": len(train_x)}
        if ref_emb is not None:
            agree["after_reconstruct"] = amp.agreement(ref_emb, amp.embed_tokens(pruned, data.test_x, res.pool))
            say(f"held-out agreement after reconstruction: cosine {agree['after_reconstruct']['cosine_mean']:.4f}, "
                f"top-10 overlap {agree['after_reconstruct'].get('top10_overlap', float('nan')):.3f}")
        if data.test_y is not None:
            acc["after_reconstruct"] = amp.accuracy(pruned, data.test_x, data.test_y)
    distilled = None
    if distill_cfg is not None and distill_cfg.epochs > 0 and tokens and res.pool:
        student = copy.deepcopy(pruned)
        distilled = amp.distill_tokens(student, module, train_x, data.val_x, res.pool, distill_cfg,
                                       progress=lambda e, tr, va: say(f"distill epoch {e}: train loss {tr:.5f}, "
                                                                      f"held-out 1-cos {va:.5f}"))
        pruned = student
        agree["after_distill"] = amp.agreement(ref_emb, amp.embed_tokens(pruned, data.test_x, res.pool))
        if data.test_y is not None:
            acc["after_distill"] = amp.accuracy(pruned, data.test_x, data.test_y)
    elif distill_cfg is not None and distill_cfg.epochs > 0:
        student = copy.deepcopy(pruned)
        head = cfg.embed_module or amp.head_name(module, example)
        distilled = amp.distill(student, module, data.calib_x, data.val_x, head, distill_cfg,
                                lambda e, tr, va: say(f"distill epoch {e}: train MSE {tr:.5f}, held-out MSE {va:.5f}"))
        pruned = student
        if data.test_y is not None:
            acc["after_distill"] = amp.accuracy(pruned, data.test_x, data.test_y)
    with torch.no_grad():
        p0, p1 = amp.count_params(module), amp.count_params(pruned)
        f0, f1 = amp.count_flops(module, example), amp.count_flops(pruned, example)
    report = {
        "method": "amp",
        "config": asdict(cfg),
        "data": data.source,
        "blocks": [{"name": b.name, "fc1": list(b.fc1), "fc2": b.fc2, "fused_glu": b.fused_glu, "norms": list(b.norms),
                    "width_before": b.hidden, "width_after": len(k), "kept": [int(i) for i in k],
                    "ranking": [int(i) for i in o]}
                   for b, k, o in zip(res.blocks, res.keep, res.order)],
        "params": {"before": p0, "after": p1, "reduction": 1 - p1 / p0},
        "flops_per_sample": {"before": f0, "after": f1, "reduction": 1 - f1 / f0,
                             "counted_by": "torch.utils.flop_counter.FlopCounterMode (2 FLOPs per MAC)"},
        "loss": {"criterion": cfg.criterion, "before": res.loss_before, "after_search": res.loss_after},
        "embedding": res.embedding,
        "delta_e_used": res.threshold,
        "mlp_params_removed": res.mlp_removed,
        "remove": res.remove,
        "agreement": agree or None,
        "trace": [asdict(s) for s in res.trace],
        "accuracy": acc,
        "timing_s": {"score": res.score_s, "search": res.search_s, "total": total_s},
        "reconstruct": recon,
        "distill": distilled,
    }
    return pruned, report


def fit_batches(x: Any, size: int = 32) -> list[Any]:
    """All of ``x`` as model inputs for the reconstruction: token sets in batches of similar length (little
    padding), tensors in plain batches."""
    if hasattr(x, "lengths"):
        import torch

        order = torch.argsort(torch.as_tensor(x.lengths), stable=True)
        return [x[order[i:i + size]].batch() for i in range(0, len(x), size)]
    return [x[i:i + 8 * size] for i in range(0, len(x), 8 * size)]


def save_pruned(pruned: Any, report: dict[str, Any], out: Path, source: Path | None, loaded: Any) -> list[Path]:
    """Write the pruned model: a hwkit checkpoint when the input was one of a rebuildable arch (its
    ``hidden`` widths updated and checked by rebuilding), else a state dict plus ``<out>.widths.json``."""
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    widths = [b["width_after"] for b in report["blocks"]]
    written = [out]
    if loaded is not None and loaded.format == "hwkit-checkpoint" and source is not None:
        ckpt = torch.load(source, map_location="cpu", weights_only=True)
        arch = str(ckpt["arch"])
        kwargs = dict(ckpt.get("arch_kwargs", {}))
        if arch not in REBUILDABLE:
            raise ModelLoadError(f"{source}: cannot describe pruned widths of architecture '{arch}' "
                                 f"(supported: {', '.join(REBUILDABLE)})")
        kwargs["hidden"] = widths
        from hwkit.models import builder

        rebuilt = builder(arch)(**kwargs)
        sd = pruned.state_dict()
        try:
            rebuilt.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"pruned weights do not fit {arch} with hidden={widths} "
                                 f"({str(exc).splitlines()[0]})") from None
        meta = dict(ckpt.get("meta", {}))
        meta["amp"] = {"widths_before": [b["width_before"] for b in report["blocks"]], "widths_after": widths,
                       "source": str(source), "accuracy": report["accuracy"]}
        torch.save({**ckpt, "arch_kwargs": kwargs, "state_dict": sd, "meta": meta}, out)
    else:
        torch.save(pruned.state_dict(), out)
        side = out.with_suffix(".widths.json")
        write_json_atomic(side, {"widths": {b["name"]: b["width_after"] for b in report["blocks"]},
                                 "blocks": [{k: b[k] for k in ("name", "fc1", "fc2", "width_before", "width_after")}
                                            for b in report["blocks"]]})
        written.append(side)
    return written


HF_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "merges.txt",
                 "vocab.json", "sentencepiece.bpe.model", "spiece.model", "modules.json", "sentence_bert_config.json",
                 "config_sentence_transformers.json")
"""Files copied unchanged from a Hugging Face / sentence-transformers directory into the pruned one."""


def pruned_shapes(pruned: Any, report: dict[str, Any]) -> dict[str, list[int]]:
    """[out, in] of every Linear a pruned block touches (fc1, gate partner, fc2)."""
    mods = dict(pruned.named_modules())
    names = [n for b in report["blocks"] for n in (*b["fc1"], b["fc2"])]
    return {n: [int(mods[n].out_features), int(mods[n].in_features)] for n in names}


def save_pruned_hf(pruned: Any, report: dict[str, Any], out: Path, source: Path) -> list[Path]:
    """A pruned Hugging Face model as a directory that reloads: ``save_pretrained`` (config.json +
    model.safetensors) with the pruned Linear shapes recorded in config.json under ``hwkit_pruned``, plus the
    tokenizer and sentence-transformers files of ``source``. Rebuild: :func:`hwkit.load.load_hf_dir` or the
    snippet in docs/amp.md. Hidden-width norms are not supported (none in BERT-like encoders)."""
    from hwkit.load import PRUNED_KEY

    if any(b.get("norms") for b in report["blocks"]):
        raise ModelLoadError("saving a pruned Hugging Face model with hidden-width norms is not supported")
    shapes = pruned_shapes(pruned, report)
    pruned.config.update({PRUNED_KEY: {
        "linear_shapes": shapes, "widths": {b["name"]: b["width_after"] for b in report["blocks"]},
        "widths_before": {b["name"]: b["width_before"] for b in report["blocks"]},
        "source": str(source), "note": "rebuild: AutoModel.from_config, then resize these nn.Linear layers "
                                       "to [out, in] before loading model.safetensors (docs/amp.md)"}})
    try:
        pruned.save_pretrained(str(out), safe_serialization=True)
    finally:
        delattr(pruned.config, PRUNED_KEY)
    return [out / "config.json", out / "model.safetensors", *copy_side_files(source, out)]


def copy_side_files(source: Path, out: Path) -> list[Path]:
    """Copy the tokenizer and sentence-transformers files (HF_SIDE_FILES, ``1_Pooling``-style module folders)."""
    import shutil

    written = []
    for name in HF_SIDE_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
            written.append(out / name)
    for sub in sorted(source.iterdir()):
        if sub.is_dir() and sub.name[:1].isdigit() and "_" in sub.name:  # sentence-transformers modules (1_Pooling)
            shutil.copytree(sub, out / sub.name, dirs_exist_ok=True)
            written.append(out / sub.name)
    return written


def _fmt_acc(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.2f} %"


def _fmt_err(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def _fmt_mse(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """prune_report.json, prune_report.md and prune_widths.svg in ``out_dir``."""
    from hwkit.report.svg import hbar

    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = report["blocks"]
    svg = hbar([b["name"] for b in blocks], [b["width_after"] for b in blocks],
               title="AMP: kept hidden neurons per MLP block", unit="neurons",
               ref_line=max(b["width_before"] for b in blocks))
    svg_path = out_dir / "prune_widths.svg"
    write_text_atomic(svg_path, svg)
    report = {**report, "plot": svg_path.name}
    p, f, a, t = report["params"], report["flops_per_sample"], report["accuracy"], report["timing_s"]
    cfg = report["config"]
    lines = [
        "# AMP pruning report", "",
        f"Data: {report['data']}. Criterion {cfg['criterion']}, 1/τ = {cfg['temp_inv']}, ΔE = {cfg['delta_e']} "
        f"({cfg['rise']} rise), {cfg['steps']} halvings, batch {cfg['batch_size']}"
        f"{', layer-wise re-scoring' if cfg['layer_wise'] else ''}. Embedding: {report.get('embedding', 'n/a')}; "
        f"ΔE used {report.get('delta_e_used', cfg['delta_e']):.4g} nats; "
        f"{report.get('mlp_params_removed', 0) * 100:.1f} % of the MLP parameters removed"
        + (f" (target {report['remove']['target'] * 100:.1f} %)" if report.get("remove") else "") + ".", "",
        "| | before | after | reduction |", "|---|---:|---:|---:|",
        f"| parameters | {p['before']:,} | {p['after']:,} | {p['reduction'] * 100:.1f} % |",
        f"| FLOPs / sample | {f['before']:,} | {f['after']:,} | {f['reduction'] * 100:.1f} % |", "",
        f"Accuracy (test split): before {_fmt_acc(a['before'])}, after pruning {_fmt_acc(a['after_prune'])}, "
        f"after distillation {_fmt_acc(a['after_distill'])}.", "",
        f"Loss ({report['loss']['criterion']}, nats): {report['loss']['before']:.5f} before, "
        f"{report['loss']['after_search']:.5f} after the search. Time: scoring {t['score']:.2f} s, "
        f"search {t['search']:.2f} s.", "",
        "## Kept width per block", "", f"![widths]({svg_path.name})", "",
        "| block | fc1 | fc2 | width before | width after |", "|---|---|---|---:|---:|",
        *[f"| {b['name']} | {', '.join(b['fc1'])} | {b['fc2']} | {b['width_before']} | {b['width_after']} |"
          for b in blocks], "",
        "## Search trace (last block first)", "",
        "| block | probe | width | loss | rise | accepted |", "|---|---:|---:|---:|---:|---|",
        *[f"| {s['block']} | {s['step']} | {s['width']} | {s['loss']:.5f} | {s['rise']:+.5f} | "
          f"{'yes' if s['accepted'] else 'no'} |" for s in report["trace"]],
    ]
    if report.get("reconstruct"):
        r = report["reconstruct"]
        tuned = f", then {r['tune_steps']} Adam steps of fc1 + fc2 per block" if r.get("tune_steps") else ""
        lines += ["", f"## Reconstruction (closed-form re-fit of fc2, ridge {r['ridge']:g}{tuned}, {r['data']}, "
                  f"{r['seconds']:.1f} s)", "", "| block | target | rows | relative error before | after | "
                  "gradient fit: validation MSE before | after |",
                  "|---|---|---:|---:|---:|---:|---:|",
                  *[f"| {b['block']} | {b['target']} | {b['rows']:,} | {_fmt_err(b['rel_err_before'])} | "
                    f"{_fmt_err(b['rel_err_after'])} | {_fmt_mse((b.get('tune') or {}).get('val_before'))} | "
                    f"{_fmt_mse((b.get('tune') or {}).get('val_after'))} |" for b in r["blocks"]]]
        if a.get("after_reconstruct") is not None:
            lines += ["", f"Accuracy after reconstruction: {_fmt_acc(a['after_reconstruct'])}."]
    if report.get("distill"):
        d = report["distill"]
        best = (f"held-out MSE {d['best_val_mse']:.6f}" if "best_val_mse" in d
                else f"held-out 1 - cos {d['best_val_1_minus_cos']:.6f}")
        lines += ["", f"## Distillation ({d['target']})", "", f"Best epoch {d['best_epoch']}, {best}; {d['stopped']}."]
    if report.get("agreement"):
        lines += ["", "## Held-out agreement with the unpruned model (test split)", "",
                  "| | cosine mean | cosine min | top-10 neighbour overlap |", "|---|---:|---:|---:|"]
        for k, v in report["agreement"].items():
            lines.append(f"| {k.replace('_', ' ')} | {v['cosine_mean']:.4f} | {v['cosine_min']:.4f} | "
                         f"{v.get('top10_overlap', float('nan')):.3f} |")
    md = out_dir / "prune_report.md"
    js = out_dir / "prune_report.json"
    write_text_atomic(md, "\n".join(lines) + "\n")
    write_json_atomic(js, report)
    return [js, md, svg_path]


def configs_from(params: dict[str, Any]) -> tuple[Any, Any]:
    """AmpConfig and DistillConfig (or None) from flat keyword parameters (flow tables, CLI)."""
    from hwkit.compress.amp.search import AmpConfig, DistillConfig

    fields = {k for k in AmpConfig.__dataclass_fields__}
    cfg = AmpConfig(**{k: v for k, v in params.items() if k in fields and v is not None})
    epochs = int(params.get("distill_epochs") or 0)
    dcfg = DistillConfig(epochs=epochs, **{k[len("distill_"):]: v for k, v in params.items()
                                           if k.startswith("distill_") and k != "distill_epochs" and v is not None})
    return cfg, (dcfg if epochs > 0 else None)


@register("prune_amp", uses=("input_shape", "input_dtype", "arch", "arch_kwargs", "trust_pickle"))
def prune_amp(art: Artifact, ctx: Context) -> Artifact:
    """AMP adaptive MLP pruning of a hwkit checkpoint (qmlp/cqmlp): a smaller checkpoint + prune_report."""
    from hwkit.load import load_model

    if art.path is None or art.path.suffix == ".onnx":
        raise InputError("prune_amp needs a PyTorch model file (put it first in the flow)")
    params = dict(ctx.params)
    calib = params.pop("calib", None)
    if not calib:
        raise InputError("prune_amp needs a 'calib' parameter in the flow ('digits' or a .npy of inputs)")
    labels = params.pop("labels", None)
    seed = int(params.pop("seed", ctx.settings.seed))
    from hwkit.data.tokens import is_token_file

    if is_token_file(str(calib)):
        raise InputError("prune_amp in a flow takes 'digits' or a .npy; token sets (.txt/.npz) go through "
                         "`hwkit prune MODEL_DIR --calib ...`")
    loaded = load_model(art.path, ctx.settings)
    if loaded.format != "hwkit-checkpoint":
        raise InputError("prune_amp in a flow needs a hwkit checkpoint (its arch_kwargs describe the pruned "
                         "widths); use `hwkit prune` for state dicts")
    cfg, dcfg = configs_from(params)
    data = load_data(str(calib), labels, seed)
    pruned, report = prune_model(loaded.module, data, cfg, dcfg, ctx.log.info)
    out = ctx.work_dir / "pruned.pt"
    save_pruned(pruned, report, out, art.path, loaded)
    write_report(report, ctx.work_dir)
    summary = {k: report[k] for k in ("params", "flops_per_sample", "accuracy", "timing_s")}
    summary["widths"] = [b["width_after"] for b in report["blocks"]]
    summary["report"] = str((ctx.work_dir / "prune_report.json").relative_to(ctx.out_dir))
    return art.evolve(stage="model-file", path=out, amp=summary)


def report_json(report: dict[str, Any]) -> str:
    """The report without the per-neuron index lists (for --json on a terminal)."""
    drop = ("kept", "ranking")
    slim = {**report, "blocks": [{k: v for k, v in b.items() if k not in drop} for b in report["blocks"]]}
    return json.dumps(slim, indent=2, default=str)
