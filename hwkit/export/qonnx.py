"""Export a Brevitas/PyTorch model to QONNX and check that QONNX computes what PyTorch computes."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hwkit.artifact import Artifact
from hwkit.config import CompileSettings, Context
from hwkit.errors import InputError, UnsupportedLayerError
from hwkit.export.onnx import check_onnx_file
from hwkit.export.provenance import tag_torch_names, weight_layers
from hwkit.registry import register
from hwkit.verify import compare, fail_if_bad, record


def golden_inputs(shape: tuple[int, ...], dtype: str, n: int, seed: int) -> np.ndarray:
    """A seeded batch of ``n`` inputs drawn from the whole range of ``dtype``."""
    from qonnx.core.datatype import DataType

    rng = np.random.default_rng(seed)
    dt = DataType[dtype]
    full = (n, *shape[1:])
    if dt.is_integer():
        return rng.integers(int(dt.min()), int(dt.max()) + 1, size=full).astype(np.float32)
    return rng.standard_normal(full).astype(np.float32)


def _check_dtype(name: str) -> str:
    from qonnx.core.datatype import DataType

    try:
        DataType[name]
    except KeyError:
        raise InputError(f"unknown input data type '{name}' (e.g. UINT8, INT8, BIPOLAR, FLOAT32)") from None
    return name


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EXPORTERS = ("auto", "torchscript", "dynamo")


def root_cause(exc: BaseException) -> str:
    """``Type: message`` of the innermost exception behind ``exc`` (first line, colour escapes removed)."""
    seen = {id(exc)}
    inner = exc
    while True:
        nxt = inner.__cause__ or inner.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        inner = nxt
    lines = [ln.strip() for ln in _ANSI.sub("", str(inner)).splitlines() if ln.strip()]
    if inner is exc:
        # torch's exporters put the cause in an "Exception summary" section: take the line after it
        for i, ln in enumerate(lines[:-1]):
            if ln.startswith("## Exception summary"):
                return lines[i + 1]
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__


def _export(loaded: Any, shape: tuple[int, ...], out: Path, exporter: str = "auto") -> tuple[str, list[str]]:
    """Export to QONNX with the chosen exporter; returns the exporter that succeeded and why earlier ones failed.

    ``auto`` tries Brevitas's default (the dynamo exporter on torch >= 2.9) and falls back to the
    TorchScript exporter, which handles what dynamo cannot (e.g. residual adds of QuantTensors).
    """
    import torch
    from brevitas.export import export_qonnx

    from hwkit.compress.shiftadd.pow2 import project

    if exporter not in EXPORTERS:
        raise InputError(f"exporter '{exporter}': choose one of {', '.join(EXPORTERS)}")
    choices: dict[str, list[bool | None]] = {"auto": [None, False], "torchscript": [False], "dynamo": [True]}
    tries = choices[exporter]
    failures: list[str] = []
    for dynamo in tries:
        name = {None: "default", False: "torchscript", True: "dynamo"}[dynamo]
        kwargs = {} if dynamo is None else {"dynamo": dynamo}
        # a failed export can leave Brevitas's export mode switched on in the modules: every try gets a copy
        module = copy.deepcopy(loaded.module)
        try:
            with torch.no_grad():
                # power-of-two weights: the exported Quant node rounds ordinarily, so hand it the quantised values
                project(module)
                export_qonnx(module, torch.zeros(shape), str(out), **kwargs)
            return name, failures
        except Exception as exc:  # the torch exporters raise many types; all mean "cannot export this model"
            failures.append(f"{name} exporter: {root_cause(exc)}")
            for f in out.parent.iterdir():  # drop what a failed try left behind
                if f.is_file():
                    f.unlink()
    raise UnsupportedLayerError("cannot export the model to QONNX (" + "; ".join(failures) + ")")


RECURRENT = ("LSTM", "GRU", "RNN")
"""torch.nn recurrent layers (and the ONNX ops they export to): no FINN hardware layer implements them."""


def refuse_recurrent(module: Any) -> None:
    """A recurrent layer cannot be mapped to the dataflow target: say which layer and which op, exit 3."""
    for name, m in module.named_modules():
        if type(m).__name__ in RECURRENT and type(m).__module__.startswith(("torch.nn", "brevitas")):
            raise UnsupportedLayerError(
                f"layer '{name}' ({type(m).__name__}) exports to the ONNX op {type(m).__name__}, which finn-plus "
                "cannot map to FPGA hardware (no recurrent HW layer); use a feed-forward model or an ONNX Runtime "
                "target (--target cpu)")


def fixed_input_shape(model: Any, path: Path) -> tuple[int, ...]:
    """The first graph input's shape; every dimension must be a fixed positive number (FINN builds batch 1)."""
    init = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if not inputs:
        raise InputError(f"{path}: graph has no inputs")
    if not model.graph.node:
        raise InputError(f"{path}: graph has no nodes (an empty model)")
    if len(inputs) > 1:
        raise InputError(f"{path}: graph has {len(inputs)} inputs; FINN builds take one")
    inp = inputs[0]
    if not inp.type.HasField("tensor_type"):
        raise InputError(f"{path}: input '{inp.name}' is not a tensor")
    dims = inp.type.tensor_type.shape.dim
    for i, d in enumerate(dims):
        if not (d.HasField("dim_value") and d.dim_value > 0):
            what = f"symbolic dimension '{d.dim_param}'" if d.dim_param else "an unknown dimension"
            raise InputError(f"{path}: input '{inp.name}' has {what} at axis {i}; FINN builds need fixed sizes "
                             "(export with batch 1 and no dynamic axes)")
    for node in model.graph.node:
        if node.op_type in RECURRENT or node.op_type in ("Loop", "Scan"):
            raise UnsupportedLayerError(f"{path}: node '{node.name or node.output[0]}' is an ONNX {node.op_type}, "
                                        "which finn-plus cannot map to FPGA hardware")
    return tuple(int(d.dim_value) for d in dims)


