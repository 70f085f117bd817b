"""Shift weights as FINN integer weights (hwkit.compress.shiftadd.finn): widths and codes (the exact QONNX
export is a hand-off test: tests/handoff/test_shift_qonnx.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")

from hwkit.compress.shiftadd import finn as shift_finn  # noqa: E402
from hwkit.compress.shiftadd import shift  # noqa: E402
from hwkit.errors import InputError  # noqa: E402


def test_widths_match_the_shift_layers_integer_form():
    assert [shift_finn.int_width(k) for k in (1, 3, 15)] == [2, 4, 16]
    assert [shift_finn.ps_int_width(b) for b in (3, 4, 5)] == [4, 8, 16]
    assert shift_finn.q_int_width(5) == 17
    # the same widths as shift.integer_weight of a converted DeepShift layer
    for mode, width in (("ps", shift_finn.ps_int_width), ("q", shift_finn.q_int_width)):
        for bits in (3, 5):
            cfg = shift.ShiftConfig(mode=mode, weight_bits=bits)
            layer = shift.convert(torch.nn.Sequential(torch.nn.Linear(8, 4)), cfg)[0]
            iw = shift.integer_weight(layer)
            assert iw.bit_width == width(bits)
            assert abs(int(iw.values.max())) <= 2 ** (width(bits) - 2)
    with pytest.raises(InputError):
        shift_finn.int_width(0)


def test_shift_codes_decodes_and_rejects():
    sign, e = shift_finn.shift_codes(torch.tensor([[0.0, 1.0, -4.0], [2.0, -1.0, 0.0]]), 4)
    assert sign.tolist() == [[0, 1, -1], [1, -1, 0]] and e[sign != 0].tolist() == [0, 2, 1, 0]
    with pytest.raises(InputError, match="power of two"):
        shift_finn.shift_codes(torch.tensor([3.0]), 4)
    with pytest.raises(InputError, match="exceeds"):
        shift_finn.shift_codes(torch.tensor([8.0]), 4)  # INT4 shift weights stop at 2**2
    with pytest.raises(InputError, match="integer"):
        shift_finn.shift_codes(torch.tensor([0.5]), 4)
