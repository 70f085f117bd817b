"""Quantise a float checkpoint end to end: data, Brevitas PTQ/QAT, the rebuildable checkpoint and
quantize_report.{json,md}.

Used by ``hwkit quantize`` (cli.py) and by the ``quantize`` pass (``hwkit compile --quantize w4a4``
puts it first in the flow, see :func:`with_quantize`).
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hwkit.artifact import Artifact, write_json_atomic, write_text_atomic
from hwkit.config import CompileSettings, Context
from hwkit.errors import InputError, UnsupportedLayerError
from hwkit.registry import register

MIN_BITS, MAX_BITS = 2, 16
GOLDEN = 32
"""Held-out samples shipped in the checkpoint as golden inputs for the hand-off checks."""


def parse_bits(spec: str) -> tuple[int, int]:
    """``w4a4`` -> (4, 4)."""
    m = re.fullmatch(r"w(\d+)a(\d+)", spec.strip().lower())
    if not m:
        raise InputError(f"--quantize {spec}: expected wNaM, e.g. w8a8 or w4a4")
    return _check_bits(int(m.group(1)), "weight"), _check_bits(int(m.group(2)), "activation")


def _check_bits(b: int, what: str) -> int:
    if not MIN_BITS <= b <= MAX_BITS:
        raise InputError(f"{what} bit width must be {MIN_BITS}..{MAX_BITS}, got {b}")
    return b


def _int_opt(opts: dict[str, Any], key: str, lo: int | None, hi: int | None, default: int) -> int:
    """``opts[key]`` as an integer in [lo, hi] (``default`` when absent); the error names the flag."""
    v = opts.get(key)
    if v is None:
        return default
    flag = "--" + key.replace("_", "-")
    if isinstance(v, bool) or not isinstance(v, (int, str, float)):
        raise InputError(f"{flag}: expected an integer, got {v!r}")
    try:
        n = int(v) if not isinstance(v, float) or v.is_integer() else None
    except (ValueError, OverflowError):
        n = None
    if n is None:
        raise InputError(f"{flag}: expected an integer, got {v!r}")
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        rng = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
        raise InputError(f"{flag} must be {rng}, got {n}")
    return n


def _lr_opt(v: Any) -> float:
    """A learning rate: a finite number > 0."""
    try:
        lr = float(v)
    except (TypeError, ValueError):
        raise InputError(f"--qat-lr: expected a number, got {v!r}") from None
    if not math.isfinite(lr) or lr <= 0 or isinstance(v, bool):
        raise InputError(f"--qat-lr must be a finite number > 0, got {v!r}")
    return lr


def parse_layer_bits(text: str | dict[str, Any] | None) -> dict[str, int]:
    """``fc1=4,fc2=2`` (or a dict) -> {"fc1": 4, "fc2": 2}."""
    if not text:
        return {}
    if isinstance(text, dict):
        items = list(text.items())
    else:
        items = []
        for part in str(text).split(","):
            name, eq, bits = part.partition("=")
            if not eq or not name.strip():
                raise InputError(f"--layer-bits: '{part}' is not NAME=BITS")
            items.append((name.strip(), bits.strip()))
    out = {}
    for name, bits in items:
        try:
            out[str(name)] = _check_bits(int(bits), f"--layer-bits {name}")
        except ValueError:
            raise InputError(f"--layer-bits {name}: '{bits}' is not an integer") from None
    return out


def _float_source(path: Path, loaded: Any, settings: CompileSettings) -> tuple[str, dict[str, Any], bool, dict]:
    """(float arch, its kwargs, is it the user's --arch, checkpoint meta) for the recipe."""
    import torch

    if loaded.format == "hwkit-checkpoint":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt["arch"] == "quantized":
            raise InputError(f"{path}: already quantised by hwkit quantize; start from the float model")
        return str(ckpt["arch"]), dict(ckpt.get("arch_kwargs", {})), False, dict(ckpt.get("meta", {}))
    if settings.arch:
        return settings.arch, dict(settings.arch_kwargs), True, {}
    what = "a TorchScript model cannot be rewritten" if loaded.format == "torchscript" else \
        "a pickled model cannot be rebuilt without unpickling"
    raise InputError(f"{path}: {what}; save a state dict and name "
                     "its builder with --arch module:function (or save a hwkit checkpoint)")


def _is_quantized(module: Any) -> bool:
    return any(type(m).__module__.startswith("brevitas.") for m in module.modules())


def _shaped(x: Any, shape: tuple[int, ...], source: str) -> Any:
    if x is None:
        return None
    per = 1
    for d in shape[1:]:
        per *= d
    if x[0].numel() != per:
        raise InputError(f"--calib {source}: samples have shape {tuple(x.shape[1:])}, the model takes "
                         f"{tuple(shape[1:])}")
    return x.reshape(len(x), *shape[1:])


def _bits(q: Any, report_bias_bits: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(weight layers, activation quantisers) with their bit widths."""
    import brevitas.nn as qnn

    from hwkit.compress.quantize.recipe import quant_layers

    layers = []
    for name, m in quant_layers(q):
        w_bits = int(m.quant_weight().bit_width)
        n = int(m.weight.numel())
        layers.append({"name": name, "type": type(m).__name__, "weight_bits": w_bits, "weights": n,
                       "weight_memory_bits": n * w_bits, "float_memory_bits": n * 32,
                       "bias": None if m.bias is None else
                       (f"int{report_bias_bits}" if m.bias_quant.is_quant_enabled else "float")})
    ends: dict[str, str] = {}
    for node in q.graph.nodes:
        if node.op == "placeholder":
            ends.update({u.target: "input" for u in node.users if u.op == "call_module"})
        elif node.op == "output" and getattr(node.args[0], "op", None) == "call_module":
            ends[node.args[0].target] = "output"
    acts = []
    for name, m in q.named_modules():
        if isinstance(m, qnn.QuantReLU | qnn.QuantIdentity):
            role = ends.get(name) or ("requantisation" if isinstance(m, qnn.QuantIdentity) else "ReLU")
            acts.append({"name": name, "role": role, "bits": int(m.act_quant.bit_width()),
                         "signed": bool(m.act_quant.is_signed)})
    return layers, acts


def _left_float(module: Any, q: Any, dropped: tuple[str, ...]) -> list[dict[str, str]]:
    """Every non-weight leaf of the float model and what became of it."""
    from torch import nn

    present = dict(q.named_modules())
    rows = []
    for name, m in module.named_modules():
        if not name or any(True for _ in m.children()) or isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            continue
        kind = type(m).__name__
        if name in dropped:
            why = "dropped: a trailing softmax (argmax unchanged, FINN has no Softmax layer; apply it on the host)"
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            why = ("merged into the preceding layer's weights and bias before quantising" if name not in present
                   else "kept float: FINN folds it into the next thresholds")
        elif isinstance(m, nn.ReLU | nn.ReLU6):
            continue  # quantised (listed with the activations)
        elif isinstance(m, nn.Dropout | nn.Dropout1d | nn.Dropout2d):
            why = "removed (no effect at inference)"
        elif isinstance(m, nn.MaxPool1d | nn.MaxPool2d):
            why = "float op on quantised values: max-pooling commutes with the quantiser (FINN pools integers)"
        else:
            why = "no arithmetic (reshape / identity)"
        rows.append({"name": name, "type": kind, "why": why})
    return rows


def quantize_file(src: Path, settings: CompileSettings, opts: dict[str, Any], out: Path, report_dir: Path,
                  say: Any = None) -> dict[str, Any]:
    """Quantise the float model in ``src``; writes ``out`` (hwkit checkpoint) and the reports in ``report_dir``.

    ``opts``: weight_bits, act_bits, layer_bits, calib, labels, method, qat_epochs, weight_method,
    bias_correction, seed (missing: defaults). Returns the report dict.
    """
    import torch

    from hwkit.compress.quantize.ptq import QuantSettings, outputs, run_ptq, score
    from hwkit.compress.quantize.recipe import (
        QuantRecipe,
        avg_pool_windows,
        check_supported,
        float_layer_names,
        trailing_softmax,
    )
    from hwkit.data.calib import load_data
    from hwkit.load import is_hf_dir, load_model

    say = say or (lambda _s: None)
    t_start = time.perf_counter()
    if is_hf_dir(src):
        raise UnsupportedLayerError(
            f"{src}: a Hugging Face transformers model; hwkit quantize rewrites Linear/Conv models (MLPs, CNNs) for "
            "FINN. Transformers: hwkit shiftadd (BCQ, CPU), or hwkit's Brevitas encoder for FPGAs "
            "(docs/transformer-fpga.md)")
    loaded = load_model(src, settings)
    module = loaded.module.eval()
    if _is_quantized(module):
        raise InputError(f"{src}: already quantised (it has Brevitas quantisers); compile it directly")
    float_arch, float_kwargs, user_arch, meta = _float_source(src, loaded, settings)
    shape = loaded.input_shape
    if shape is None:
        raise InputError(f"{src}: input shape unknown; pass --input-shape (e.g. 1,64)")
    layer_bits = parse_layer_bits(opts.get("layer_bits"))
    names = float_layer_names(module)
    unknown = [n for n in layer_bits if n not in names]
    if unknown:
        raise InputError(f"--layer-bits {unknown[0]}: no such Linear/Conv layer; layers: {', '.join(names)}")
    dropped = tuple(trailing_softmax(module))
    check_supported(module, dropped)
    method = str(opts.get("method") or ("qat" if opts.get("qat_epochs") else "ptq"))
    if method not in ("ptq", "qat"):
        raise InputError(f"--method {method}: expected ptq or qat")
    wm = str(opts.get("weight_method") or "auto")
    if wm not in ("auto", "gptq", "none"):
        raise InputError(f"--weight-method {wm}: expected auto, gptq or none")
    bc = str(opts.get("bias_correction") or "auto")
    if bc not in ("auto", "on", "off"):
        raise InputError(f"--bias-correction {bc}: expected auto, on or off")
    seed = _int_opt(opts, "seed", 0, 2**32 - 1, 0)
    qat_epochs = _int_opt(opts, "qat_epochs", 0, 100_000, 3 if method == "qat" else 0)
    cfg = QuantSettings(method=method, weight_method=wm, bias_correction=bc, qat_epochs=qat_epochs, seed=seed)
    if opts.get("qat_lr") is not None:
        cfg = replace(cfg, qat_lr=_lr_opt(opts["qat_lr"]))
    bias_bits = opts.get("bias_bits")
    recipe = QuantRecipe(weight_bits=_int_opt(opts, "weight_bits", MIN_BITS, MAX_BITS, 8),
                         act_bits=_int_opt(opts, "act_bits", MIN_BITS, MAX_BITS, 8),
                         layer_bits=layer_bits, dropped=dropped,
                         bias_bits=None if bias_bits is None else _int_opt(opts, "bias_bits", MIN_BITS, 32, 0),
                         avg_pools=avg_pool_windows(module, shape))
    calib = opts.get("calib")
    if not calib:
        raise InputError("quantisation needs calibration data: --calib digits | data.npz | images/ | pkg.mod:fn")
    data = load_data(str(calib), opts.get("labels"), seed)
    cx, vx, tx = (_shaped(t, shape, str(calib)) for t in (data.calib_x, data.val_x, data.test_x))
    recipe = replace(recipe, input_signed=bool((cx < 0).any()))
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    q, recipe, log = run_ptq(module, recipe, cx, data.calib_y, vx, data.val_y, cfg, say)
    quant_s = time.perf_counter() - t0

    ex, ey, split = (tx, data.test_y, "test") if tx is not None else (vx, data.val_y, "val")
    ref = outputs(module, ex)
    fs, qs = score(module, ex, ey, ref), score(q, ex, ey, ref)
    layers, acts = _bits(q, recipe.bias_bits)
    golden = vx[:GOLDEN].detach().clone()
    ckpt = {"hwkit_checkpoint": 1, "arch": "quantized",
            "arch_kwargs": {"float_arch": float_arch, "float_kwargs": float_kwargs, "recipe": recipe.to_json(),
                            "user_arch": user_arch},
            "state_dict": q.state_dict(), "input_shape": list(shape), "input_dtype": "FLOAT32",
            "golden_inputs": golden,
            "meta": {**meta, "quantize": {"bits": f"w{recipe.weight_bits}a{recipe.act_bits}", "method": method,
                                          "accuracy_float": fs.accuracy, "accuracy_quantized": qs.accuracy,
                                          "source": str(src), "data": data.source}}}
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(ckpt, tmp)
    try:  # the file must rebuild into the very model just made, without pickles
        again = load_model(tmp, settings)
        diff = float((outputs(again.module, golden) - outputs(q, golden)).abs().max())
        if diff > 1e-5:
            raise InputError(f"the quantised checkpoint does not rebuild to the same model (max |diff| {diff:.3g}); "
                             "this is an hwkit bug, please report it")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)

    w_q = sum(r["weight_memory_bits"] for r in layers)
    w_f = sum(r["float_memory_bits"] for r in layers)
    report = {
        "method": method, "source": str(src), "output": str(out), "data": data.source, "eval_split": split,
        "recipe": recipe.to_json(),
        "float_arch": float_arch + (" (--arch)" if user_arch else ""),
        "settings": {"weight_method": wm, "bias_correction": bc, "qat_epochs": qat_epochs, "seed": seed},
        "accuracy": {"float": fs.accuracy, "quantized": qs.accuracy,
                     "drop_points": None if fs.accuracy is None or qs.accuracy is None
                     else (fs.accuracy - qs.accuracy) * 100},
        "agreement": {"top1_with_float": qs.agreement, "output_mse": qs.mse, "samples": len(ex)},
        "layers": layers, "activations": acts,
        "weight_memory": {"float_bytes": w_f / 8, "quantized_bytes": w_q / 8, "ratio": w_q / w_f if w_f else None},
        "left_float": _left_float(module, q, dropped),
        "steps": log.steps,
        "timing_s": {**log.timing_s, "quantize": quant_s, "total": time.perf_counter() - t_start},
        "quantizers": "brevitas.graph: preprocess_for_quantize + quantize handlers; Int8WeightPerChannelFloat, "
                      "Uint8ActPerTensorFloat (ReLU), Int8ActPerTensorFloat (input/requantisation), "
                      "float or IntBias biases",
    }
    write_report(report, report_dir)
    return report


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.2f} %"


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """quantize_report.json and quantize_report.md in ``out_dir``."""
    r, a, g, wm = report["recipe"], report["accuracy"], report["agreement"], report["weight_memory"]
    lines = [
        "# Quantisation report", "",
        f"Model {report['source']} ({report['float_arch']}) -> {report['output']}: "
        f"w{r['weight_bits']}a{r['act_bits']}, input {r['input_bits']} bits, output {r['output_bits']} bits, "
        f"{report['method'].upper()}. Data: {report['data']}.", "",
        "| | float | quantised |", "|---|---:|---:|",
        f"| accuracy ({report['eval_split']} split) | {_pct(a['float'])} | {_pct(a['quantized'])} |",
        f"| top-1 agreement with float | | {_pct(g['top1_with_float'])} |",
        f"| output MSE vs float | | {g['output_mse']:.3g} |",
        f"| weight memory | {wm['float_bytes']:,.0f} B | {wm['quantized_bytes']:,.0f} B |", "",
        "## Weight layers", "",
        "| layer | type | weight bits | weights | memory (B) | bias |", "|---|---|---:|---:|---:|---|",
        *[f"| {x['name']} | {x['type']} | {x['weight_bits']} | {x['weights']:,} | {x['weight_memory_bits'] / 8:,.0f} | "
          f"{x['bias'] or '-'} |" for x in report["layers"]], "",
        "## Activation quantisers", "",
        "| quantiser | role | bits | signed |", "|---|---|---:|---|",
        *[f"| {x['name']} | {x['role']} | {x['bits']} | {'yes' if x['signed'] else 'no'} |"
          for x in report["activations"]], "",
        "## Left float", "",
        *([f"- `{x['name']}` ({x['type']}): {x['why']}" for x in report["left_float"]] or ["Nothing."]), "",
        "## Steps", "",
        *[f"- {s['step']}: {'applied' if s['applied'] else 'not applied'} ({s['why']})" for s in report["steps"]], "",
        "Time: " + ", ".join(f"{k} {v:.2f} s" for k, v in report["timing_s"].items()) + ".",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "quantize_report.md", out_dir / "quantize_report.json"
    write_text_atomic(md, "\n".join(lines) + "\n")
    write_json_atomic(js, report)
    return [js, md]


def opts_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """Quantisation options from a flow table / ``--quantize`` (``bits = "w4a4"`` or weight_bits/act_bits)."""
    opts = dict(params)
    bits = opts.pop("bits", None)
    if bits:
        opts["weight_bits"], opts["act_bits"] = parse_bits(str(bits))
    return opts


@register("quantize", uses=("input_shape", "input_dtype", "arch", "arch_kwargs", "trust_pickle", "seed"))
def quantize_pass(art: Artifact, ctx: Context) -> Artifact:
    """Quantise a float PyTorch model with Brevitas (PTQ / QAT) into a rebuildable checkpoint + quantize_report."""
    if art.path is None or art.path.suffix == ".onnx":
        raise InputError("the quantize pass needs a PyTorch model file (put it first in the flow)")
    opts = opts_from_params(dict(ctx.params))
    opts.setdefault("seed", ctx.settings.seed)
    out = ctx.work_dir / "quantized.pt"
    report = quantize_file(art.path, ctx.settings, opts, out, ctx.work_dir, ctx.log.info)
    summary = {k: report[k] for k in ("method", "accuracy", "agreement", "weight_memory", "timing_s")}
    summary["bits"] = f"w{report['recipe']['weight_bits']}a{report['recipe']['act_bits']}"
    summary["layer_bits"] = {x["name"]: x["weight_bits"] for x in report["layers"]}
    summary["left_float"] = [x["name"] for x in report["left_float"]]
    summary["report"] = str((ctx.work_dir / "quantize_report.json").relative_to(ctx.out_dir))
    return art.evolve(stage="model-file", path=out, quantize=summary)


def with_quantize(flow: Any, params: dict[str, Any]) -> Any:
    """``flow`` with a ``quantize`` step (parameters ``params``) put first, the other steps renumbered."""
    from hwkit.flow import Flow, FlowStep
    from hwkit.registry import resolve

    steps = [FlowStep(1, resolve("quantize"), params)]
    steps += [replace(s, index=i + 2) for i, s in enumerate(flow.steps)]
    return Flow(f"{flow.name}+quantize", f"Brevitas quantisation, then {flow.description}", flow.board_kinds,
                tuple(steps), flow.source, flow.requires)