def refuse_round_trunc(model: Any) -> None:
    """finn-plus converts a QONNX Trunc (Brevitas TruncAvgPool2d) only with FLOOR rounding; any other mode stopped its
    QONNX conversion with a ValueError (exit 5). Exit 3 here, naming the node and its PyTorch layer."""
    from onnx import helper

    from hwkit.export.provenance import torch_layer_of

    for node in model.graph.node:
        if node.op_type != "Trunc":
            continue
        mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "rounding_mode"), b"FLOOR")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode.upper() != "FLOOR":
            layer = torch_layer_of(node)
            where = f"PyTorch layer {layer}" if layer else f"node '{node.name}'"
            raise UnsupportedLayerError(
                f"{where}: a Trunc (truncating average pool) with rounding mode {mode}; finn-plus maps only FLOOR "
                "(Brevitas TruncAvgPool2d(..., float_to_int_impl_type='FLOOR'))")


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def qdq_to_quant(model: Any, path: Path) -> Any:
    """ONNX QuantizeLinear / Clip / DequantizeLinear (QCDQ, e.g. Brevitas's export_onnx_qcdq) -> QONNX Quant nodes,
    which FINN streamlines. qonnx converts per-tensor scales; what it cannot convert stops here with exit 3."""
    from onnx import helper
    from qonnx.transformation.qcdq_to_qonnx import QCDQToQuant
    from qonnx.util.cleanup import cleanup_model

    why = ""
    try:
        model = cleanup_model(model).transform(QCDQToQuant())
    except Exception as exc:  # qonnx raises numpy broadcasting errors for per-channel scales
        why = f" ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
    left = [nd for nd in model.graph.node if nd.op_type in QDQ_OPS]
    if why or left:
        node = left[0] if left else None
        where = f": node '{node.name or node.output[0]}' ({node.op_type})" if node is not None else ""
        raise UnsupportedLayerError(
            f"{path}: ONNX QuantizeLinear/DequantizeLinear quantisation that qonnx cannot turn into QONNX Quant nodes"
            f"{where}{why}; FINN takes per-tensor QCDQ (e.g. Brevitas export_onnx_qcdq) or QONNX. Per-channel or "
            "zero-point QDQ (ONNX Runtime's quantize_static) compiles for --target cpu; for an FPGA, quantise the "
            "float model with hwkit quantize")
    domain = "qonnx.custom_op.general"
    if not any(o.domain == domain for o in model.model.opset_import):
        model.model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


def _load_input(art: Artifact, settings: CompileSettings) -> tuple[Any, tuple[int, ...], str, np.ndarray | None]:
    from hwkit.load import check_input_shape, is_hf_dir, load_model

    assert art.path is not None
    if is_hf_dir(art.path):
        raise UnsupportedLayerError(
            f"{art.path}: a Hugging Face transformers model compiles for ONNX Runtime targets (--target cpu); "
            "FPGA targets need a Brevitas-quantised encoder (see docs/transformer-fpga.md)")
    loaded = load_model(art.path, settings)
    if loaded.input_shape is None:
        raise InputError(f"{art.path}: input shape unknown; pass --input-shape (e.g. 1,64)")
    check_input_shape(loaded, art.path, settings)
    refuse_recurrent(loaded.module)
    return loaded, loaded.input_shape, _check_dtype(loaded.input_dtype or "FLOAT32"), loaded.golden_inputs


@register("export_qonnx", uses=("input_shape", "input_dtype", "arch", "arch_kwargs", "trust_pickle",
                                "golden_batch", "seed"))
