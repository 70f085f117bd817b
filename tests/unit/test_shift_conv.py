"""DeepShift shift convolution (hwkit.compress.shiftadd.shift.ShiftConv2d), its conversion, export and op counts."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from hwkit.compress.shiftadd import shift  # noqa: E402
from hwkit.energy import ops as opcost  # noqa: E402
from hwkit.errors import InputError  # noqa: E402

F = torch.nn.functional


def _is_pow2_or_zero(w, pmin):
    nz = w[w != 0].abs()
    p = torch.log2(nz)
    return bool(torch.all(p == torch.round(p)) and torch.all(p >= pmin) and torch.all(p <= 0))


def _conv(cfg, *args, **kw):
    return shift.make_shift_conv2d(*args, cfg=cfg, **kw)


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 3))


@pytest.mark.parametrize("mode", ["q", "ps"])
def test_conversion_of_a_strided_padded_grouped_conv_matches_f_conv2d(mode):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = -5.0  # saturates at -2**0
        conv.weight[1, 1, 1, 1] = 0.0  # stays 0
    cfg = shift.ShiftConfig(mode)
    m = type(_conv(cfg, 4, 6, 3)).from_conv(conv, cfg)
    assert (m.stride, m.padding, m.dilation, m.groups) == ((2, 1), (1, 2), (1, 2), 2)
    w = m.quantised_weight().detach()
    assert w.shape == (6, 2, 3, 2) and _is_pow2_or_zero(w, cfg.pmin)
    assert w[0, 0, 0, 0] == -1.0 and w[1, 1, 1, 1] == 0.0
    ref_w = shift.round_pow2(conv.weight.detach(), cfg.pmin)
    assert torch.equal(w, ref_w)
    x = torch.randn(3, 4, 9, 7)
    y = m(x)
    assert y.shape == conv(x).shape
    assert torch.equal(y, F.conv2d(x, ref_w, conv.bias, (2, 1), (1, 2), (1, 2), 2))
    # weights are exactly sign * 2**p with the codes
    sign, p = m.codes()
    assert sign.dtype == torch.int8 and sign.shape == w.shape
    assert torch.equal(sign.float() * torch.pow(2.0, p.float()), w)
    # materialised: a plain nn.Conv2d of the same geometry and output
    dense = m.to_dense()
    assert type(dense) is torch.nn.Conv2d and torch.equal(dense.weight.detach(), w)
    assert (dense.stride, dense.padding, dense.dilation, dense.groups) == ((2, 1), (1, 2), (1, 2), 2)
    assert torch.equal(dense(x), y.detach())


def test_conv_rounding_is_in_the_log_domain():
    b = 2.0 ** -3
    conv = torch.nn.Conv2d(1, 1, (1, 7), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.40 * b, 1.42 * b, 1.45 * b, -1.45 * b, 0.0, 3.0, 1e-9]).view(1, 1, 1, 7))
    for mode, pmin in (("q", -15), ("ps", -14)):
        cfg = shift.ShiftConfig(mode)
        m = type(_conv(cfg, 1, 1, 1)).from_conv(conv, cfg)
        # 1.45 is below the linear midpoint 1.5 but above sqrt(2): log-domain rounding goes up
        assert m.quantised_weight().flatten().tolist() == [b, 2 * b, 2 * b, -2 * b, 0.0, 1.0, 2.0 ** pmin]


def test_conv_ps_gradients_are_deepshift_ste():
    cfg = shift.ShiftConfig("ps", 5)
    m = _conv(cfg, 1, 1, 1, bias=False)
    with torch.no_grad():
        m.shift.fill_(-2.2)  # rounds to -2
        m.sign.fill_(0.8)  # rounds to +1
    x = torch.tensor([[[[1.0, 2.0], [0.5, 0.5]]]])  # dL/dW = 3 * sum(x) = 12
    (m(x).sum() * 3.0).backward()
    assert float(m.quantised_weight()) == 0.25
    assert m.sign.grad.item() == pytest.approx(12.0)  # not scaled by 2**P
    assert m.shift.grad.item() == pytest.approx(12.0 * 0.25 * math.log(2))
    with torch.no_grad():
        m.sign.fill_(-0.3)  # ternary: |S| < 0.5 -> weight 0
        m.shift.fill_(-40.0)  # clamped in place to pmin
    assert float(m.quantised_weight()) == 0.0 and float(m.shift) == -14.0


def test_conv_q_mode_straight_through_and_in_place_clamp():
    cfg = shift.ShiftConfig("q", 4)
    m = _conv(cfg, 1, 1, (1, 3), bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([2.0, 1e-6, -0.3]).view(1, 1, 1, 3))
    (m(torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 3)).sum()).backward()
    assert m.weight.grad.flatten().tolist() == [1.0, 2.0, 3.0]
    assert m.weight.data.flatten().tolist()[:2] == [1.0, 2.0 ** -7]
    assert m.quantised_weight().flatten().tolist() == [1.0, 2.0 ** -7, -0.25]


def test_convert_model_with_convs_finetune_integer_weights_and_materialise():
    torch.manual_seed(0)
    model = _net()
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 3, (64,))
    shift.convert(model, shift.ShiftConfig("ps"))
    assert [n for n, m in model.named_modules() if shift.is_shift_conv(m)] == ["0", "3"]
    assert shift.is_shift(model[6]) and not shift.is_shift_conv(model[6])
    assert shift.conv_names(model) == []
    reflect = shift.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1, padding=1, padding_mode="reflect"),
                                                torch.nn.Conv2d(3, 3, 1)), shift.ShiftConfig("q"))
    assert shift.conv_names(reflect) == ["0"] and shift.is_shift_conv(reflect[1])  # F.conv2d pads with zeros only
    losses = shift.finetune(model, x, y, shift.FinetuneConfig(epochs=6, lr=1e-2, batch_size=32))
    assert losses[-1] < losses[0]
    iw = shift.integer_weight(model[3])
    assert iw.values.shape == (8, 4, 3, 3) and iw.bit_width == 16 and iw.scale == 2.0 ** -14
    assert torch.equal(torch.from_numpy(iw.values).float() * iw.scale, model[3].quantised_weight().detach())
    with torch.no_grad():
        ref = model(x)
    mat = shift.materialise(model)
    assert not any(shift.is_shift(m) for m in mat.modules())
    assert type(mat[0]) is torch.nn.Conv2d and _is_pow2_or_zero(mat[3].weight.detach(), -14)
    with torch.no_grad():
        assert torch.equal(mat(x), ref)


def test_conv_op_counts_use_the_output_size():
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)  # 9x9 -> 5x5, K = 2*3*3 = 18
    model = torch.nn.Sequential(conv, torch.nn.Flatten(), torch.nn.Linear(150, 3))
    sample = torch.randn(7, 4, 9, 9)
    d = opcost.model_ops(model, sample)
    assert d["0"] == opcost.OpCounts(fp_mult=25 * 6 * 18, fp_add=25 * (6 * 17 + 6))
    assert d["2"] == opcost.dense_ops(3, 150, True)
    with pytest.raises(InputError, match="sample"):
        opcost.model_ops(model)
    cfg = shift.ShiftConfig("ps")
    m = type(_conv(cfg, 4, 6, 3)).from_conv(conv, cfg)
    with torch.no_grad():
        m.sign.fill_(1.0)
        m.sign[0].zero_()  # channel 0: no weights
        m.sign[1, :, 0].zero_()  # channel 1: 18 - 6 = 12 weights
    s = opcost.model_ops(torch.nn.Sequential(m), sample)["0"]
    nz = [0, 12, 18, 18, 18, 18]
    assert s == opcost.OpCounts(shift=25 * sum(nz), int_add=25 * (sum(v - 1 for v in nz if v) + 6))


def test_onnx_and_qonnx_export_of_shift_convs(tmp_path):
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from hwkit.compress.shiftadd import export as shift_export

    torch.manual_seed(0)
    model = shift.convert(_net().eval(), shift.ShiftConfig("q")).eval()
    x = torch.randn(5, 3, 8, 8)
    path = shift_export.export_onnx(model, (1, 3, 8, 8), tmp_path / "s.onnx")
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(shift_export.run_ort(path, x.numpy()) - ref).max() < 1e-4
    g = onnx.load(str(path))
    convs = [n for n in g.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2
    inits = {i.name: numpy_helper.to_array(i) for i in g.graph.initializer}
    for node in convs:
        w = torch.from_numpy(inits[node.input[1]].copy())
        assert w.dim() == 4 and _is_pow2_or_zero(w, -15)
    info = shift_export.to_qonnx(path, model, tmp_path / "q.onnx")
    assert set(info) == {"0", "3", "6"} and info["3"]["bit_width"] == 17
    q = onnx.load(str(tmp_path / "q.onnx"))
    quant_of = {n.output[0]: n.input[0] for n in q.graph.node if n.op_type == "Quant"}
    assert all(n.input[1] in quant_of for n in q.graph.node if n.op_type == "Conv")
