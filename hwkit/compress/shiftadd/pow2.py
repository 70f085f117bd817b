"""Power-of-two ("shift") integer weights for Brevitas QuantLinear layers.

A b-bit weight quantiser normally maps ``w / scale`` to the integers ``-(2**(b-1) - 1) .. 2**(b-1) - 1``
with ``scale = max|w| / (2**(b-1) - 1)``. The power-of-two variant keeps the same b-bit integer type (so
FINN and the QONNX graph see an ordinary INTb weight) but restricts the values to
``{0, +-1, +-2, ..., +-2**(b-2)}``, so every product becomes a shift (DeepShift's "Q" idea applied to an
integer grid): b = 2 is plain ternary, b = 3 gives {0, +-1, +-2}, b = 4 {0, +-1, +-2, +-4}.

Two pieces of the Brevitas quantiser change:

* the integer scaling is ``2**(b-2)`` instead of ``2**(b-1) - 1``, so the largest weight lands exactly
  on the largest power of two and the scale stays the max-abs statistic over ``2**(b-2)``;
* the float-to-int step rounds in the log domain, ``sign(x) * 2**round(log2|x|)``, with values below
  0.5 going to 0 (the same zero threshold as ordinary rounding); gradients pass straight through.

Rounding in the log domain is DeepShift's choice (our reading of the reference: the geometric midpoint
between two powers decides, so 3 -> 4 and 1.4 -> 1). The exported QONNX ``Quant`` node rounds
ordinarily, so :func:`project` writes the quantised weights back into the float weights before export;
the quantiser is idempotent on them (same scale, same integers), which the export's verification checks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

WEIGHT_VALUES: tuple[str, ...] = ("int", "pow2")
"""Weight value sets of the CQMLP builder: every integer of the grid, or powers of two only."""


class Pow2RoundSte(nn.Module):
    """``sign(x) * 2**round(log2|x|)`` (0 below 0.5) with a straight-through gradient."""

    def __init__(self) -> None:  # an explicit signature: Brevitas' injector inspects it
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mag = x.abs()
        # exponent >= 0: values in [0.5, 1) go to 1 (2**round(log2 0.6) would be 0.5, not an integer)
        p2 = torch.pow(2.0, torch.round(torch.log2(mag.clamp(min=1.0))))
        y = torch.where(mag < 0.5, torch.zeros_like(x), torch.sign(x) * p2)
        return x + (y - x).detach()


class Pow2IntScaling(nn.Module):
    """The integer the max-abs statistic maps to: ``2**(b-2)`` (b >= 2)."""

    def __init__(self, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, bit_width: torch.Tensor, signed: Any = None) -> torch.Tensor:
        return torch.pow(2.0, bit_width - 2).to(dtype=self.dtype or torch.float32)


def is_pow2_linear(layer: Any) -> bool:
    """A QuantLinear whose weight quantiser rounds to powers of two."""
    return any(isinstance(m, Pow2RoundSte) for m in getattr(layer, "weight_quant", nn.Module()).modules())


def project(model: nn.Module) -> int:
    """Write each power-of-two QuantLinear's quantised weight into its float weight (in place); returns
    how many layers were projected. Idempotent; the model's outputs do not change."""
    n = 0
    with torch.no_grad():
        for m in model.modules():
            if is_pow2_linear(m):
                qlin: Any = m  # a Brevitas QuantLinear (Brevitas ships no types)
                qlin.weight.copy_(qlin.quant_weight().value)
                n += 1
    return n


def integer_weights(layer: Any) -> torch.Tensor:
    """The integer weights of a QuantLinear (its quantised weight over its scale)."""
    q = layer.quant_weight()
    return torch.round(q.value / q.scale)
