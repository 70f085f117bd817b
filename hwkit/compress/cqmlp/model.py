"""CQMLP: the custom-quantised MLP CAN intrusion detector (Khandelwal & Shreejith, FPL 2023).

Input: a block of ``n`` consecutive CAN frames, each encoded as 10 raw bytes
``[ID >> 8, ID & 0xFF, D0, ..., D7]`` (FINN input type UINT8, no normalisation, no input
quantiser). Topology (paper, Fig. 2): 40-256-128-64-32-4, every hidden layer
QuantLinear(bias) -> BatchNorm1d -> QuantReLU, a QuantLinear head whose logits are not quantised
(softmax in training, argmax in hardware). 2-bit weights and activations: 54,824 learnable
parameters (53,860 linear + 960 BatchNorm affine + 4 learned QuantReLU scales).

Bit width and depth are parameters so the design space (2/3/4 bits, fewer hidden layers) can be
explored with the same builder; checkpoints name it as arch ``"cqmlp"``.

``per_channel=True`` gives every output neuron of every QuantLinear its own weight scale (Brevitas
``weight_scaling_per_output_channel``, still the max-abs statistic, so no learnable parameter is
added: still 54,824). FINN's streamlining folds per-channel scales into the MVAU thresholds.

``weight_values`` picks the weight grid: ``"int"`` (default, Brevitas' narrow symmetric range, at 2
bits ternary), ``"full"`` (every code of the b-bit two's-complement type, at 2 bits {-2, -1, 0, 1}:
four levels instead of three, FINN type INT2 either way; measured in docs/cqmlp.md) or ``"pow2"``
(0 and signed powers of two, :mod:`hwkit.compress.shiftadd.pow2`).

``weight_scaling="mean"`` sets each weight scale to the mean absolute weight (Brevitas
``StatsOp.AVE``) instead of the maximum (``"max"``, the Brevitas default). At 2 bits the weights are
ternary, {-1, 0, +1} x scale, and a weight becomes 0 below half the scale. With max-abs scales about
80% of a Gaussian-initialised row starts at 0, with mean-abs scales about 30% (near the
ternary-weight-network threshold, 0.7 x mean |w|). Statistics only: no learnable parameter is added,
and the exported QONNX carries a constant scale as before.

``weight_scaling="learned"`` makes every weight scale a parameter (Brevitas
``ScalingImplType.PARAMETER_FROM_STATS``, LSQ-style): initialised from the max-abs statistic on the first
forward pass, then trained by gradient descent with the weights (straight-through rounding). Per output
channel with ``per_channel`` it adds one parameter per neuron (484 for the paper's topology). The
activation scales of the QuantReLUs are already learned parameters initialised from runtime statistics
(Brevitas' default ``ParamFromRuntimePercentileScaling``). The export still carries constant scales, so
FINN streamlines a learned-scale model like a statistics one.

``float_twin=True`` builds the unquantised twin of the same topology (``nn.Linear`` / BatchNorm /
``nn.ReLU``, raw uint8 inputs): its state-dict keys are a subset of the quantised model's, so it can
teach (distillation) and initialise the 2-bit model (``hwkit train cqmlp --distill``, docs/cqmlp.md). It
cannot be compiled for FINN.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from hwkit.models.mlp import build_qmlp

CQMLP_HIDDEN: tuple[int, ...] = (256, 128, 64, 32)
"""The paper's hidden widths."""
CQMLP_CLASSES: tuple[str, ...] = ("Benign", "DoS", "Fuzzing", "RPM")
"""Output classes, in logit order (gear spoofing is not one of the paper's classes)."""
FRAME_BYTES = 10
"""Features per CAN frame: 2 ID bytes + 8 payload bytes."""
WEIGHT_SCALINGS: tuple[str, ...] = ("max", "mean", "learned")
"""Weight scales: the max |w| statistic (Brevitas default), the mean |w| statistic, or a learned parameter
initialised from max |w| (per tensor or per output channel)."""
WEIGHT_VALUES: tuple[str, ...] = ("int", "full", "pow2")


