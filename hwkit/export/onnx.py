"""Export a PyTorch/Brevitas model to the ONNX form ONNX Runtime runs, and quantise float models with ORT.

* float models: ``torch.onnx.export`` with a dynamic batch dimension;
* Brevitas-quantised models: ``brevitas.export.export_onnx_qcdq`` (QuantizeLinear -> Clip ->
  DequantizeLinear around every quantiser), then :mod:`hwkit.export.qcdq` moves the initialisers out
  of the graph inputs, folds the constant weight quantisers and (``lower = true``, the default) lowers
  the activation quantisers to ``Clip -> Round`` with the scales folded into the Gemms;
* an ``.onnx`` input is checked (ONNX checker, opset against the installed onnxruntime) and used as is.

``quantize_onnx`` then optionally applies ONNX Runtime's own quantisation to a float model:
static QDQ int8 (``quantize_static`` with a calibration set) or weight-only 4-bit MatMulNBits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np

from hwkit.artifact import Artifact, thaw
from hwkit.config import CompileSettings, Context
from hwkit.errors import InputError, UnsupportedLayerError
from hwkit.registry import register

_INT_RANGES = {"UINT8": (0, 255), "INT8": (-128, 127), "BIPOLAR": (-1, 1), "BINARY": (0, 1), "UINT4": (0, 15),
               "INT4": (-8, 7), "UINT2": (0, 3), "INT2": (-2, 1), "TERNARY": (-1, 1)}
QUANTIZE_METHODS = ("auto", "none", "int8-static", "int4-weight-only")


def sample_inputs(shape: tuple[int, ...], dtype: str, n: int, seed: int) -> np.ndarray:
    """``n`` seeded inputs over the whole range of ``dtype`` (integers) or standard normal (floats)."""
    rng = np.random.default_rng(seed)
    full = (n, *shape[1:])
    if dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        if dtype == "BIPOLAR":
            return (2 * rng.integers(0, 2, size=full) - 1).astype(np.float32)
        return rng.integers(lo, hi + 1, size=full).astype(np.float32)
    return rng.standard_normal(full).astype(np.float32)


def is_brevitas_quantised(module: Any) -> bool:
    """True when the module holds Brevitas quantisers (it then exports as QCDQ)."""
    return any(type(m).__module__.startswith("brevitas.") for m in module.modules())


def max_ort_opset() -> int:
    """The newest default-domain opset the installed onnxruntime runs (probed once per process)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    global _MAX_OPSET
    if _MAX_OPSET is not None:
        return _MAX_OPSET
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    best = 7
    for opset in range(onnx.defs.onnx_opset_version() + 2, 6, -1):
        try:
            probe = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
            ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: S112 - onnxruntime raises its own Fail type for an unsupported opset
            continue
        best = opset
        break
    _MAX_OPSET = best
    return best


_MAX_OPSET: int | None = None


