"""Safe model loading: what ``model.pt`` may be, and how it is read without running its code.

Accepted inputs (see docs/model-input.md):

1. **hwkit checkpoint** (recommended): a ``torch.save``d dict with only tensors and plain values::

       {"hwkit_checkpoint": 1, "arch": "qmlp", "arch_kwargs": {...}, "state_dict": {...},
        "input_shape": [1, 64], "input_dtype": "UINT8", "golden_inputs": Tensor (optional),
        "meta": {...} (optional)}

   Read with ``torch.load(weights_only=True)``; ``arch`` must be a name in
   :data:`hwkit.models.ARCHS`, so the file cannot choose code to run. A model made by ``hwkit
   quantize`` has ``arch = "quantized"`` and ``arch_kwargs = {"float_arch", "float_kwargs",
   "recipe", "user_arch"}``: the float architecture is rebuilt and rewritten by the recorded
   Brevitas recipe (:func:`hwkit.compress.quantize.recipe.rebuild`); when it was the user's own
   (``user_arch``), loading needs the same ``--arch`` again.
2. **state dict + architecture**: a plain ``state_dict`` file, with ``--arch module:callable`` (and
   ``--arch-kwargs JSON``) naming the user's builder, and ``--input-shape``.
3. **full pickle** of an ``nn.Module``: only with ``--trust-pickle`` (unpickling runs code from the file).
4. **TorchScript** archive (``torch.jit.save``): only with ``--trust-pickle`` (loading runs its TorchScript
   code), read with ``torch.jit.load``; the input shape comes from ``--input-shape``.
5. **QONNX** (``.onnx``): an already exported model; the flow starts at the QONNX stage.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwkit.config import CompileSettings, is_finn_dtype
from hwkit.errors import ModelLoadError
from hwkit.models import builder, user_builder

CHECKPOINT_KEY = "hwkit_checkpoint"


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode plus what the file said about its input."""

    module: Any
    """The torch.nn.Module."""
    format: str
    """hwkit-checkpoint | state-dict | pickle | torchscript | hf-dir."""
    input_shape: tuple[int, ...] | None
    """Input shape with batch dimension, if known."""
    input_dtype: str | None
    """FINN data type name of the input, if known."""
    golden_inputs: Any = None
    """Representative inputs shipped with the checkpoint (numpy array), if any."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form facts from the checkpoint (dataset, accuracy, ...)."""


def _torch_load(path: Path, weights_only: bool) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if weights_only and found:
            raise ModelLoadError(
                f"{path}: file is a full pickle (it asks to construct {found.group(1)}); loading it would run "
                "code from the file. Re-run with --trust-pickle if you trust it, or save a hwkit checkpoint "
                "(docs/model-input.md)"
            ) from None
        raise ModelLoadError(f"{path}: not a readable PyTorch file ({_first_line(exc)})") from None
    except Exception as exc:  # a damaged archive surfaces as many types (BadZipFile, KeyError, EOFError, ...)
        raise ModelLoadError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {_first_line(exc)})"
                             ) from None


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's run long)."""
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(exc).__name__


def _shape(value: Any, path: Path) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not value or \
            not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 24 for v in value):
        raise ModelLoadError(f"{path}: field 'input_shape' must be a list of positive integers, got {value!r:.80}")
    return tuple(value)


def _dtype(value: Any, path: Path) -> str | None:
    if value is None:
        return None
    if not is_finn_dtype(value):
        raise ModelLoadError(f"{path}: field 'input_dtype' must be a FINN data type name like UINT8, got {value!r:.40}")
    return str(value)


def _golden(value: Any, path: Path, shape: tuple[int, ...] | None) -> Any:
    """The checkpoint's ``golden_inputs`` as a float32 numpy array, checked: a finite tensor of samples."""
    import numpy as np
    import torch

    if value is None:
        return None
    where = f"{path}: field 'golden_inputs'"
    if not isinstance(value, torch.Tensor):
        raise ModelLoadError(f"{where} must be a tensor of input samples, got {type(value).__name__}")
    if value.dtype == torch.bool or value.is_complex() or value.dim() < 2 or len(value) == 0:
        raise ModelLoadError(f"{where} must be a real tensor of shape (samples, ...), got {value.dtype} "
                             f"{tuple(value.shape)}")
    arr = value.detach().cpu().to(torch.float32).numpy()
    if not np.isfinite(arr).all():
        raise ModelLoadError(f"{where} holds {int((~np.isfinite(arr)).sum())} non-finite values (NaN/Inf)")
    if shape is not None and tuple(arr.shape[1:]) != tuple(shape[1:]):
        raise ModelLoadError(f"{where} has samples of shape {tuple(arr.shape[1:])}, the model input is "
                             f"{tuple(shape[1:])}")
    return arr


