"""Operation counts by integer weight value (hwkit.compress.shiftadd.intops) and power-of-two CQMLP weights."""

from __future__ import annotations

import numpy as np
import pytest

from hwkit.compress.shiftadd.intops import IntOps, model_int_ops, ops_of_integer_weights


def test_counts_by_weight_value():
    q = np.array([[0, 1, -2, 3], [4, 0, 0, -1], [0, 0, 0, 0]])
    ops = ops_of_integer_weights(q, bias=True)
    # row 0: 3 terms (1 add-only, -2 shift, 3 mult) -> 2 adds; row 1: 2 terms (4 shift, -1) -> 1 add; row 2: none
    assert ops == IntOps(int_mult=1, shift=2, int_add=2 + 1 + 0 + 3)
    assert ops_of_integer_weights(q, bias=False).int_add == 3
    assert ops.energy_pj() == pytest.approx(1 * 0.2 + 2 * 0.1 + 6 * 0.1)


def test_pow2_cqmlp_has_no_multiplications_and_costs_less():
    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp
    from hwkit.compress.shiftadd.pow2 import integer_weights, project

    torch.manual_seed(0)
    plain = build_cqmlp(bits=4, depth=2, per_channel=True)
    shift = build_cqmlp(bits=4, depth=2, per_channel=True, weight_values="pow2")
    shift.load_state_dict(plain.state_dict(), strict=False)  # brevitas leaves unused activation scales out
    ops_plain = sum(model_int_ops(plain).values(), IntOps())
    ops_shift = sum(model_int_ops(shift).values(), IntOps())
    assert ops_plain.int_mult > 0 and ops_shift.int_mult == 0 and ops_shift.shift > 0
    assert ops_shift.energy_pj() < ops_plain.energy_pj()
    # every weight of the shift model is 0 or +-2^k within the 4-bit type, and projection keeps the outputs
    for m in shift:
        if hasattr(m, "quant_weight"):
            vals = set(integer_weights(m).abs().unique().tolist())
            assert vals <= {0.0, 1.0, 2.0, 4.0} and 4.0 in vals
    shift.eval()
    x = torch.rand(16, 40) * 255
    before = shift(x)
    project(shift)
    assert torch.equal(shift(x), before)


def test_pow2_rounding_is_log_domain_and_integer():
    import torch

    from hwkit.compress.shiftadd.pow2 import Pow2RoundSte

    x = torch.tensor([0.0, 0.3, -0.49, 0.5, 0.6, -0.99, 1.4, 1.5, 2.9, 3.0, -5.6, 5.7], requires_grad=True)
    y = Pow2RoundSte()(x)
    # below 0.5 -> 0; [0.5, 1) -> 1; then 2**round(log2|x|): the geometric midpoints are sqrt(2), 2 sqrt(2), ...
    assert y.tolist() == [0.0, 0.0, -0.0, 1.0, 1.0, -1.0, 1.0, 2.0, 4.0, 4.0, -4.0, 8.0]
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through
