"""The CQMLP model: the paper's exact topology and parameter count, registration, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from hwkit.config import CompileSettings


def test_paper_parameter_count_and_topology():
    import brevitas.nn as qnn
    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp, count_learnable

    model = build_cqmlp()
    assert count_learnable(model) == 54_824  # 53,860 linear + 960 BN affine + 4 QuantReLU scales
    linears = [m for m in model if isinstance(m, qnn.QuantLinear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 256), (256, 128), (128, 64), (64, 32),
                                                                   (32, 4)]
    assert all(m.bias is not None and m.quant_weight().bit_width.item() == 2 for m in linears)
    relus = [m for m in model if isinstance(m, qnn.QuantReLU)]
    assert len(relus) == 4 and all(r.act_quant.bit_width().item() == 2 for r in relus)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model) == 4
    # bit width changes no parameter count; depth does
    assert count_learnable(build_cqmlp(bits=4)) == 54_824
    assert count_learnable(build_cqmlp(depth=2)) == (40 * 256 + 256) + (256 * 128 + 128) + (128 * 4 + 4) + 2 * 384 + 2
    with pytest.raises(ValueError, match="hidden"):
        build_cqmlp(depth=0)


def test_forward_on_raw_bytes_and_checkpoint_round_trip(tmp_path):
    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp
    from hwkit.load import load_model
    from hwkit.models import ARCHS

    assert ARCHS["cqmlp"] == "hwkit.compress.cqmlp.model:build_cqmlp"
    torch.manual_seed(0)
    model = build_cqmlp(bits=3)
    model.train()
    x = torch.randint(0, 256, (64, 40)).float()
    model(x)
    model.eval()
    path = tmp_path / "cq.pt"
    torch.save({"hwkit_checkpoint": 1, "arch": "cqmlp", "arch_kwargs": {"bits": 3, "depth": 4, "window": 4},
                "state_dict": model.state_dict(), "input_shape": [1, 40], "input_dtype": "UINT8",
                "golden_inputs": x[:8], "meta": {"dataset": "test"}}, path)
    loaded = load_model(path, CompileSettings())
    assert loaded.input_shape == (1, 40) and loaded.input_dtype == "UINT8"
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model(x))
    assert loaded.golden_inputs.shape == (8, 40)


def test_classification_metrics_from_a_known_confusion_matrix():
    from hwkit.compress.cqmlp.train import classification_metrics

    # rows = true Benign, DoS, Fuzzing, RPM; the paper's own confusion matrix
    cm = np.array([[103142, 17, 17, 0], [27, 23666, 0, 0], [78, 0, 28003, 8], [0, 0, 0, 25042]])
    y_true = np.repeat(np.repeat(np.arange(4), 4), cm.ravel())
    y_pred = np.repeat(np.tile(np.arange(4), 4), cm.ravel())
    m = classification_metrics(y_true, y_pred)
    assert m["confusion"] == cm.tolist()
    assert m["samples"] == 180_000 and m["misclassified"] == 147  # the paper's 147 errors
    assert m["accuracy"] == pytest.approx(179_853 / 180_000)
    assert m["benign_fpr"] == pytest.approx(34 / 103_176)
    dos = m["per_class"]["DoS"]
    assert dos["precision"] == pytest.approx(23666 / 23683)
    assert dos["recall"] == pytest.approx(23666 / 23693)
    assert dos["fnr"] == pytest.approx(27 / 23693)
    assert dos["f1"] == pytest.approx(2 * dos["precision"] * dos["recall"] / (dos["precision"] + dos["recall"]))
    assert m["per_class"]["RPM"]["recall"] == 1.0


def test_per_channel_scales_keep_the_parameter_count_and_one_cycle_schedule():
    from hwkit.compress.cqmlp.model import build_cqmlp, count_learnable
    from hwkit.compress.cqmlp.train import TrainConfig, lr_at

    model = build_cqmlp(per_channel=True)
    assert count_learnable(model) == 54_824
    assert model[0].quant_weight().scale.shape[0] == 256  # one scale per output neuron
    assert list(model.state_dict()) == list(build_cqmlp().state_dict())  # same keys as per-tensor
    cfg = TrainConfig(lr=3e-3, schedule="onecycle", warmup=0.15)
    lrs = [lr_at(cfg, s, 1000) for s in range(1000)]
    assert max(lrs) == lrs[150] == 3e-3 and lrs[0] < 2e-4 and lrs[-1] < 1e-5
    assert all(a <= b for a, b in zip(lrs[:150], lrs[1:151])) and all(a >= b for a, b in zip(lrs[150:], lrs[151:]))
    assert lr_at(TrainConfig(lr=1e-3, schedule="constant"), 500, 1000) == 1e-3


def test_mean_abs_weight_scales_keep_the_parameter_count_and_state_dict():
    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp, count_learnable
    from hwkit.compress.cqmlp.train import TrainConfig

    for per_channel in (False, True):
        model = build_cqmlp(per_channel=per_channel, weight_scaling="mean")
        assert count_learnable(model) == 54_824
        assert list(model.state_dict()) == list(build_cqmlp().state_dict())
        w = model[0].weight.detach()
        mean_abs = w.abs().mean(dim=1 if per_channel else None)
        torch.testing.assert_close(model[0].quant_weight().scale.flatten(), mean_abs.flatten())
    with pytest.raises(ValueError, match="weight_scaling"):
        build_cqmlp(weight_scaling="median")
    assert TrainConfig(weight_scaling="mean").arch_kwargs()["weight_scaling"] == "mean"
    assert "weight_scaling" not in TrainConfig().arch_kwargs()  # old checkpoints keep their arch_kwargs


def test_per_layer_bit_widths():
    import brevitas.nn as qnn

    from hwkit.compress.cqmlp.model import build_cqmlp

    m = build_cqmlp(depth=2, layer_bits=[4, 2, 8], layer_act_bits=[3, 2])
    lin = [x for x in m if isinstance(x, qnn.QuantLinear)]
    act = [x for x in m if isinstance(x, qnn.QuantReLU)]
    assert [int(x.quant_weight().bit_width) for x in lin] == [4, 2, 8]
    x = __import__("torch").rand(5, 40) * 255
    m.eval()
    h = x
    outs = []
    for layer in m:
        h = layer(h)
        if isinstance(layer, qnn.QuantReLU):
            outs.append(h)
    # a b-bit unsigned activation takes at most 2**b distinct values
    for o, b in zip(outs, [3, 2]):
        assert len(set(o.flatten().tolist())) <= 2 ** b
    assert [int(a.act_quant.bit_width()) for a in act] == [3, 2]
    with pytest.raises(ValueError, match="layer_bits must list 3 integers"):
        build_cqmlp(depth=2, layer_bits=[4, 2])
    with pytest.raises(ValueError, match="layer_act_bits must list 2 integers"):
        build_cqmlp(depth=2, layer_act_bits=[4, 2, 9])