def check_onnx_file(path: Path) -> Any:
    """Load ``path`` and check it: ONNX checker, opset runnable by onnxruntime. Returns the ModelProto."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others for a corrupt file
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise InputError(f"{path}: fails the ONNX checker: {first}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # a damaged string field: the checker cannot even read it
        raise InputError(f"{path}: fails the ONNX checker: {type(exc).__name__}: {str(exc)[:120]}") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    limit = max_ort_opset()
    if opset is not None and opset > limit:
        import onnxruntime as ort

        raise InputError(f"{path}: ONNX opset {opset} is newer than onnxruntime {ort.__version__} runs "
                         f"(at most opset {limit}); export with opset <= {limit}")
    init = {i.name for i in model.graph.initializer}
    if not [i for i in model.graph.input if i.name not in init]:
        raise InputError(f"{path}: graph has no inputs")
    if not model.graph.node:
        raise InputError(f"{path}: graph has no nodes (an empty model)")
    return model


def _input_shape(model: Any) -> tuple[int, ...]:
    init = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in init)
    dims = inp.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims)


def _export_torch(module: Any, shape: tuple[int, ...], out: Path, quantised: bool) -> None:
    import torch

    kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"],
              "dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}}
    try:
        with torch.no_grad():
            if quantised:
                from brevitas.export import export_onnx_qcdq

                try:
                    export_onnx_qcdq(module, torch.zeros(shape), str(out), **kwargs)
                except RuntimeError as exc:
                    if "does not support quantized bias" not in str(exc):
                        raise
                    # Brevitas's dynamo QCDQ exporter refuses integer biases (e.g. QuantMultiheadAttention's);
                    # its TorchScript exporter takes them
                    export_onnx_qcdq(module, torch.zeros(shape), str(out), dynamo=False, **kwargs)
            else:
                if isinstance(module, torch.jit.ScriptModule):  # only the TorchScript exporter takes these
                    kwargs["dynamo"] = False
                torch.onnx.export(module, (torch.zeros(shape),), str(out), **kwargs)
    except Exception as exc:  # the exporters raise many types; all mean "cannot export this model"
        text = str(exc).strip().splitlines()
        kind = "QCDQ ONNX" if quantised else "ONNX"
        raise UnsupportedLayerError(
            f"cannot export the model to {kind}: {type(exc).__name__}: {text[0] if text else ''}"
        ) from exc


def fixed_batch(model: Any) -> int | None:
    """The batch size an ONNX model fixes on its first input, or None when the batch axis is dynamic."""
    init = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in init)
    dims = inp.type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        return int(dims[0].dim_value)
    return None


def split_inputs(loaded: Any, shape: tuple[int, ...], dtype: str, n: int, seed: int) -> tuple[np.ndarray, str]:
    """The inputs the class-agreement check runs on: the checkpoint's own samples, or seeded ones."""
    if loaded is not None and loaded.golden_inputs is not None and len(loaded.golden_inputs) >= 2:
        return np.asarray(loaded.golden_inputs, dtype=np.float32), "checkpoint golden_inputs"
    return sample_inputs(shape, dtype, n, seed + 1), f"{n} seeded samples over the {dtype} input range"


@register("export_onnx", uses=("input_shape", "input_dtype", "arch", "arch_kwargs", "trust_pickle",
                               "golden_batch", "seed"))
def export_onnx(art: Artifact, ctx: Context) -> Artifact:
    """Export to ONNX (float) or folded QCDQ (Brevitas); save golden and test-split references."""
    import onnx

    from hwkit.export import qcdq

    settings: CompileSettings = ctx.settings
    assert art.path is not None
    out = ctx.work_dir / "model.onnx"
    n_test = int(ctx.params.get("test_samples", 2000))
    lower = bool(ctx.params.get("lower", True))
    info: dict[str, Any] = {}
    surgery: dict[str, Any] = {}
    torch_golden = torch_test = None
    if art.path.is_dir():
        return _export_hf_dir(art, ctx, out, n_test)
    if art.path.suffix == ".onnx":
        model = check_onnx_file(art.path)
        shape = settings.input_shape or _input_shape(model)
        fixed = fixed_batch(model)
        if fixed is not None and fixed != 1:
            raise InputError(f"{art.path}: the file fixes the batch dimension to {fixed}; export with batch 1 or a "
                             "dynamic batch axis (dynamic_axes={'input': {0: 'batch'}})")
        if fixed == 1:
            info["fixed_batch"] = 1  # verification runs sample by sample, the measurement at batch 1 only
        dtype = settings.input_dtype or "FLOAT32"
        form = "onnx-input"
        removed = qcdq.constants_from_inputs(model)
        if removed:
            surgery["initialisers_moved_from_inputs"] = removed
        onnx.save(model, str(out))
        info.update(format="onnx")
        inputs = sample_inputs(shape, dtype, settings.golden_batch, settings.seed)
        test_in, test_src = sample_inputs(shape, dtype, n_test, settings.seed + 1), "seeded samples"
        precision = "unknown"
    else:
        import torch

        from hwkit.load import check_input_shape, load_model

        loaded = load_model(art.path, settings)
        if loaded.input_shape is None:
            raise InputError(f"{art.path}: input shape unknown; pass --input-shape (e.g. 1,64)")
        check_input_shape(loaded, art.path, settings)
        shape, dtype = loaded.input_shape, loaded.input_dtype or "FLOAT32"
        quantised = is_brevitas_quantised(loaded.module)
        raw = ctx.work_dir / "raw.onnx"
        _export_torch(loaded.module, shape, raw, quantised)
        model = onnx.load(str(raw))
        for f in ctx.work_dir.glob("raw.onnx*"):
            f.unlink()
        if quantised:
            form = "brevitas-qcdq"
            surgery["initialisers_moved_from_inputs"] = qcdq.constants_from_inputs(model)
            surgery["constant_nodes_folded"] = qcdq.fold_constants(model)
            if lower:
                form = "brevitas-qcdq-lowered"
                surgery.update(qcdq.lower_fake_quant(model))
        else:
            form = "float"
            qcdq.constants_from_inputs(model)
        onnx.checker.check_model(model)
        onnx.save(model, str(out))
        shipped = loaded.golden_inputs
        if shipped is not None:
            inputs = np.asarray(shipped[: settings.golden_batch], dtype=np.float32)
        else:
            inputs = sample_inputs(shape, dtype, settings.golden_batch, settings.seed)
        test_in, test_src = split_inputs(loaded, shape, dtype, n_test, settings.seed)
        with torch.no_grad():
            torch_golden = loaded.module(torch.from_numpy(inputs)).numpy()
            torch_test = loaded.module(torch.from_numpy(test_in)).numpy()
        info.update(format=loaded.format, params=int(sum(p.numel() for p in loaded.module.parameters())),
                    checkpoint_meta=loaded.meta, output_shape=[1, *torch_golden.shape[1:]])
        precision = "quantised" if quantised else "float"
    info.update(input_shape=list(shape), input_dtype=dtype)
    files = {"golden_in": inputs, "test_in": test_in}
    if torch_golden is not None and torch_test is not None:
        files.update(golden_out_torch=torch_golden, test_out_torch=torch_test)
    refs = {}
    for name, arr in files.items():
        np.save(ctx.work_dir / f"{name}.npy", arr)
        refs[name] = str((ctx.work_dir / f"{name}.npy").relative_to(ctx.out_dir))
    onnx_meta = {"form": form, "precision": precision, "surgery": surgery, "source_model": str(art.path),
                 "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
                 "ops": qcdq.op_counts(model.graph.node), "test_split": test_src, "refs": refs}
    return art.evolve(stage="onnx", path=out, model=info, onnx=onnx_meta)


