"""Operation counts and compute energy of integer-weight (Brevitas) linear layers, by weight value.

For each non-zero integer weight ``q`` of a QuantLinear one product term is accumulated:

* ``|q| == 1``: no multiplier at all, only the add (or subtract);
* ``|q|`` a power of two: one shift and the add (a shift-add datapath);
* any other value: one integer multiplication and the add.

Adds accumulate the terms of an output row (terms - 1 adds) plus the bias. Zero weights cost nothing
(a sparse datapath). Energy per operation comes from :class:`hwkit.energy.ops.EnergyTable`
(45 nm, Horowitz ISSCC 2014; the shift cost is [UNCONFIRMED] there): int8 mult, int32 add, shift. It is
compute energy only (no memory traffic, no control), so the number is labelled ``analytical-estimate``;
it ranks designs by arithmetic, as the ShiftAdd papers do, and is not the FPGA's power.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LABEL = "analytical-estimate"


@dataclass(frozen=True)
class IntOps:
    """Operations of one forward pass per sample."""

    int_mult: int = 0
    shift: int = 0
    int_add: int = 0

    def __add__(self, o: IntOps) -> IntOps:
        return IntOps(self.int_mult + o.int_mult, self.shift + o.shift, self.int_add + o.int_add)

    def energy_pj(self) -> float:
        """Compute energy in pJ (45 nm table)."""
        from hwkit.energy.ops import EnergyTable

        t = EnergyTable()
        return self.int_mult * t.int8_mult_pj + self.shift * t.shift_pj + self.int_add * t.int32_add_pj


def ops_of_integer_weights(q: Any, bias: bool) -> IntOps:
    """Counts for one layer given its integer weight matrix ``q`` (out x in, numpy or torch)."""
    import numpy as np

    a = np.abs(np.asarray(q.detach().cpu().numpy() if hasattr(q, "detach") else q)).astype(np.int64)
    if a.ndim != 2:
        raise ValueError(f"integer weights must be a matrix, got shape {a.shape}")
    nz = a != 0
    pow2 = nz & ((a & (a - 1)) == 0)
    ones = a == 1
    terms = nz.sum(axis=1)
    adds = int(np.maximum(terms - 1, 0).sum()) + (a.shape[0] if bias else 0)
    return IntOps(int_mult=int((nz & ~pow2).sum()), shift=int((pow2 & ~ones).sum()), int_add=adds)


def model_int_ops(model: Any) -> dict[str, IntOps]:
    """Counts for every Brevitas QuantLinear of ``model``, by module name."""
    import brevitas.nn as qnn
    import torch

    from hwkit.compress.shiftadd.pow2 import integer_weights

    with torch.no_grad():
        return {name: ops_of_integer_weights(integer_weights(m), m.bias is not None)
                for name, m in model.named_modules() if isinstance(m, qnn.QuantLinear)}