def _check_finite(named: Any, path: Path) -> None:
    """Refuse NaN/Inf weights up front, naming the tensor (they would surface as a verification mismatch)."""
    import torch

    for name, t in named:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ModelLoadError(f"{path}: tensor '{name}' holds {bad} non-finite value(s) (NaN/Inf); "
                                 "the weights are unusable")


def check_input_shape(loaded: LoadedModel, path: Path, settings: CompileSettings) -> None:
    """One forward pass of zeros at the input shape: a shape that does not fit the model is bad input."""
    import torch

    shape = loaded.input_shape
    if shape is None:
        return
    where = "--input-shape" if settings.input_shape else f"{path}: field 'input_shape'"
    try:
        with torch.no_grad():
            loaded.module(torch.zeros(shape))
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise ModelLoadError(f"{where} {list(shape)} does not fit the model ({_first_line(exc)})") from None


def _apply_state(module: Any, state: Any, path: Path) -> None:
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: 'state_dict' must be a dict of tensors")
    _check_finite(state.items(), path)
    try:
        result = module.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, AttributeError, ValueError) as exc:  # shape mismatches, non-tensor values
        detail = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ModelLoadError(f"{path}: weights do not fit the architecture ({detail[-1] if detail else exc})") from None
    if result.missing_keys or result.unexpected_keys:
        what = (f"missing {result.missing_keys[0]}" if result.missing_keys
                else f"unexpected {result.unexpected_keys[0]}")
        n = len(result.missing_keys) + len(result.unexpected_keys)
        raise ModelLoadError(f"{path}: weights do not fit the architecture ({what}; {n} key(s) differ)")