def export_qonnx(art: Artifact, ctx: Context) -> Artifact:
    """Export to QONNX (or take a given .onnx), run the golden batch through torch and QONNX."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    settings = ctx.settings
    out = ctx.work_dir / "model.onnx"
    assert art.path is not None
    n = settings.golden_batch
    history: list[dict[str, Any]] = []
    model_info: dict[str, Any] = {}
    shipped = None
    if art.path.suffix == ".onnx":
        check_onnx_file(art.path)  # the ONNX checker accepts QONNX's custom domain; a damaged file is exit 2 here
        try:
            model = ModelWrapper(str(art.path))
        except Exception as exc:  # onnx raises DecodeError and others for a corrupt file
            raise InputError(f"{art.path}: not a readable ONNX model ({type(exc).__name__})") from None
        shape = fixed_input_shape(model, art.path)
        dtype = _check_dtype(settings.input_dtype or model.get_tensor_datatype(model.graph.input[0].name).name)
        model_info.update(format="qonnx")
        if any(nd.op_type in QDQ_OPS for nd in model.graph.node):
            model = qdq_to_quant(model, art.path)
            model_info.update(format="qcdq", converted="QuantizeLinear/Clip/DequantizeLinear -> QONNX Quant")
    else:
        loaded, shape, dtype, shipped = _load_input(art, settings)
        if shipped is not None and tuple(shipped.shape[1:]) != tuple(shape[1:]):
            raise InputError(f"{art.path}: golden_inputs have shape {shipped.shape[1:]}, model input is {shape[1:]}")
        n_params = sum(p.numel() for p in loaded.module.parameters())
        model_info.update(format=loaded.format, params=int(n_params), checkpoint_meta=loaded.meta)
        raw_dir = ctx.work_dir / "torch_export"
        raw_dir.mkdir()
        used, failed = _export(loaded, shape, raw_dir / "raw.onnx", str(ctx.params.get("exporter", "auto")))
        model_info.update(exporter=used)
        if failed:
            model_info["exporter_fallback"] = failed
        model = ModelWrapper(str(raw_dir / "raw.onnx"))
        shutil.rmtree(raw_dir)  # the exporter may write weights beside the graph; model.onnx holds them
    tag_torch_names(model)
    model = cleanup_model(model)
    refuse_round_trunc(model)
    iname = model.graph.input[0].name
    model.set_tensor_datatype(iname, DataType[dtype])
    model.save(str(out))
    oname = model.graph.output[0].name
    model_info.update(weight_layers=weight_layers(model), input_shape=list(shape), input_dtype=dtype,
                      output_shape=list(model.get_tensor_shape(oname)))

    # golden inputs: the checkpoint's, or drawn avoiding ties (hwkit/export/ties.py), run through QONNX
    from hwkit.export.ties import draw_golden, excuse_ties, run_with_ties

    if shipped is not None:
        inputs = shipped[:n].astype(np.float32)
        q_out, ulps = run_with_ties(ModelWrapper(str(out)), inputs, ctx.work_dir)
        draw = {"candidates": len(inputs), "shipped": True}
    else:
        inputs, q_out, ulps, draw = draw_golden(
            ModelWrapper(str(out)), lambda k: golden_inputs(shape, dtype, k, settings.seed), n, ctx.work_dir)
    model_info["golden_draw"] = draw
    warnings = list(art.meta.get("warnings", ()))
    if len(q_out) > 1 and float(np.ptp(q_out.reshape(len(q_out), -1), axis=0).max()) == 0.0:
        warnings.append("every golden sample gives the same output: the hand-off checks exercise little of the "
                        "model (ship representative golden_inputs in the checkpoint)")
    root = ctx.out_dir
    np.save(ctx.work_dir / "golden_in.npy", inputs)
    np.save(ctx.work_dir / "golden_out_qonnx.npy", q_out)
    np.save(ctx.work_dir / "golden_ties_ulps.npy", ulps)
    ref, reference = None, ""
    if art.path.suffix != ".onnx":
        import torch

        with torch.no_grad():
            ref = loaded.module(torch.from_numpy(inputs)).detach().numpy()
        np.save(ctx.work_dir / "golden_out_torch.npy", ref)
        reference = "torch"
    elif model_info.get("format") == "qcdq":  # the conversion is a hand-off too: the file itself in ONNX Runtime
        import onnxruntime as ort

        sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        ref = np.concatenate([sess.run(None, {name: inputs[i:i + 1]})[0] for i in range(len(inputs))])
        reference = "onnxruntime-qcdq"
    if ref is not None:
        stats = {**compare(ref, q_out), "int_exact": None, "int_mismatches": None}
        if not stats["ok"]:
            # PyTorch (or onnxruntime on the QCDQ file) and QONNX sum in different orders: a value on a rounding
            # boundary may round either way. Excused only for samples with such a tie, at most one in eight.
            note = excuse_ties(ref, q_out, ulps, stats)
            if note:
                warnings.append(f"{reference.split('-')[-1]} -> qonnx: {note}")
        rec = record("qonnx", reference, len(inputs), stats)
        history.append(rec)
        fail_if_bad(rec)
    golden = {
        "inputs": str((ctx.work_dir / "golden_in.npy").relative_to(root)),
        "outputs": str((ctx.work_dir / "golden_out_qonnx.npy").relative_to(root)),
        "stage": "qonnx",
        "int_outputs": None,
        "ties_ulps": str((ctx.work_dir / "golden_ties_ulps.npy").relative_to(root)),
    }
    return art.evolve(stage="qonnx", path=out, model=model_info, golden=golden, verification=history,
                      warnings=warnings)
