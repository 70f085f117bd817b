"""Shift weights in a FINN dataflow build: power-of-two weights as the integer weights of an MVAU.

FINN has no shift-only matrix-vector unit: its MVAU multiplies a ``w``-bit integer weight by an ``a``-bit integer
activation. A DeepShift weight ``s * 2**p`` with ``p`` in ``[pmin, 0]`` (``k = 1 - pmin`` exponents) becomes, over
the per-tensor scale ``2**pmin``, the integer ``s * 2**(p - pmin)`` in ``{0, +-1, +-2, ..., +-2**(k-1)}``, which
needs ``k + 1`` signed bits (``int_width``). So the width a shift weight costs in FINN grows *linearly* with the
number of exponents, where an ordinary integer weight with as many levels grows logarithmically: DeepShift-PS
at 5 bits (15 exponents) is an INT16 MVAU weight, at 3 bits (3 exponents: 0, +-1, +-2, +-4) an INT4 one.

``build_shift_mlp`` is a Brevitas MLP of the qmlp shape (QuantLinear -> BatchNorm1d -> QuantReLU, integer
inputs) whose weight quantiser is hwkit's power-of-two one (``hwkit.compress.shiftadd.pow2``: log-domain rounding
onto the
``b``-bit integer grid restricted to powers of two, scale = max|w| / 2**(b-2), i.e. DeepShift-Q with a per-tensor
scale). At export the QONNX ``Quant`` node carries that scale and ``INTb``; ``shift_codes`` recovers sign and
exponent from the integer weights and checks they are exact powers of two. Usable as ``--arch
hwkit.compress.shiftadd.finn:build_shift_mlp`` for ``hwkit compile``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hwkit.errors import InputError


def int_width(exponents: int) -> int:
    """Signed integer width of a shift weight with ``exponents`` distinct exponents (plus sign and zero)."""
    if exponents < 1:
        raise InputError(f"a shift weight needs at least one exponent, got {exponents}")
    return exponents + 1


def ps_int_width(weight_bits: int) -> int:
    """MVAU weight width of a DeepShift-PS layer of ``weight_bits`` (pmin = -(2**(b-1) - 2)): ``2**(b-1)``."""
    if weight_bits < 2:
        raise InputError(f"DeepShift-PS needs at least 2 bits, got {weight_bits}")
    return int_width(2 ** (weight_bits - 1) - 1)


def q_int_width(weight_bits: int) -> int:
    """MVAU weight width of a DeepShift-Q layer (pmin = -(2**(b-1) - 1)): ``2**(b-1) + 1``."""
    if weight_bits < 2:
        raise InputError(f"DeepShift-Q needs at least 2 bits, got {weight_bits}")
    return int_width(2 ** (weight_bits - 1))


def build_shift_mlp(in_features: int = 64, hidden: Sequence[int] = (64, 32), out_features: int = 10,
                    weight_bits: int = 4, act_bits: int = 2, weight_values: str = "pow2") -> Any:
    """Brevitas MLP with integer inputs, ``act_bits`` ReLU activations and ``weight_bits`` per-tensor weights:
    powers of two on the INT``weight_bits`` grid (``"pow2"``, exponents 0..weight_bits-2) or every integer
    (``"int"``)."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8WeightPerTensorFloat
    from torch import nn

    if weight_values not in ("int", "pow2"):
        raise InputError(f"weight_values must be 'int' or 'pow2', got {weight_values!r}")
    if not 2 <= weight_bits <= 16 or not 1 <= act_bits <= 8:
        raise InputError(f"weight_bits must be 2..16 and act_bits 1..8, got {weight_bits}, {act_bits}")

    quant: Any = Int8WeightPerTensorFloat
    if weight_values == "pow2":
        from hwkit.compress.shiftadd.pow2 import Pow2IntScaling, Pow2RoundSte

        class Pow2WeightQuant(Int8WeightPerTensorFloat):  # brevitas injector
            float_to_int_impl = Pow2RoundSte
            int_scaling_impl = Pow2IntScaling

        quant = Pow2WeightQuant
    layers: list[Any] = []
    width = in_features
    for h in hidden:
        layers += [qnn.QuantLinear(width, h, bias=True, weight_bit_width=weight_bits, weight_quant=quant),
                   nn.BatchNorm1d(h), qnn.QuantReLU(bit_width=act_bits)]
        width = h
    layers.append(qnn.QuantLinear(width, out_features, bias=True, weight_bit_width=weight_bits, weight_quant=quant))
    return nn.Sequential(*layers)


def shift_codes(int_weights: Any, bit_width: int) -> tuple[Any, Any]:
    """Sign (int8, 0 for zero weights) and shift exponent ``e`` (``|w| = 2**e``) of integer weights that must be
    0 or +-powers of two within the signed ``bit_width`` range of a shift weight (|w| <= 2**(bit_width-2))."""
    import torch

    w = torch.as_tensor(int_weights)
    if not torch.equal(w, torch.round(w)):
        raise InputError("integer weights expected")
    mag = w.abs()
    nz = mag > 0
    e = torch.zeros_like(w, dtype=torch.int16)
    e[nz] = torch.round(torch.log2(mag[nz].double())).to(torch.int16)
    if not torch.equal(torch.pow(2.0, e[nz].double()), mag[nz].double()):
        raise InputError("not every non-zero weight is a power of two")
    if bool(nz.any()) and int(e[nz].max()) > bit_width - 2:
        raise InputError(f"a weight exceeds 2**{bit_width - 2}, the largest shift weight of INT{bit_width}")
    return torch.sign(w).to(torch.int8), e
