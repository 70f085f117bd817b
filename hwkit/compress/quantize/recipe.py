"""The quantisation recipe: which Brevitas quantisers go where, and the deterministic float -> quantised rewrite.

A :class:`QuantRecipe` plus the float architecture is everything needed to rebuild the quantised
module (``hwkit.load`` does so for checkpoints with ``arch = "quantized"``): the rewrite uses only
Brevitas's graph transforms (``preprocess_for_quantize`` and the handlers of
``brevitas.graph.quantize.quantize``) with a map chosen for FINN:

* weights: signed narrow-range integers with a per-output-channel float scale (``Int8WeightPerChannelFloat``
  at the requested width);
* activations: unsigned after ReLU (``Uint8ActPerTensorFloat``), signed where a requantisation is
  needed (residual adds, a layer whose input is not quantised), per-tensor scale from calibration;
* an 8-bit input quantiser (unsigned when the calibration inputs are never negative) with a
  power-of-two scale, and an 8-bit requantisation of the model output (FINN then builds integer
  thresholds at both ends). The power-of-two scale keeps integer-valued inputs (pixels, digits'
  0..16) off the rounding ties where QONNX's Quant (half to even) and FINN's thresholds (half up)
  disagree;
* biases float by default: every layer output is requantised (a ReLU quantiser or the 8-bit output
  quantiser), so FINN folds the bias into that quantiser's integer thresholds; ``bias_bits`` makes
  Linear biases integers at the accumulator scale (``IntBias``) for FINN-only use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from hwkit.errors import UnsupportedLayerError

INPUT_QUANT = "x_quant"
"""Name Brevitas gives the input quantiser of a model whose forward argument is ``x``."""


@dataclass(frozen=True)
class QuantRecipe:
    """Quantisation settings; stored in the checkpoint so that the quantised module can be rebuilt."""

    weight_bits: int = 8
    """Default weight bit width."""
    act_bits: int = 8
    """Activation bit width (ReLU outputs and internal requantisation)."""
    input_bits: int = 8
    """Bit width of the input quantiser."""
    output_bits: int = 8
    """Bit width of the requantised model output (logits)."""
    input_signed: bool = True
    """Signed input quantiser; False (unsigned) when the calibration inputs are never negative: FINN
    then needs no bias after the input thresholds, which a padded first conv could not absorb."""
    layer_bits: dict[str, int] = field(default_factory=dict)
    """Weight bit width per layer (PyTorch module path), overriding ``weight_bits``."""
    bias_bits: int | None = None
    """Integer Linear-bias width (scale = input scale x weight scale); None: float biases, which FINN
    folds into the next thresholds and which ONNX Runtime's QCDQ export accepts (it refuses quantised biases)."""
    dropped: tuple[str, ...] = ()
    """Module paths replaced by identity before quantising (a trailing Softmax)."""
    added_bias: tuple[str, ...] = ()
    """Quantised layers that bias correction gave a bias they did not have."""
    avg_pools: dict[str, list[int]] = field(default_factory=dict)
    """Average pools (module path -> [kh, kw, sh, sw], from :func:`avg_pool_windows` on the input shape), rebuilt as
    Brevitas ``TruncAvgPool2d`` (FLOOR), the form FINN maps; the window is recorded because an adaptive pool's
    window depends on the input size."""

    def to_json(self) -> dict[str, Any]:
        """Plain values for the checkpoint."""
        d = asdict(self)
        d["dropped"] = list(self.dropped)
        d["added_bias"] = list(self.added_bias)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QuantRecipe:
        """Inverse of :meth:`to_json` (unknown keys are an error)."""
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown recipe keys {sorted(extra)}")
        return cls(**{**d, "layer_bits": {str(k): int(v) for k, v in d.get("layer_bits", {}).items()},
                      "dropped": tuple(d.get("dropped", ())), "added_bias": tuple(d.get("added_bias", ())),
                      "avg_pools": {str(k): [int(x) for x in v] for k, v in d.get("avg_pools", {}).items()}})


_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten, nn.Unflatten,
                 nn.MaxPool1d, nn.MaxPool2d, nn.Sequential, nn.ModuleList, nn.ModuleDict)
