"""Label-free distillation of shift / MoE models (hwkit.compress.shiftadd.moe_distill)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from hwkit.compress.shiftadd import moe as shift_moe  # noqa: E402
from hwkit.compress.shiftadd import moe_distill as distil  # noqa: E402
from hwkit.compress.shiftadd import shift  # noqa: E402
from hwkit.errors import InputError  # noqa: E402


def _teacher():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()


def _mse(teacher, x):
    with torch.no_grad():
        y = teacher(x)

    def loss(model, batch):
        return ((model(x[batch]) - y[batch]) ** 2).mean()

    return loss


def test_distill_trains_moe_with_balancing_loss_and_records_token_shares():
    teacher = _teacher()
    model = shift_moe.convert(copy.deepcopy(teacher), shift_moe.MoEConfig())
    x = torch.randn(256, 8)
    hist = distil.distill(model, torch.arange(256), _mse(teacher, x),
                          distil.DistillConfig(epochs=4, lr=1e-2, batch_size=32))
    assert len(hist) == 4 and hist[-1]["balance_loss"] < hist[0]["balance_loss"]
    assert hist[0]["balance_loss"] > 0
    assert set(hist[-1]["train_shift_share"]) == {"0", "2"}
    assert all(0.3 < s < 0.9 for s in hist[-1]["train_shift_share"].values())  # noisy routing near 0.6
    assert not model.training
    assert all(m.aux_loss is None for m in model.modules() if shift_moe.is_moe(m))
    copy.deepcopy(model)  # no graph left attached


def test_token_shares_weight_every_forward_call_by_its_tokens():
    model = shift_moe.convert(_teacher(), shift_moe.MoEConfig()).eval()
    moe = model[0]
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[1, 0] = 1.0  # shift expert where x[:, 0] > 0
    x = torch.randn(100, 8)
    want = float((x[:, 0] > 0).float().mean())

    def run():
        for i in range(0, 100, 30):  # several calls of different sizes: the last one alone would mislead
            model(x[i:i + 30])

    got = distil.token_shares(model, run)
    assert got["0"] == pytest.approx(want) and got["2"] == 0.0
    assert moe.shift_share == pytest.approx(want)  # stored for opcost.model_ops


def test_distill_fine_tunes_a_shift_model_without_moe_layers():
    teacher = _teacher()
    model = shift.convert(copy.deepcopy(teacher), shift.ShiftConfig("ps", 5))
    x = torch.randn(128, 8)
    hist = distil.distill(model, torch.arange(128), _mse(teacher, x),
                          distil.DistillConfig(epochs=5, lr=1e-2, batch_size=32))
    assert hist[-1]["task_loss"] < hist[0]["task_loss"]
    assert all(h["balance_loss"] == 0.0 and h["train_shift_share"] == {} for h in hist)


def test_config_is_checked():
    with pytest.raises(InputError):
        distil.DistillConfig(batch_size=0)
    frozen = _teacher().requires_grad_(False)
    with pytest.raises(InputError):
        distil.distill(frozen, torch.arange(4), lambda m, b: m(torch.zeros(1, 8)).sum(), distil.DistillConfig())
