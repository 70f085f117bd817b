"""ShiftAdd reparameterisation end to end: convert/quantise, (fine-tune), check, export, report.

Used by ``hwkit shiftadd`` (hwkit/compress/shiftadd/cli.py) and by the ``shiftadd`` pass (usable in flows). Writes the
reparameterised model with *materialised* weights (exact powers of two for q/ps, dequantised BCQ weights for
bcq) in the original architecture, ``<out>.codes.pt`` (the integer codes: sign/shift or binary codes + scales),
``shiftadd.onnx`` (checked against PyTorch with ONNX Runtime), for q/ps ``shiftadd_qonnx.onnx`` (integer
weights as QONNX Quant nodes), and ``shiftadd_report.{json,md}``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from hwkit.artifact import Artifact, write_json_atomic, write_text_atomic
from hwkit.config import Context
from hwkit.errors import InputError, VerificationError
from hwkit.registry import register

MODES = ("q", "ps", "bcq", "moe")
ORT_TOL = 1e-4
"""Largest |PyTorch - ONNX Runtime| accepted on the test inputs (fp32 summation order differs)."""


def _acc(model: Any, x: Any, y: Any) -> float | None:
    import torch

    if y is None:
        return None
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _rel(a: Any, b: Any) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _note_dense_convs(model: Any, report: dict[str, Any], say: Any, why: str) -> None:
    """Record (and log) the plain nn.Conv2d layers of ``model`` that stay dense fp32."""
    from hwkit.compress.shiftadd.shift import conv_names

    names = conv_names(model)
    if names:
        report["dense_conv_layers"] = {"names": names, "reason": why}
        say(f"{len(names)} Conv2d layer(s) left dense fp32 ({why}): {', '.join(names)}")


def reparameterise(module: Any, data: Any, params: dict[str, Any], log: Any = None) -> tuple[Any, dict[str, Any]]:
    """Apply ``params['mode']`` to a copy of ``module``; returns (model, report). BCQ layers run dense (exact)
    throughout, so the reported accuracy and agreement are the model's, not the int8 fast path's."""
    from hwkit.compress.shiftadd import bcq

    with bcq.forward_mode("off"):
        return _reparameterise(module, data, params, log)


def _reparameterise(module: Any, data: Any, params: dict[str, Any], log: Any = None) -> tuple[Any, dict[str, Any]]:
    import torch

    from hwkit.energy import ops as opcost

    say = log or (lambda _s: None)
    mode = params.get("mode", "ps")
    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got '{mode}'")
    epochs = int(params.get("epochs") or 0)
    if epochs > 0 and data.calib_y is None:
        raise InputError("fine-tuning (--epochs > 0) needs labels (--labels, or --calib digits)")
    base = module.eval()
    model = copy.deepcopy(base)
    test_x = data.test_x if data.test_x is not None else data.val_x
    report: dict[str, Any] = {"mode": mode, "data": data.source}
    tokens = hasattr(data.calib_x, "batches")
    if tokens and mode == "moe":
        raise InputError("--mode moe needs a classifier and labels; token sets go with --mode bcq, q or ps")
    t0 = time.perf_counter()
    if mode in ("q", "ps"):
        from hwkit.compress.shiftadd import shift

        cfg = shift.ShiftConfig(mode=mode, weight_bits=int(params.get("weight_bits") or 5))
        shift.convert(model, cfg)
        _note_dense_convs(model, report, say, "padding_mode other than 'zeros'")
        report["config"] = {"mode": mode, "weight_bits": cfg.weight_bits, "p_range": [cfg.pmin, 0]}
        report["accuracy_converted"] = _acc(model, data.test_x, data.test_y)
        if epochs > 0:
            ft = shift.FinetuneConfig(epochs=epochs, lr=float(params.get("lr") or 1e-3),
                                      optimizer=str(params.get("optimizer") or "radam"),
                                      seed=int(params.get("seed") or 0))
            losses = shift.finetune(model, data.calib_x, data.calib_y, ft)
            say(f"fine-tuned {epochs} epochs ({ft.optimizer}, lr {ft.lr}): loss {losses[0]:.4f} -> {losses[-1]:.4f}")
            report["finetune"] = {"epochs": epochs, "lr": ft.lr, "optimizer": ft.optimizer, "loss": losses}
        layers = []
        for n, m in model.named_modules():
            if shift.is_shift(m):
                sign, p = m.codes()
                w0 = base.get_submodule(n).weight.detach()
                layers.append({"name": n, "shape": list(w0.shape), "zero_fraction": float((sign == 0).float().mean()),
                               "p_min_used": int(p[sign != 0].min()) if bool((sign != 0).any()) else None,
                               "weight_rel_error": _rel(m.quantised_weight().detach(), w0)})
        report["layers"] = layers
    elif mode == "bcq":
        from hwkit.compress.shiftadd import bcq

        _note_dense_convs(model, report, say, "bcq is Linear-only")
        bcfg = bcq.BCQConfig(bits=int(params.get("bits", 3)), group_rows=int(params.get("group_rows") or 8),
                             rounds=int(params.get("rounds", 20)),
                             apot_terms=None if params.get("float_scales") else int(params.get("apot_terms") or 3),
                             compensate=not params.get("no_compensate", False))
        skip = tuple(n for n, _m in model.named_modules() if tokens and "pooler" in n.split("."))
        if skip:
            say(f"left dense (a pooler: not part of the token embedding): {', '.join(skip)}")
        model, rep = bcq.quantise_model(model, data.calib_x, bcfg, skip)
        report.update(config=rep["config"], layers=rep["layers"], avg_bits=rep["avg_bits"], memory=rep["memory"])
    else:
        from hwkit.compress.shiftadd import moe as shift_moe

        _note_dense_convs(model, report, say, "moe is Linear-only")
        model, rep = shift_moe.reparameterise(model, data, params, say)
        report.update(rep)
    report["time_s"] = time.perf_counter() - t0
    model.eval()
    if tokens:
        from hwkit.compress.amp import search as amp

        pool = str(params.get("pool") or "mean")
        e0, e1 = amp.embed_tokens(base, test_x, pool), amp.embed_tokens(model, test_x, pool)
        report["accuracy"] = {"before": None, "after": None}
        report["output_rel_error"] = _rel(e1, e0)
        report["agreement"] = {**amp.agreement(e0, e1), "embedding": f"{pool}-pooled last hidden state"}
        report["energy"] = opcost.energy_report(opcost.model_ops(base, None), opcost.model_ops(model, None))
        return model, report
    with torch.no_grad():
        y0, y1 = base(test_x), model(test_x)
    report["accuracy"] = {"before": _acc(base, data.test_x, data.test_y),
                          "after": _acc(model, data.test_x, data.test_y)}
    report["output_rel_error"] = _rel(y1, y0)
    report["energy"] = opcost.energy_report(opcost.model_ops(base, test_x), opcost.model_ops(model, test_x))
    return model, report


def codes_of(model: Any) -> dict[str, Any]:
    """The integer form of each reparameterised layer (tensors only: loadable with weights_only=True)."""
    from hwkit.compress.shiftadd import bcq, shift

    out: dict[str, Any] = {}
    for n, m in model.named_modules():
        if shift.is_shift(m):
            sign, p = m.codes()
            out[n] = {"sign": sign, "p": p}
        elif bcq.is_bcq(m):
            out[n] = {"codes": m.codes, "alpha": m.alpha, "in_features": m.in_features, "group_rows": m.group_rows,
                      "apot_terms": m.apot_terms}
            if m.act_absmax is not None:  # the calibration input range the int8 forward scales by
                out[n]["act_absmax"] = m.act_absmax
    return out


def save_hf(model: Any, report: dict[str, Any], out: Path, source: Path) -> list[Path]:
    """A reparameterised Hugging Face model as a directory that ``AutoModel.from_pretrained`` reloads (weights
    materialised in the original architecture), the integer codes in ``shiftadd.codes.pt``, and the tokenizer /
    sentence-transformers files of ``source``. No ONNX export for token models (use ``hwkit compile``)."""
    import torch

    from hwkit.compress.amp.run import copy_side_files
    from hwkit.compress.shiftadd import export as shift_export

    shift_export.dense_copy(model).save_pretrained(str(out), safe_serialization=True)
    torch.save(codes_of(model), out / "shiftadd.codes.pt")
    report["onnx"] = None
    return [out / "config.json", out / "model.safetensors", out / "shiftadd.codes.pt", *copy_side_files(source, out)]


def save_state(model: Any, report: dict[str, Any], out: Path) -> list[Path]:
    """A token model built with --arch: its materialised state dict (original architecture) and the codes; no
    ONNX export (the model takes several integer inputs)."""
    import torch

    from hwkit.compress.shiftadd import export as shift_export

    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(codes_of(model), out.with_suffix(".codes.pt"))
    torch.save(shift_export.dense_copy(model).state_dict(), out)
    report["onnx"] = None
    return [out, out.with_suffix(".codes.pt")]


def save_outputs(model: Any, report: dict[str, Any], out: Path, source: Path | None, loaded: Any,
                 shape: tuple[int, ...], check_x: Any) -> list[Path]:
    """Model (materialised, original architecture), codes, ONNX (+ QONNX) and the ORT check (BCQ layers dense)."""
    from hwkit.compress.shiftadd import bcq

    with bcq.forward_mode("off"):
        return _save_outputs(model, report, out, source, loaded, shape, check_x)


def _save_outputs(model: Any, report: dict[str, Any], out: Path, source: Path | None, loaded: Any,
                  shape: tuple[int, ...], check_x: Any) -> list[Path]:
    import numpy as np
    import torch

    from hwkit.compress.shiftadd import export as shift_export

    out.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = out.parent / "shiftadd.onnx"
    shift_export.export_onnx(model, shape, onnx_path)
    with torch.no_grad():
        ref = model(check_x).numpy()
    got = shift_export.run_ort(onnx_path, check_x.numpy())
    diff = float(np.abs(ref - got).max())
    report["onnx"] = {"file": onnx_path.name, "ort_max_abs_diff": diff, "samples": len(check_x),
                      "argmax_agree": float((ref.argmax(1) == got.argmax(1)).mean()),
                      "note": "weights materialised as fp32 (exact powers of two / dequantised BCQ values)"}
    if diff > ORT_TOL:
        raise VerificationError(f"ONNX Runtime output differs from the PyTorch shift model by {diff:.3g} "
                                f"(> {ORT_TOL})")
    written = [out, out.with_suffix(".codes.pt"), onnx_path]
    if report["mode"] in ("q", "ps"):  # moe: the router's data-dependent select is no FINN layer
        qpath = out.parent / "shiftadd_qonnx.onnx"
        widths = shift_export.to_qonnx(onnx_path, model, qpath)
        qdiff = float(np.abs(ref[:8] - shift_export.run_qonnx(qpath, check_x[:8].numpy())).max())
        report["qonnx"] = {"file": qpath.name, "layers": widths, "qonnx_exec_max_abs_diff": qdiff,
                           "inference_cost": shift_export.qonnx_cost(qpath)}
        written.append(qpath)
    torch.save(codes_of(model), out.with_suffix(".codes.pt"))
    export = shift_export.dense_copy(model)
    sd = export.state_dict()
    if loaded is not None and loaded.format == "hwkit-checkpoint" and source is not None:
        ckpt = torch.load(source, map_location="cpu", weights_only=True)
        meta = dict(ckpt.get("meta", {}))
        meta["shiftadd"] = {"mode": report["mode"], "accuracy": report["accuracy"], "source": str(source)}
        torch.save({**ckpt, "state_dict": sd, "meta": meta}, out)
    else:
        torch.save(sd, out)
    return written


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """shiftadd_report.json and shiftadd_report.md in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    a, e = report["accuracy"], report["energy"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v * 100:.2f} %"

    lines = [f"# ShiftAdd reparameterisation report ({report['mode']})", "",
             f"Data: {report['data']}. Config: `{json.dumps(report.get('config', {}))}`.", "",
             f"Accuracy (test split): before {pct(a['before'])}, after {pct(a['after'])}"
             + (f" (converted, before fine-tuning: {pct(report['accuracy_converted'])})"
                if "accuracy_converted" in report else "") + ".",
             f"Relative output error vs the original model: {report['output_rel_error']:.4f}.", "",
             f"## Energy ({e['kind']}; {e['scope']})", "",
             f"Unit costs: {e['table']['node']}.", "",
             "| | fp mult | fp add | int add | shift | LUT query | energy / sample |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for k in ("dense", "reparameterised"):
        o = e[k]["ops"]
        lines.append(f"| {k} | {o['fp_mult']:,} | {o['fp_add']:,} | {o['int_add']:,} | {o['shift']:,} | "
                     f"{o['lut_query']:,} | {e[k]['energy_pj'] / 1e3:.2f} nJ |")
    lines += ["", f"Saving vs dense: **{e['saving'] * 100:.1f} %** (analytical estimate).", "", "## Layers", ""]
    if report.get("layers"):
        keys = [k for k in report["layers"][0] if k not in ("name",)]
        lines += ["| layer | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for lay in report["layers"]:
            lines.append(f"| {lay['name']} | " + " | ".join(
                f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in lay.items() if k != "name") + " |")
    if "dense_conv_layers" in report:
        d = report["dense_conv_layers"]
        lines += ["", f"Conv2d layers left dense fp32 ({d['reason']}): {', '.join(d['names'])}."]
    if "memory" in report:
        m = report["memory"]
        lines += ["", f"Weight memory of the quantised layers: {m['weight_bytes']:,.0f} B (codes + fp32 scales) vs "
                  f"{m['fp32_bytes']:,} B fp32: **{m['reduction_vs_fp32'] * 100:.1f} % less** ({m['note']})."]
    if report.get("agreement"):
        g = report["agreement"]
        lines += ["", f"Held-out agreement ({g['embedding']}, {g['samples']} test samples): cosine "
                  f"{g['cosine_mean']:.4f} (min {g['cosine_min']:.4f}), top-10 neighbour overlap "
                  f"{g.get('top10_overlap', float('nan')):.3f}."]
    if report.get("onnx"):
        o = report["onnx"]
        lines += ["", f"ONNX Runtime check: max |PyTorch - ORT| = {o['ort_max_abs_diff']:.3g} on {o['samples']} "
                  f"samples ({o['note']})."]
    if "qonnx" in report:
        lines += ["QONNX integer weights: " + ", ".join(f"{n}: INT{v['bit_width']} x {v['scale']:.3g}"
                                                         for n, v in report["qonnx"]["layers"].items())
                  + f"; qonnx execution max diff {report['qonnx']['qonnx_exec_max_abs_diff']:.3g}."]
        c = report["qonnx"]["inference_cost"]
        lines += [f"qonnx inference_cost: {c.get('total_macs', 0):,.0f} MACs, {c.get('total_mem_w_bits', 0):,.0f} "
                  f"weight bits, {c.get('total_bops', 0):,.0f} bit-operations (FLOAT32 activations x integer "
                  "weights; not a FINN resource estimate)."]
    md, js = out_dir / "shiftadd_report.md", out_dir / "shiftadd_report.json"
    write_text_atomic(md, "\n".join(lines) + "\n")
    write_json_atomic(js, report)
    return [js, md]


@register("shiftadd", uses=("input_shape", "input_dtype", "arch", "arch_kwargs", "trust_pickle"))
def shiftadd_pass(art: Artifact, ctx: Context) -> Artifact:
    """ShiftAdd reparameterisation (DeepShift q/ps, ShiftAddLLM bcq) of a float model: shiftadd.pt + report."""
    from hwkit.compress.amp.run import load_data
    from hwkit.load import load_model

    if art.path is None or art.path.suffix == ".onnx":
        raise InputError("shiftadd needs a PyTorch model file (put it first in the flow)")
    params = dict(ctx.params)
    calib = params.pop("calib", None)
    if not calib:
        raise InputError("shiftadd needs a 'calib' parameter in the flow ('digits' or a .npy of inputs)")
    from hwkit.data.tokens import is_token_file

    if is_token_file(str(calib)):
        raise InputError("the shiftadd pass takes 'digits' or a .npy; token sets (.txt/.npz) go through "
                         "`hwkit shiftadd MODEL_DIR --calib ...`")
    loaded = load_model(art.path, ctx.settings)
    data = load_data(str(calib), params.pop("labels", None), int(params.get("seed", ctx.settings.seed)))
    model, report = reparameterise(loaded.module, data, params, ctx.log.info)
    shape = loaded.input_shape or (1, int(data.calib_x.shape[1]))
    out = ctx.work_dir / "shiftadd.pt"
    check = data.test_x if data.test_x is not None else data.val_x
    save_outputs(model, report, out, art.path, loaded, shape, check[:64])
    write_report(report, ctx.work_dir)
    return art.evolve(path=out, shiftadd={k: report[k] for k in ("mode", "accuracy", "output_rel_error")}
                      | {"energy_saving": report["energy"]["saving"]})