_COMPUTE = (nn.Linear, nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_ACTS = (nn.ReLU, nn.ReLU6)
_TAIL = (nn.Softmax, nn.LogSoftmax)

_ADVICE = {
    "Sigmoid": "FINN has no sigmoid layer: replace it with ReLU/Hardtanh and retrain, or apply it on the host",
    "Tanh": "FINN has no tanh layer: replace it with ReLU/Hardtanh and retrain, or apply it on the host",
    "GELU": "FINN has no GELU layer: replace it with ReLU and retrain",
    "SiLU": "FINN has no SiLU layer: replace it with ReLU and retrain",
    "LayerNorm": "FINN has no LayerNorm: use BatchNorm (folded into thresholds) or remove it",
    "Softmax": "only a Softmax at the very end is supported (it is dropped: argmax is unchanged); move it out",
    "LogSoftmax": "only a LogSoftmax at the very end is supported (it is dropped); move it out",
    "MultiheadAttention": "attention is not supported by FINN's dataflow layers; quantise an MLP/CNN part only",
    "LSTM": "recurrent layers are not supported by FINN's dataflow layers",
    "GRU": "recurrent layers are not supported by FINN's dataflow layers",
    "RNN": "recurrent layers are not supported by FINN's dataflow layers",
    "Embedding": "embeddings are not supported: feed the model embedded inputs",
}

_AVG_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]


def trailing_softmax(model: nn.Module) -> list[str]:
    """Paths of Softmax/LogSoftmax modules that are the last leaf in registration order."""
    leaves = [(n, m) for n, m in _leaf_modules(model) if not isinstance(m, nn.Identity | nn.Dropout)]
    return [leaves[-1][0]] if leaves and isinstance(leaves[-1][1], _TAIL) else []


def check_supported(model: nn.Module, dropped: tuple[str, ...] = ()) -> None:
    """Raise :class:`UnsupportedLayerError` naming every layer FINN cannot take (module path + what to do)."""
    bad = []
    for name, mod in _leaf_modules(model):
        if name in dropped or isinstance(mod, _PASS_THROUGH + _COMPUTE + _NORMS + _ACTS + _AVG_POOLS):
            continue
        kind = type(mod).__name__
        bad.append(f"{name} ({kind}): {_ADVICE.get(kind, 'no quantised FINN layer for it; replace or remove it')}")
    for name, mod in _leaf_modules(model):
        if isinstance(mod, nn.Conv1d | nn.Conv2d) and mod.groups not in (1, mod.in_channels):
            bad.append(f"{name} (Conv with groups={mod.groups}): use groups=1 or depthwise")
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise UnsupportedLayerError("cannot quantise for FINN: " + "; ".join(bad[:3]) + more)


def avg_pool_windows(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, list[int]]:
    """[kh, kw, sh, sw] of every AvgPool2d / AdaptiveAvgPool2d for an input of ``input_shape`` (one forward on
    zeros). FINN maps an average pool as a sum over a window truncated to the output width (Brevitas
    TruncAvgPool2d, FLOOR), so the window must tile the input exactly: no padding, no ceil mode, and an adaptive
    pool's input a multiple of its output. Anything else is an :class:`UnsupportedLayerError` naming the layer."""
    import torch

    found: dict[str, list[int]] = {}
    hooks = []

    def pair(v: Any) -> tuple[int, int]:
        return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

    def window(name: str, mod: nn.Module, x: Any) -> None:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            oh, ow = pair(mod.output_size if mod.output_size is not None else 1)
            if h % oh or w % ow:
                raise UnsupportedLayerError(f"cannot quantise for FINN: {name} (AdaptiveAvgPool2d): its {h}x{w} "
                                            f"input is not a multiple of its {oh}x{ow} output")
            found[name] = [h // oh, w // ow, h // oh, w // ow]
            return
        assert isinstance(mod, nn.AvgPool2d)
        (kh, kw), (sh, sw) = pair(mod.kernel_size), pair(mod.stride if mod.stride is not None else mod.kernel_size)
        if pair(mod.padding) != (0, 0) or mod.ceil_mode or mod.divisor_override is not None:
            raise UnsupportedLayerError(f"cannot quantise for FINN: {name} (AvgPool2d): padding, ceil_mode and "
                                        "divisor_override are not mapped; use padding=0")
        found[name] = [kh, kw, sh, sw]

    for name, mod in model.named_modules():
        if isinstance(mod, _AVG_POOLS):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, inp, name=name: window(name, m, inp[0])))
    if not hooks:
        return found
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape[1:]))
    finally:
        for h in hooks:
            h.remove()
    return found


