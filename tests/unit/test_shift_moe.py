"""ShiftAddViT-style mult/shift mixture of experts (hwkit.compress.shiftadd.moe)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hwkit.compress.shiftadd import moe as shift_moe  # noqa: E402
from hwkit.energy import ops as opcost  # noqa: E402


def _hard_logits(n_shift, n):
    lg = torch.full((n, 2), 0.0)
    lg[:n_shift, 1] = 20.0
    lg[n_shift:, 0] = 20.0
    return lg


def test_balance_loss_is_minimal_at_the_latency_balance_point():
    alpha = torch.tensor([6.0, 4.0])
    at = {k: float(shift_moe.balance_loss(_hard_logits(k, 100), alpha, 0.5)) for k in (50, 60, 70, 100)}
    assert at[60] < 1e-3  # 6 * 40 == 4 * 60
    assert at[50] > 0.01 and at[70] > 0.01 and at[100] > at[70]
    assert float(shift_moe.balance_loss(_hard_logits(50, 100), torch.tensor([1.0, 1.0]), 0.5)) < 1e-3


def test_conversion_keeps_the_function_and_routes_by_argmax():
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 5)
    model = torch.nn.Sequential(lin)
    ref = torch.nn.Linear(12, 5)
    ref.load_state_dict(lin.state_dict())
    shift_moe.convert(model, shift_moe.MoEConfig())
    moe = model.eval()[0]
    assert shift_moe.is_moe(moe)
    x = torch.randn(40, 12)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))  # zero router: every token to the mult expert
        assert moe.shift_share == 0.0
        moe.router.bias.copy_(torch.tensor([0.0, 1.0]))
        assert torch.equal(model(x), moe.shift(x)) and moe.shift_share == 1.0


def test_router_learns_the_latency_balance_from_the_balancing_loss():
    from hwkit.compress.amp.toy import float_mlp

    torch.manual_seed(0)
    model = shift_moe.convert(float_mlp(16, (24,), 3), shift_moe.MoEConfig())
    x, y = torch.randn(512, 16), torch.randint(0, 3, (512,))
    hist = shift_moe.train(model, x, y, epochs=4, lr=1e-2, coef=0.01)
    assert hist[-1]["balance_loss"] < hist[0]["balance_loss"]
    for share in hist[-1]["train_shift_share"].values():
        assert abs(share - 0.6) < 0.1  # n_shift : n_mult = 6 : 4
    assert all(m.aux_loss is None for m in model.modules() if shift_moe.is_moe(m))
    ops = opcost.model_ops(model)
    assert set(ops) == {"0", "3"} and all(o.shift > 0 or o.fp_mult > 0 for o in ops.values())


def test_soft_balance_satisfies_the_loss_so_argmax_routing_can_collapse():
    # every token with the same gap: softmax p_shift = 0.6 makes the importance term exactly balanced, and the
    # deterministic arg-max then sends all tokens to the shift expert (the measured evaluation collapse)
    import math

    alpha = torch.tensor([6.0, 4.0])
    gap = math.log(1.5)
    soft = torch.tensor([[0.0, gap]]).repeat(100, 1)
    imp = alpha * torch.softmax(soft, 1).sum(0)
    assert float(shift_moe.cv2(imp)) < 1e-10
    hard_all_shift = _hard_logits(100, 100)
    assert float(shift_moe.balance_loss(soft, alpha, 0.5)) < 0.1 * float(
        shift_moe.balance_loss(hard_all_shift, alpha, 0.5))
    assert bool((soft.argmax(1) == 1).all())


def test_calibrate_routing_moves_the_argmax_threshold_to_the_share():
    from hwkit.compress.amp.toy import float_mlp

    torch.manual_seed(0)
    model = shift_moe.convert(float_mlp(16, (24,), 3), shift_moe.MoEConfig())
    with torch.no_grad():
        for m in model.modules():
            if shift_moe.is_moe(m):
                m.router.weight.normal_()
                m.router.bias.copy_(torch.tensor([0.0, 50.0]))  # arg-max: everything to shift
    x = torch.randn(400, 16)
    assert all(v == 1.0 for v in shift_moe.shares(model, x).values())
    got = shift_moe.calibrate_routing(model, x, 0.6)
    assert set(got) == {"0", "3"}
    for v in list(got.values()) + list(shift_moe.shares(model, x).values()):
        assert abs(v - 0.6) < 0.01
    assert all(v == 0.0 for v in shift_moe.calibrate_routing(model, x, 0.0).values())
    with pytest.raises(Exception, match="share"):
        shift_moe.calibrate_routing(model, x, 1.5)
