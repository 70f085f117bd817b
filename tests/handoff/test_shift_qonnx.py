"""Hand-off torch -> QONNX for power-of-two (ShiftAdd) weights: exact integer weights in the Quant
nodes and the same outputs through QONNX execution (moved from tests/unit/test_shift_finn.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")

from hwkit.compress.shiftadd import finn as shift_finn  # noqa: E402


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
