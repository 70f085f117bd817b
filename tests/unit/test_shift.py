"""DeepShift shift layers (hwkit.compress.shiftadd.shift) and the analytical op/energy model (hwkit.energy.ops)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from hwkit.compress.shiftadd import shift  # noqa: E402
from hwkit.energy import ops as opcost  # noqa: E402
from hwkit.errors import InputError, UnsupportedLayerError  # noqa: E402


def _is_pow2_or_zero(w, pmin):
    nz = w[w != 0].abs()
    p = torch.log2(nz)
    return bool(torch.all(p == torch.round(p)) and torch.all(p >= pmin) and torch.all(p <= 0))


def test_ranges_follow_the_bit_budget():
    assert shift.ShiftConfig("ps", 5).pmin == -14 and shift.ShiftConfig("q", 5).pmin == -15
    assert shift.ShiftConfig("q", 3).pmin == -3
    with pytest.raises(InputError):
        shift.ShiftConfig("x")
    with pytest.raises(InputError):
        shift.ShiftConfig("ps", 2)


def test_rounding_is_in_the_log_domain():
    b = 2.0 ** -3
    w = torch.tensor([1.40 * b, 1.42 * b, 1.45 * b, -1.45 * b, 0.0, 3.0, 1e-9])
    got = shift.round_pow2(w, -15)
    # 1.45 is below the linear midpoint 1.5 but above sqrt(2): log-domain rounding goes up
    assert got.tolist() == [b, 2 * b, 2 * b, -2 * b, 0.0, 1.0, 2.0 ** -15]


@pytest.mark.parametrize("mode", ["q", "ps"])
def test_conversion_from_pretrained_gives_exact_powers_of_two(mode):
    torch.manual_seed(0)
    lin = torch.nn.Linear(30, 7)
    with torch.no_grad():
        lin.weight[0, 0] = 5.0  # saturates at 2**0
        lin.weight[0, 1] = 0.0
    cfg = shift.ShiftConfig(mode)
    m = shift.make_shift_linear(30, 7, True, cfg)
    m = type(m).from_linear(lin, cfg)
    w = m.quantised_weight().detach()
    assert _is_pow2_or_zero(w, cfg.pmin)
    assert w[0, 0] == 1.0 and w[0, 1] == 0.0
    assert torch.equal(w[1:], shift.round_pow2(lin.weight.detach()[1:], cfg.pmin))
    x = torch.randn(5, 30)
    assert torch.allclose(m(x), torch.nn.functional.linear(x, w, lin.bias), atol=0, rtol=0)


def test_ps_gradients_are_deepshift_ste():
    cfg = shift.ShiftConfig("ps", 5)
    m = shift.make_shift_linear(1, 1, False, cfg)
    with torch.no_grad():
        m.shift.fill_(-2.2)  # rounds to -2
        m.sign.fill_(0.8)  # rounds to +1
    y = m(torch.ones(1, 1)).sum() * 3.0
    y.backward()
    assert float(m.quantised_weight()) == 0.25
    assert m.sign.grad.item() == pytest.approx(3.0)  # not scaled by 2**P
    assert m.shift.grad.item() == pytest.approx(3.0 * 0.25 * math.log(2))
    with torch.no_grad():
        m.sign.fill_(0.3)  # ternary: |S| < 0.5 -> weight 0
        m.shift.fill_(-40.0)  # clamped in place to pmin
    assert float(m.quantised_weight()) == 0.0 and float(m.shift) == -14.0


def test_q_mode_straight_through_and_in_place_clamp():
    cfg = shift.ShiftConfig("q", 4)
    m = shift.make_shift_linear(3, 1, False, cfg)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[2.0, 1e-6, -0.3]]))
    (m(torch.tensor([[1.0, 2.0, 3.0]])).sum()).backward()
    assert m.weight.grad.tolist() == [[1.0, 2.0, 3.0]]
    assert m.weight.data.tolist()[0][0] == 1.0 and m.weight.data[0, 1] == 2.0 ** -7
    assert m.quantised_weight().tolist() == [[1.0, 2.0 ** -7, -0.25]]


def test_convert_finetune_and_integer_weights():
    from hwkit.compress.amp.toy import float_mlp

    torch.manual_seed(0)
    model = float_mlp(16, (12,), 3)
    x, y = torch.randn(96, 16), torch.randint(0, 3, (96,))
    shift.convert(model, shift.ShiftConfig("ps"))
    assert sum(shift.is_shift(m) for m in model.modules()) == 2
    losses = shift.finetune(model, x, y, shift.FinetuneConfig(epochs=8, lr=1e-2, batch_size=32))
    assert losses[-1] < losses[0]
    for m in model.modules():
        if shift.is_shift(m):
            iw = shift.integer_weight(m)
            assert iw.bit_width == 16 and iw.scale == 2.0 ** -14
            assert abs(int(iw.values.max())) <= 2 ** 14 and int(iw.values.min()) >= -(2 ** 14)
            assert torch.equal(torch.from_numpy(iw.values).float() * iw.scale, m.quantised_weight().detach())
    mat = shift.materialise(model)
    assert not any(shift.is_shift(m) for m in mat.modules())


def test_convert_refuses_brevitas_and_linear_free_models():
    from hwkit.models.mlp import build_qmlp

    with pytest.raises(UnsupportedLayerError, match="Brevitas"):
        shift.convert(build_qmlp(8, [4], 2), shift.ShiftConfig())
    with pytest.raises(UnsupportedLayerError, match="no nn.Linear"):
        shift.convert(torch.nn.Sequential(torch.nn.ReLU()), shift.ShiftConfig())


def test_op_counts_and_energy():
    d = opcost.dense_ops(10, 64, True)
    assert d == opcost.OpCounts(fp_mult=640, fp_add=640)
    assert d.energy_pj() == pytest.approx(640 * 3.7 + 640 * 0.9)
    s = opcost.shift_ops([64, 0, 3], True)
    assert s == opcost.OpCounts(shift=67, int_add=63 + 0 + 2 + 3)
    lut = opcost.lut_ops(16, 64, 2, False, apot_terms=3)
    assert lut.lut_query == 16 * 2 * 8 and lut.shift == 16 * 2 * 8 * 3
    assert lut.fp_add == 8 * 256 + 16 * 2 * 8 + 16 * 2 * 8 * 2
    rep = opcost.energy_report({"a": d}, {"a": opcost.shift_ops([64] * 10, True)})
    assert rep["kind"] == "analytical-estimate"
    assert rep["saving"] == pytest.approx(1 - (640 * 0.1 + 640 * 0.1) / (640 * 4.6))