def is_torchscript(path: Path) -> bool:
    """``path`` is a TorchScript archive (``torch.jit.save``: a zip with a ``code/`` folder)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/")[1:2] == ["code"] for n in z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _load_torchscript(path: Path, settings: CompileSettings) -> LoadedModel:
    import torch

    if not settings.trust_pickle:
        raise ModelLoadError(
            f"{path}: a TorchScript archive; loading it runs the TorchScript code inside it. Re-run with "
            "--trust-pickle if you trust it (plus --input-shape), or save a state dict or hwkit checkpoint "
            "(docs/model-input.md)")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a damaged archive surfaces as many types
        raise ModelLoadError(f"{path}: not a readable TorchScript archive ({type(exc).__name__}: "
                             f"{_first_line(exc)})") from None
    module.eval()
    _check_finite([*module.named_parameters(), *module.named_buffers()], path)
    return LoadedModel(module, "torchscript", settings.input_shape, settings.input_dtype)


def load_model(path: Path, settings: CompileSettings) -> LoadedModel:
    """Load ``path`` as described in the module docstring; never unpickles code unless trusted."""
    import torch

    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found")
    if is_torchscript(path):
        return _load_torchscript(path, settings)
    if settings.trust_pickle:
        obj = _torch_load(path, weights_only=False)
        if isinstance(obj, torch.nn.Module):
            obj.eval()
            _check_finite([*obj.named_parameters(), *obj.named_buffers()], path)
            return LoadedModel(obj, "pickle", settings.input_shape, settings.input_dtype)
    else:
        obj = _torch_load(path, weights_only=True)

    if isinstance(obj, dict) and CHECKPOINT_KEY in obj:
        if obj[CHECKPOINT_KEY] != 1:
            raise ModelLoadError(f"{path}: unsupported hwkit checkpoint version {obj[CHECKPOINT_KEY]!r}")
        for key in ("arch", "state_dict"):
            if key not in obj:
                raise ModelLoadError(f"{path}: hwkit checkpoint lacks '{key}'")
        kwargs = obj.get("arch_kwargs", {})
        if not isinstance(kwargs, dict):
            raise ModelLoadError(f"{path}: 'arch_kwargs' must be a dict")
        # quantised from the user's own architecture: rebuilding runs that code, so the user names it again
        if obj["arch"] == "quantized" and kwargs.get("user_arch") and settings.arch != kwargs.get("float_arch"):
            raise ModelLoadError(
                f"{path}: quantised from the architecture --arch {kwargs.get('float_arch')}; pass that --arch "
                "to rebuild it (the checkpoint cannot choose code to run)")
        if not all(isinstance(k, str) for k in kwargs):
            raise ModelLoadError(f"{path}: 'arch_kwargs' keys must be strings")
        if not isinstance(obj["arch"], str):
            raise ModelLoadError(f"{path}: field 'arch' must be a name, got {type(obj['arch']).__name__}")
        meta = obj.get("meta", {})
        if not isinstance(meta, dict):
            raise ModelLoadError(f"{path}: field 'meta' must be a dict, got {type(meta).__name__}")
        shape = settings.input_shape or _shape(obj.get("input_shape"), path)
        dtype = settings.input_dtype or _dtype(obj.get("input_dtype"), path)
        golden = _golden(obj.get("golden_inputs"), path, shape)
        try:
            build = builder(obj["arch"])
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: {exc}") from None
        try:
            module = build(**kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path}: arch_kwargs do not fit architecture '{obj['arch']}' "
                                 f"({_first_line(exc)})") from None
        _apply_state(module, obj["state_dict"], path)
        module.eval()
        return LoadedModel(module, "hwkit-checkpoint", shape, dtype, golden, dict(meta))

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if not settings.arch:
            raise ModelLoadError(
                f"{path}: file is a plain state dict; name the architecture with --arch module:function "
                "(and --input-shape), or save a hwkit checkpoint"
            )
        try:
            module = user_builder(settings.arch)(**dict(settings.arch_kwargs))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"--arch {settings.arch}: arguments do not fit ({exc})") from None
        _apply_state(module, obj, path)
        module.eval()
        return LoadedModel(module, "state-dict", settings.input_shape, settings.input_dtype)

    kind = type(obj).__name__
    raise ModelLoadError(
        f"{path}: holds a {kind}, not a hwkit checkpoint, a state dict or (with --trust-pickle) an nn.Module"
    )


# ------------------------------------------------------------------------------ Hugging Face directories

PRUNED_KEY = "hwkit_pruned"
"""config.json key of a pruned Hugging Face model: ``{"linear_shapes": {module: [out, in]}, ...}``."""


def is_hf_dir(path: Path) -> bool:
    """A directory holding a Hugging Face ``config.json``."""
    return path.is_dir() and (path / "config.json").is_file()


def _hf_error(path: Path, exc: BaseException) -> ModelLoadError:
    return ModelLoadError(f"{path}: cannot load the Hugging Face model ({_first_line(exc)})")


def reshape_linears(model: Any, shapes: dict[str, Any]) -> None:
    """Replace each named nn.Linear by an uninitialised one of shape ``[out, in]`` (bias kept if it had one)."""
    import torch
    from torch import nn

    for name, shape in shapes.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ModelLoadError(f"pruned layer '{name}' is not in the model") from None
        if not isinstance(old, nn.Linear) or not isinstance(shape, list | tuple) or len(shape) != 2:
            raise ModelLoadError(f"pruned layer '{name}': expected an nn.Linear and [out, in], got {shape!r}")
        parent, _, child = name.rpartition(".")
        with torch.device("meta"):
            new = nn.Linear(int(shape[1]), int(shape[0]), bias=old.bias is not None)
        setattr(model.get_submodule(parent) if parent else model, child, new.to_empty(device="cpu"))


def load_hf_dir(path: Path) -> LoadedModel:
    """A Hugging Face model directory (``AutoModel.from_pretrained(dir, local_files_only=True)``: safetensors or
    a weights-only .bin, no remote code), or a pruned one written by ``hwkit prune`` (rebuilt from its config and
    the recorded Linear shapes)."""
    import json

    try:
        import transformers
    except ImportError:
        raise ModelLoadError(f"{path}: loading a Hugging Face directory needs the 'transformers' package") from None
    try:
        cfg_json = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}/config.json: not readable JSON ({_first_line(exc)})") from None
    pruned = cfg_json.get(PRUNED_KEY)
    try:
        if pruned is None:
            model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        else:
            from safetensors.torch import load_file

            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
            model = transformers.AutoModel.from_config(config)
            reshape_linears(model, dict(pruned.get("linear_shapes", {})))
            state = load_file(str(path / "model.safetensors"))
            _apply_state(model, state, path)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise _hf_error(path, exc) from None
    model.eval()
    return LoadedModel(model, "hf-dir", None, None, None, {"hf_dir": str(path), "pruned": pruned is not None})


def load_any(path: Path, settings: CompileSettings) -> LoadedModel:
    """:func:`load_hf_dir` for a Hugging Face directory, else :func:`load_model`."""
    if is_hf_dir(path):
        return load_hf_dir(path)
    if path.is_dir():
        raise ModelLoadError(f"{path}: a directory without config.json (not a Hugging Face model directory)")
    return load_model(path, settings)