def _trunc_avg_pools(gm: Any, recipe: QuantRecipe) -> None:
    """Every average pool of ``gm`` -> Brevitas TruncAvgPool2d over the recorded window at ``act_bits`` (FLOOR:
    finn-plus's QONNX conversion takes only that rounding mode)."""
    import brevitas.nn as qnn

    for name, mod in list(gm.named_modules()):
        if not isinstance(mod, _AVG_POOLS):
            continue
        if name not in recipe.avg_pools:
            raise UnsupportedLayerError(f"cannot quantise for FINN: {name} ({type(mod).__name__}): its window is "
                                        "unknown (quantise with the model's input shape)")
        kh, kw, sh, sw = recipe.avg_pools[name]
        gm.add_submodule(name, qnn.TruncAvgPool2d(kernel_size=(kh, kw), stride=(sh, sw), bit_width=recipe.act_bits,
                                                  float_to_int_impl_type="FLOOR", return_quant_tensor=True))


def _no_requant_after_trunc_pools(gm: Any) -> None:
    """Brevitas's layer handler puts a signed QuantIdentity in front of a Linear fed (through a flatten) by a
    TruncAvgPool2d, whose output is already an unsigned quantised tensor; FINN's Thresholding then gets negative
    thresholds on an unsigned input. The TruncAvgPool2d output is what the Linear takes: the identity is removed."""
    import brevitas.nn as qnn
    import torch

    def source(node: Any) -> Any:
        while node.op == "call_function" and node.target in (torch.flatten, torch.reshape) or \
                node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Flatten):
            node = node.args[0]
        return node

    for node in list(gm.graph.nodes):
        if node.op != "call_module" or type(gm.get_submodule(node.target)) is not qnn.QuantIdentity:
            continue
        src = source(node.args[0])
        if src.op == "call_module" and isinstance(gm.get_submodule(src.target), qnn.TruncAvgPool2d):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            gm.delete_submodule(node.target)
    gm.recompile()


def _drop(model: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())


def _maps(recipe: QuantRecipe, names: dict[int, str]) -> tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]:
    """(compute layer map, activation map, identity map) for ``brevitas.graph.quantize``."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Uint8ActPerTensorFloat
    from brevitas.quant.scaled_int import IntBias

    def wbits(module: nn.Module) -> int:
        return int(recipe.layer_bits.get(names.get(id(module), ""), recipe.weight_bits))

    conv = {"weight_quant": Int8WeightPerChannelFloat, "weight_bit_width": lambda module: wbits(module),
            "bias_quant": None, "return_quant_tensor": True}
    # Conv biases stay float even with bias_bits: qonnx's ExtractBiasFromConv cannot reshape the scalar
    # zero point of a quantised conv bias (qonnx 0.4/0.5).
    common = dict(conv) if recipe.bias_bits is None else {**conv, "bias_quant": IntBias,
                                                           "bias_bit_width": recipe.bias_bits}
    layers: dict[Any, Any] = {nn.Linear: (qnn.QuantLinear, common), nn.Conv1d: (qnn.QuantConv1d, conv),
                              nn.Conv2d: (qnn.QuantConv2d, conv)}
    relu = (qnn.QuantReLU, {"act_quant": Uint8ActPerTensorFloat, "bit_width": recipe.act_bits,
                            "return_quant_tensor": True})
    acts: dict[Any, Any] = {nn.ReLU: relu}
    idents = {"signed": (qnn.QuantIdentity, {"act_quant": Int8ActPerTensorFloat, "bit_width": recipe.act_bits,
                                             "return_quant_tensor": True}),
              "unsigned": (qnn.QuantIdentity, {"act_quant": Uint8ActPerTensorFloat, "bit_width": recipe.act_bits,
                                               "return_quant_tensor": True})}
    return layers, acts, idents


def _requantize_ends(gm: Any, recipe: QuantRecipe) -> None:
    """Input quantiser and the requantisation of the output at their own widths (8 bits by default)."""
    import brevitas.nn as qnn
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Int8ActPerTensorFloat,
        Uint8ActPerTensorFixedPoint,
        Uint8ActPerTensorFloat,
    )

    def replace(target: str, bits: int, signed: bool | None = None) -> None:
        old = gm.get_submodule(target)
        if signed is None:
            quant = Int8ActPerTensorFloat if old.act_quant.is_signed else Uint8ActPerTensorFloat
        else:  # the input: a power-of-two scale (see the module docstring)
            quant = Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint
        gm.add_submodule(target, qnn.QuantIdentity(act_quant=quant, bit_width=bits,
                                                   return_quant_tensor=old.return_quant_tensor))

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            for user in node.users:
                if user.op == "call_module" and isinstance(gm.get_submodule(user.target), qnn.QuantIdentity):
                    replace(user.target, recipe.input_bits, recipe.input_signed)
        if node.op == "output":
            arg = node.args[0]
            if getattr(arg, "op", None) == "call_module" and isinstance(gm.get_submodule(arg.target),
                                                                         qnn.QuantIdentity):
                replace(arg.target, recipe.output_bits)


def _flatten_as_function(gm: Any) -> None:
    """``nn.Flatten`` modules -> ``torch.flatten`` calls, which Brevitas's handlers see through: a
    quantised ReLU -> MaxPool -> Flatten -> Linear chain then needs no extra (signed) requantisation,
    whose negative thresholds on an unsigned input FINN's Thresholding layer rejects."""
    import torch

    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Flatten):
            mod = gm.get_submodule(node.target)
            with gm.graph.inserting_after(node):
                new = gm.graph.call_function(torch.flatten, (node.args[0],),
                                             {"start_dim": mod.start_dim, "end_dim": mod.end_dim})
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            gm.delete_submodule(node.target)
    gm.recompile()


