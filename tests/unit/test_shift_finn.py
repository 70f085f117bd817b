"""Shift weights as FINN integer weights (hwkit.compress.shiftadd.finn): widths and an exact QONNX export."""

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


@pytest.mark.parametrize("bits", [4, 8])
def test_pow2_mlp_exports_exact_integer_shift_weights_to_qonnx(bits, tmp_path):
    pytest.importorskip("qonnx")
    import numpy as np
    import onnx
    from brevitas.export import export_qonnx
    from onnx import numpy_helper

    from hwkit.compress.shiftadd.export import run_qonnx
    from hwkit.compress.shiftadd.pow2 import integer_weights, project

    torch.manual_seed(0)
    model = shift_finn.build_shift_mlp(16, (12,), 3, weight_bits=bits, act_bits=2, weight_values="pow2")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    model.eval()
    lin = [m for m in model.modules() if type(m).__name__ == "QuantLinear"]
    ints = [integer_weights(m).detach() for m in lin]
    for w in ints:  # every weight is 0 or +-2**e with e in 0..bits-2, and the largest exponent is used
        sign, e = shift_finn.shift_codes(w, bits)
        assert int(e[sign != 0].max()) == bits - 2
    x = torch.randint(0, 17, (6, 16)).float()
    with torch.no_grad():
        ref = model(x).numpy()
        project(model)
        assert np.array_equal(model(x).numpy(), ref)  # projection does not change the outputs
        path = tmp_path / "m.onnx"
        export_qonnx(model, torch.zeros(1, 16), str(path))
    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"}
    vals = {**inits, **consts}
    quant_w = []
    for n in g.node:  # weight Quant nodes: (weight, scale, zero point, bit width) all constant
        if n.op_type == "Quant" and all(i in vals for i in n.input) and vals[n.input[0]].ndim == 2:
            w, s, z, b = (vals[i] for i in n.input)
            quant_w.append((w, s, z, b, {a.name: a.i for a in n.attribute}))
    assert len(quant_w) == len(lin)
    for (w, s, z, b, attrs), ref_int in zip(quant_w, ints):
        q = w / s
        assert np.array_equal(q, np.round(q)), "weight / scale is not an exact integer"
        assert np.array_equal(q, ref_int.numpy())
        assert int(b) == bits and float(z) == 0 and attrs.get("signed", 1) == 1
        shift_finn.shift_codes(torch.from_numpy(q), bits)
    got = run_qonnx(path, x.numpy())
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))