def build_cqmlp(
    bits: int = 2,
    depth: int = 4,
    window: int = 4,
    n_classes: int = 4,
    hidden: Sequence[int] | None = None,
    act_bits: int | None = None,
    dropout: float = 0.0,
    per_channel: bool = False,
    weight_scaling: str = "max",
    layer_bits: Sequence[int] | None = None,
    layer_act_bits: Sequence[int] | None = None,
    weight_values: str = "int",
    float_twin: bool = False,
) -> nn.Sequential:
    """The CQMLP: ``depth`` hidden layers taken from 256-128-64-32 (or ``hidden``), ``bits``-bit
    weights and activations (``act_bits`` overrides the activation width), input ``10 * window`` bytes.

    Mixed precision: ``layer_bits`` gives every QuantLinear its own weight width (one per hidden layer
    plus the head) and ``layer_act_bits`` every QuantReLU its own activation width (one per hidden
    layer); they override ``bits`` / ``act_bits`` layer by layer.

    Dropout is not mentioned for CQMLP (it is for the 8-bit predecessor); it adds no parameters and
    defaults to off.
    """
    widths = list(hidden) if hidden is not None else list(CQMLP_HIDDEN[:depth])
    if not widths or any(w <= 0 for w in widths):
        raise ValueError(f"CQMLP needs at least one positive hidden width, got {widths} (depth={depth})")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    if weight_scaling not in WEIGHT_SCALINGS:
        raise ValueError(f"weight_scaling must be one of {WEIGHT_SCALINGS}, got {weight_scaling!r}")
    if weight_values not in WEIGHT_VALUES:
        raise ValueError(f"weight_values must be one of {WEIGHT_VALUES}, got {weight_values!r}")
    if float_twin:
        return build_cqmlp_float(widths, window, n_classes, dropout)
    abits = bits if act_bits is None else act_bits
    wbits_list = _per_layer("layer_bits", layer_bits, bits, len(widths) + 1)
    abits_list = _per_layer("layer_act_bits", layer_act_bits, abits, len(widths))
    if weight_values == "pow2" and min(wbits_list) < 2:
        raise ValueError(f"power-of-two weights need at least 2 bits per layer, got {wbits_list}")
    if (not per_channel and weight_scaling == "max" and layer_bits is None and layer_act_bits is None
            and weight_values == "int"):
        return build_qmlp(FRAME_BYTES * window, widths, n_classes, weight_bits=bits, act_bits=abits, bias=True,
                          batchnorm=True, dropout=dropout)
    import brevitas.nn as qnn
    from brevitas.inject.enum import ScalingImplType, StatsOp
    from brevitas.quant import Int8WeightPerTensorFloat

    class WeightQuant(Int8WeightPerTensorFloat):  # brevitas injector
        scaling_per_output_channel = per_channel
        scaling_stats_op = StatsOp.AVE if weight_scaling == "mean" else StatsOp.MAX
        # "full": all 2^b codes, -2^(b-1) .. 2^(b-1)-1 (at 2 bits {-2, -1, 0, 1} x scale, scale = max|w| / 2);
        # "int" keeps Brevitas' narrow range (at 2 bits ternary {-1, 0, 1} x max|w|)
        narrow_range = weight_values != "full"
        # "learned": a parameter initialised from the max-abs statistic on the first forward (LSQ-style)
        scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS if weight_scaling == "learned" else \
            ScalingImplType.STATS

    weight_quant: type = WeightQuant
    if weight_values == "pow2":
        from hwkit.compress.shiftadd.pow2 import Pow2IntScaling, Pow2RoundSte

        class Pow2WeightQuant(WeightQuant):  # brevitas injector
            float_to_int_impl = Pow2RoundSte
            int_scaling_impl = Pow2IntScaling

        weight_quant = Pow2WeightQuant

    # Same module order (and state-dict keys) as build_qmlp; only the weight quantisers differ.
    layers: list[nn.Module] = []
    width = FRAME_BYTES * window
    for i, h in enumerate(widths):
        layers.append(qnn.QuantLinear(width, h, bias=True, weight_bit_width=wbits_list[i], weight_quant=weight_quant))
        layers.append(nn.BatchNorm1d(h))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(qnn.QuantReLU(bit_width=abits_list[i]))
        width = h
    layers.append(qnn.QuantLinear(width, n_classes, bias=True, weight_bit_width=wbits_list[-1],
                                  weight_quant=weight_quant))
    return nn.Sequential(*layers)


def build_cqmlp_float(hidden: Sequence[int], window: int = 4, n_classes: int = 4,
                      dropout: float = 0.0) -> nn.Sequential:
    """The float twin: the CQMLP's layers unquantised (Linear -> BatchNorm1d -> ReLU, a Linear head), raw uint8
    inputs. Same module indices as :func:`build_cqmlp`, so its state dict loads into the quantised model."""
    layers: list[nn.Module] = []
    width = FRAME_BYTES * window
    for h in hidden:
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.ReLU())
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def _per_layer(name: str, values: Sequence[int] | None, default: int, n: int) -> list[int]:
    """``values`` checked (n integers 1..8), or ``default`` n times."""
    if values is None:
        return [default] * n
    out = list(values)
    if len(out) != n or any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8 for b in out):
        raise ValueError(f"{name} must list {n} integers 1..8 (one per layer), got {out}")
    return out


def count_learnable(model: nn.Module) -> int:
    """Learnable parameters (``requires_grad``), the paper's 54,824 for the default CQMLP."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