def _export_hf_dir(art: Artifact, ctx: Context, out: Path, n_test: int) -> Artifact:
    """A Hugging Face encoder directory (token inputs) to float ONNX; golden and test inputs are ``.npz`` of
    named int64 arrays with masks (see :mod:`hwkit.export.hf`)."""
    import onnx

    from hwkit.export import hf, qcdq
    from hwkit.load import load_hf_dir

    assert art.path is not None
    settings: CompileSettings = ctx.settings
    loaded = load_hf_dir(art.path)
    model = loaded.module.eval()
    names = hf.input_names(model)
    tokens = hf.sequence_length(model, settings.input_shape)
    golden = hf.token_samples(model, names, settings.golden_batch, tokens, settings.seed)
    n_test = min(n_test, 256)  # an encoder forward is costly; 256 padded sequences check the graph well
    test = hf.token_samples(model, names, n_test, tokens, settings.seed + 1)
    torch_golden = hf.run_torch(model, names, golden)  # before export: the exporter may change the module
    torch_test = hf.run_torch(model, names, test)
    hf.export(model, names, golden, out)
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    refs = {}
    for name, named in (("golden_in", golden), ("test_in", test)):
        np.savez(ctx.work_dir / f"{name}.npz", **cast("dict[str, Any]", named))  # numpy stubs type ** as allow_pickle
        refs[name] = str((ctx.work_dir / f"{name}.npz").relative_to(ctx.out_dir))
    for name, arr in (("golden_out_torch", torch_golden), ("test_out_torch", torch_test)):
        np.save(ctx.work_dir / f"{name}.npy", arr)
        refs[name] = str((ctx.work_dir / f"{name}.npy").relative_to(ctx.out_dir))
    info = {"format": loaded.format, "params": int(sum(p.numel() for p in model.parameters())),
            "checkpoint_meta": loaded.meta, "output_shape": [1, *torch_golden.shape[1:]],
            "input_shape": [1, tokens], "input_dtype": "INT64", "input_names": list(names)}
    split = f"{n_test} seeded token sequences of up to {tokens} tokens (right-padded, masked)"
    onnx_meta = {"form": "float", "precision": "float", "surgery": {}, "source_model": str(art.path),
                 "opset": next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None),
                 "ops": qcdq.op_counts(graph.graph.node), "test_split": split, "refs": refs}
    return art.evolve(stage="onnx", path=out, model=info, onnx=onnx_meta)