def quantize_float(model: nn.Module, recipe: QuantRecipe) -> Any:
    """The quantised GraphModule for ``model`` (left unchanged) under ``recipe``; deterministic in the
    architecture, so the same call rebuilds a saved model before its state dict is loaded."""
    import copy

    import torch
    from brevitas import config
    from brevitas.graph.quantize import UNSIGNED_ACT_TUPLE, align_input_quant, preprocess_for_quantize
    from brevitas.graph.quantize_impl import (
        act_handler,
        add_output_quant_handler,
        inp_placeholder_handler,
        layer_handler,
        residual_handler,
    )
    from brevitas.graph.standardize import DisableLastReturnQuantTensor

    model = copy.deepcopy(model).eval()
    _drop(model, recipe.dropped)
    check_supported(model)
    try:
        gm = preprocess_for_quantize(model, equalize_iters=0, merge_bn=True)
    except Exception as exc:  # torch.fx raises many types when a forward cannot be traced
        text = str(exc).strip().splitlines()
        raise UnsupportedLayerError(
            f"cannot trace the model's forward with torch.fx ({type(exc).__name__}: {text[0] if text else ''}); "
            "make forward free of data-dependent Python control flow") from None
    _flatten_as_function(gm)
    _trunc_avg_pools(gm, recipe)
    names = {id(m): n for n, m in gm.named_modules()}
    layers, acts, idents = _maps(recipe, names)
    saved = config.IGNORE_MISSING_KEYS
    config.IGNORE_MISSING_KEYS = True
    try:
        # the steps of brevitas.graph.quantize.quantize, with this map
        gm = inp_placeholder_handler(gm, input_quantizer=idents["signed"])
        gm = act_handler(gm, layer_map=acts)
        gm = add_output_quant_handler(gm, idents, acts, UNSIGNED_ACT_TUPLE)
        gm = residual_handler(gm, idents, acts, UNSIGNED_ACT_TUPLE, align_input_quant)
        gm = layer_handler(gm, layer_map=layers, quant_identity_map=idents, quant_act_map=acts,
                           unsigned_act_tuple=UNSIGNED_ACT_TUPLE, requantize_output=True)
        _requantize_ends(gm, recipe)
        _no_requant_after_trunc_pools(gm)
        gm = DisableLastReturnQuantTensor().apply(gm)
    finally:
        config.IGNORE_MISSING_KEYS = saved
    for name in recipe.added_bias:
        mod = gm.get_submodule(name)
        if mod.bias is None:
            mod.register_parameter("bias", nn.Parameter(torch.zeros(mod.weight.shape[0])))
    gm.recompile()
    return gm.eval()


def quant_layers(gm: Any) -> list[tuple[str, Any]]:
    """(path, module) of every quantised weight layer."""
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    return [(n, m) for n, m in gm.named_modules() if isinstance(m, QuantWeightBiasInputOutputLayer)]


def float_layer_names(model: nn.Module) -> list[str]:
    """Paths of the float model's weight layers (what ``--layer-bits`` may name)."""
    return [n for n, m in model.named_modules() if isinstance(m, _COMPUTE)]


def rebuild(float_arch: str, float_kwargs: dict[str, Any], recipe: dict[str, Any], user_arch: bool = False) -> Any:
    """The quantised module (untrained scales) for a checkpoint's recipe: the float architecture
    ``float_arch`` (an :data:`hwkit.models.ARCHS` name, or with ``user_arch`` a ``module:function`` the
    user named with ``--arch``) rewritten by :func:`quantize_float`. ``hwkit.load`` then loads the state dict."""
    from hwkit.models import builder, user_builder

    build = user_builder(float_arch) if user_arch else builder(float_arch)
    return quantize_float(build(**float_kwargs), QuantRecipe.from_json(dict(recipe)))