class _Calibration:
    """CalibrationDataReader over an array of inputs, one batch at a time."""

    def __init__(self, name: str, data: np.ndarray, batch: int = 32) -> None:
        self._it = iter([{name: data[i:i + batch]} for i in range(0, len(data), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


@register("quantize_onnx", uses=("input_shape", "input_dtype", "seed"))
def quantize_onnx(art: Artifact, ctx: Context) -> Artifact:
    """ORT quantisation of a float model: static QDQ int8 or weight-only 4-bit (method from the flow)."""
    import onnx

    from hwkit.export import qcdq

    method = str(ctx.params.get("method", "auto"))
    if method not in QUANTIZE_METHODS:
        raise InputError(f"quantize_onnx: method must be one of {', '.join(QUANTIZE_METHODS)}, got '{method}'")
    meta = thaw(art.meta["onnx"])
    warnings = list(art.meta.get("warnings", ()))
    if method in ("auto", "none") or meta["precision"] == "quantised":
        if method not in ("auto", "none"):
            warnings.append(f"quantize_onnx: model is already quantised ({meta['form']}); '{method}' not applied")
        meta["ort_quantization"] = None
        return art.evolve(onnx=meta, warnings=warnings)
    assert art.path is not None
    out = ctx.work_dir / "model.onnx"
    if art.meta["model"].get("input_names"):
        raise UnsupportedLayerError(f"quantize_onnx {method}: token models (several integer inputs) are not "
                                    "supported; use --flow ort-cpu")
    if method == "int8-static":
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        n_cal = int(ctx.params.get("calibration_samples", 256))
        shape = tuple(art.meta["model"]["input_shape"])
        cal = sample_inputs(shape, art.meta["model"]["input_dtype"], n_cal, ctx.settings.seed + 2)
        name = onnx.load(str(art.path)).graph.input[0].name
        # ONNX Runtime's u8s8 int8 kernels on x86 without VNNI (AVX2, AVX-512F) add pairs of u8*s8
        # products in 16 bits and can saturate; ORT's documented cure is 7-bit weights (reduce_range).
        # Measured here (AMD EPYC, AVX2, no VNNI): class agreement 0.977 with 8-bit weights vs the float model.
        reduce = ctx.params.get("reduce_range")
        reduce_range = bool(reduce) if reduce is not None else not cpu_has_vnni()
        batch = int(art.meta["model"].get("fixed_batch") or 32)  # a fixed-batch graph takes its own batch size
        quantize_static(str(art.path), str(out), _Calibration(name, cal, batch), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=reduce_range)
        meta["ort_quantization"] = {"method": method, "calibration_samples": n_cal,
                                    "calibration": "seeded samples over the input range",
                                    "activations": "uint8 per-tensor",
                                    "weights": "int7 per-channel (reduce_range: this CPU has no VNNI)"
                                    if reduce_range else "int8 per-channel"}
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        block = int(ctx.params.get("block_size", 32))
        model = onnx.load(str(art.path))
        consts = {i.name: i for i in model.graph.initializer}
        fits = [n.name for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1
                and n.input[1] in consts and len(consts[n.input[1]].dims) == 2
                and consts[n.input[1]].dims[0] >= block]
        if not fits:
            warnings.append("quantize_onnx: int4-weight-only needs MatMul nodes with constant weights of "
                            f"K >= {block}; none found, model left in float")
            meta["ort_quantization"] = {"method": method, "applied_to": []}
            return art.evolve(onnx=meta, warnings=warnings)
        q = MatMulNBitsQuantizer(model, block_size=block, is_symmetric=True)
        q.process()
        q.model.save_model_to_file(str(out), use_external_data_format=False)
        meta["ort_quantization"] = {"method": method, "block_size": block, "applied_to": fits}
    meta["precision"] = "quantised"
    meta["form"] = f"{meta['form']}+{method}"
    meta["ops"] = qcdq.op_counts(onnx.load(str(out)).graph.node)
    return art.evolve(path=out, onnx=meta, warnings=warnings)


def cpu_has_vnni() -> bool:
    """True when this x86 CPU has VNNI (AVX-512 VNNI, AVX-VNNI or AMX) or the CPU is not x86.

    Without VNNI, ONNX Runtime's u8s8 int8 GEMM can saturate its 16-bit intermediate sums.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # cannot tell: keep full 8-bit weights
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
