"""CQMLP distillation from the float twin, learned quantiser scales, init from the teacher, --device."""

from __future__ import annotations

import numpy as np
import pytest

from hwkit.errors import InputError


def _split(n: int = 1536, seed: int = 0):
    """A small, learnable 4-class split of uint8 windows (class = which byte range the first bytes fall in)."""
    from hwkit.data.windows import Split, Windows

    rng = np.random.default_rng(seed)

    def part(m: int) -> Windows:
        y = rng.integers(0, 4, m).astype(np.int64)
        x = rng.integers(0, 256, (m, 40)).astype(np.uint8)
        x[:, :4] = (y[:, None] * 60 + rng.integers(0, 40, (m, 4))).astype(np.uint8)
        return Windows(x=x, y=y, file_index=np.zeros(m, np.int64), first_frame=np.arange(m), window=4)

    return Split(train=part(n), val=part(256), test=part(256), mode="random", fractions=(0.85, 0.1, 0.05),
                 dropped_windows=0)


def _teacher(path, split, seed: int):
    """A float twin trained briefly on ``split`` (seeded), saved as a hwkit checkpoint at ``path``."""
    from hwkit.compress.cqmlp.train import TrainConfig, train_cqmlp

    cfg = TrainConfig(float_twin=True, epochs=1, batch_size=256, lr=3e-3, patience=0, seed=seed)
    train_cqmlp(split, cfg, path, {"name": "test"})
    return path


def test_float_twin_has_the_quantised_models_layers():
    import brevitas.nn as qnn
    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp, count_learnable

    twin = build_cqmlp(float_twin=True)
    student = build_cqmlp(per_channel=True, weight_scaling="learned")
    assert not any(isinstance(m, qnn.QuantLinear | qnn.QuantReLU) for m in twin)
    assert [type(m).__name__ for m in twin] == ["Linear", "BatchNorm1d", "ReLU"] * 4 + ["Linear"]
    assert set(twin.state_dict()) <= set(student.state_dict())
    assert count_learnable(twin) == 54_824 - 4  # no activation scales
    assert twin(torch.rand(3, 40) * 255).shape == (3, 4)


def test_distill_loss_uses_the_teacher():
    import torch
    import torch.nn.functional as F  # noqa: N812

    from hwkit.compress.cqmlp.train import distill_loss

    torch.manual_seed(0)
    logits = torch.randn(16, 4, requires_grad=True)
    y = torch.randint(0, 4, (16,))
    t1, t2 = torch.randn(16, 4), torch.randn(16, 4)
    # without the KD term it is plain cross-entropy; with it, it depends on the teacher
    torch.testing.assert_close(distill_loss(logits, y, t1, 1.0, 0.0), F.cross_entropy(logits, y))
    g = [torch.autograd.grad(distill_loss(logits, y, t, 1.0, 1.0, 2.0), logits)[0] for t in (t1, t2)]
    assert not torch.allclose(g[0], g[1])
    assert distill_loss(logits, y, t1) != distill_loss(logits, y, t2)
    # the KL term is 0 exactly when the student reproduces the teacher (any temperature)
    for temp in (1.0, 4.0):
        same = distill_loss(t1, y, t1, 0.0, 1.0, temp)
        assert abs(float(same)) < 1e-6 and float(distill_loss(t2, y, t1, 0.0, 1.0, temp)) > 1e-3
    # T^2 scaling: at a high temperature the KD gradient does not vanish
    hot = torch.autograd.grad(distill_loss(logits, y, t1, 0.0, 1.0, 8.0), logits)[0]
    cold = torch.autograd.grad(distill_loss(logits, y, t1, 0.0, 1.0, 1.0), logits)[0]
    assert hot.abs().sum() > 0.1 * cold.abs().sum()


def test_learned_weight_scales_are_stats_initialised_parameters_that_train():
    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp, count_learnable

    torch.manual_seed(0)
    stats = build_cqmlp(per_channel=True)
    learned = build_cqmlp(per_channel=True, weight_scaling="learned")
    learned.load_state_dict(stats.state_dict(), strict=False)
    assert count_learnable(learned) == 54_824 + 256 + 128 + 64 + 32 + 4  # one scale per output neuron
    scales = [p for n, p in learned.named_parameters() if "weight_quant" in n]
    assert len(scales) == 5 and [p.numel() for p in scales] == [256, 128, 64, 32, 4]
    x = torch.rand(64, 40) * 255
    y = torch.randint(0, 4, (64,))
    learned.train()
    stats.train()
    # first forward: initialised from the max-abs statistic, so both models quantise the same way
    torch.testing.assert_close(learned[0].quant_weight().scale.flatten(), stats[0].weight.abs().amax(1))
    loss = torch.nn.functional.cross_entropy(learned(x), y)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in scales)
    before = [p.detach().clone() for p in scales]
    torch.optim.Adam(learned.parameters(), lr=1e-2).step()
    assert all(not torch.equal(a, p.detach()) for a, p in zip(before, scales))
    # the max-abs statistic of the unchanged weights is no longer the scale: it was learned
    w = learned[0].weight.detach()
    assert not torch.allclose(learned[0].quant_weight().scale.flatten(), w.abs().amax(1))
    # the learned scale travels in the state dict
    assert any("weight_quant" in k for k in learned.state_dict())
    again = build_cqmlp(per_channel=True, weight_scaling="learned")
    again.load_state_dict(learned.state_dict())
    learned.eval()
    again.eval()
    torch.testing.assert_close(again(x), learned(x))


def test_changing_the_teacher_changes_the_trained_student(tmp_path):
    import torch

    from hwkit.compress.cqmlp.train import TrainConfig, train_cqmlp

    split = _split()
    t_a = _teacher(tmp_path / "a.pt", split, seed=1)
    t_b = _teacher(tmp_path / "b.pt", split, seed=2)
    base = TrainConfig(epochs=1, batch_size=256, lr=3e-3, patience=0, seed=0)
    runs = {}
    for name, cfg in {"ce": base, "a": TrainConfig(**{**base.__dict__, "teacher": str(t_a)}),
                      "b": TrainConfig(**{**base.__dict__, "teacher": str(t_b)})}.items():
        res = train_cqmlp(split, cfg, tmp_path / f"{name}.pt", {"name": "test"})
        runs[name] = (torch.load(res.checkpoint, weights_only=True), res.summary)
    w = {k: v[0]["state_dict"]["0.weight"] for k, v in runs.items()}
    assert not torch.equal(w["a"], w["b"]) and not torch.equal(w["a"], w["ce"])
    assert runs["a"][1]["teacher"] == str(t_a) and "KL" in runs["a"][1]["loss"]
    assert runs["ce"][1]["loss"].startswith("CrossEntropy") and "teacher" not in runs["ce"][1]
    # a teacher with a KD weight of 0 and CE weight 1 is plain CE: same student as no teacher
    res = train_cqmlp(split, TrainConfig(**{**base.__dict__, "teacher": str(t_a), "kd_weight": 0.0}),
                      tmp_path / "zero.pt", {"name": "test"})
    torch.testing.assert_close(torch.load(res.checkpoint, weights_only=True)["state_dict"]["0.weight"], w["ce"])


def test_init_from_teacher_and_feature_matching(tmp_path):
    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp
    from hwkit.compress.cqmlp.train import TrainConfig, feature_loss, feature_taps, init_from, load_teacher, train_cqmlp

    split = _split()
    path = _teacher(tmp_path / "t.pt", split, seed=1)
    teacher = load_teacher(path, window=4)
    student = build_cqmlp(per_channel=True, weight_scaling="learned")
    init_from(student, teacher)
    for k, v in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[k], v), k
    # a 2-bit copy of the float twin is already a usable classifier: far above chance on the teacher's data
    student.train()
    x = torch.from_numpy(split.train.x[:512]).float()
    student(x)  # collects activation statistics, initialises the learned weight scales
    student.eval()
    acc = float((student(x).argmax(1).numpy() == split.train.y[:512]).mean())
    assert acc > 0.4, acc
    with pytest.raises(InputError, match="do not match"):
        init_from(build_cqmlp(depth=2), teacher)
    # feature taps see every hidden layer's pre-activations; the loss is 0 only for identical features
    s_feats, hs = feature_taps(student)
    t_feats, ht = feature_taps(teacher)
    student(x)
    teacher(x)
    assert len(s_feats) == len(t_feats) == 4 and float(feature_loss(t_feats, t_feats)) == 0.0
    assert float(feature_loss(s_feats, t_feats)) > 0
    for h in hs + ht:
        h.remove()
    # the training run records the recipe and changes the result when features are matched
    base = TrainConfig(epochs=1, batch_size=256, lr=3e-3, patience=0, teacher=str(path), init_from_teacher=True,
                       weight_scaling="learned")
    r0 = train_cqmlp(split, base, tmp_path / "s0.pt", {"name": "test"})
    r1 = train_cqmlp(split, TrainConfig(**{**base.__dict__, "feature_weight": 1.0}), tmp_path / "s1.pt",
                     {"name": "test"})
    assert "feature" in r1.summary["loss"] and "feature" not in r0.summary["loss"]
    w0 = torch.load(r0.checkpoint, weights_only=True)["state_dict"]["0.weight"]
    w1 = torch.load(r1.checkpoint, weights_only=True)["state_dict"]["0.weight"]
    assert not torch.equal(w0, w1)
    with pytest.raises(InputError, match="needs a teacher"):
        train_cqmlp(split, TrainConfig(epochs=1, init_from_teacher=True), tmp_path / "x.pt", {"name": "test"})
    with pytest.raises(InputError, match="no teacher checkpoint"):
        load_teacher(tmp_path / "missing.pt", 4)


def test_distill_trains_the_float_twin_once_and_reuses_it(tmp_path):
    from hwkit.compress.cqmlp.train import TrainConfig, train_cqmlp

    split = _split(768)
    cfg = TrainConfig(epochs=1, batch_size=256, lr=3e-3, patience=0, distill=True, teacher_epochs=1)
    r = train_cqmlp(split, cfg, tmp_path / "s.pt", {"name": "test"})
    twin = tmp_path / "s.teacher.pt"
    assert r.summary["teacher"] == str(twin) and twin.is_file()
    mtime = twin.stat().st_mtime_ns
    train_cqmlp(split, cfg, tmp_path / "s.pt", {"name": "test"})
    assert twin.stat().st_mtime_ns == mtime  # same data, same epochs: reused, not retrained
    from dataclasses import replace

    train_cqmlp(split, replace(cfg, lr=1e-3), tmp_path / "s.pt", {"name": "test"})
    assert twin.stat().st_mtime_ns != mtime  # other settings: trained again


def test_device_choice():
    import torch

    from hwkit.compress.cqmlp.train import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_init_from_checkpoint_continues_a_trained_model(tmp_path):
    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp
    from hwkit.compress.cqmlp.train import TrainConfig, init_from_checkpoint, train_cqmlp

    split = _split()
    first = train_cqmlp(split, TrainConfig(epochs=1, batch_size=256, lr=3e-3, patience=0, seed=3), tmp_path / "a.pt",
                        {"name": "test"})
    saved = torch.load(first.checkpoint, weights_only=True)["state_dict"]
    # every tensor is copied, the activation scales included
    model = build_cqmlp(per_channel=True)
    init_from_checkpoint(model, first.checkpoint)
    for k, v in saved.items():
        assert torch.equal(model.state_dict()[k], v), k
    # a run with lr ~0 that starts from it keeps its weights; one from scratch (another seed) does not
    tiny = TrainConfig(epochs=1, batch_size=256, lr=1e-12, patience=0, seed=0, schedule="constant")
    cont = train_cqmlp(split, TrainConfig(**{**tiny.__dict__, "init_from": str(first.checkpoint)}),
                       tmp_path / "b.pt", {"name": "test"})
    fresh = train_cqmlp(split, tiny, tmp_path / "c.pt", {"name": "test"})
    w_cont = torch.load(cont.checkpoint, weights_only=True)["state_dict"]["0.weight"]
    w_fresh = torch.load(fresh.checkpoint, weights_only=True)["state_dict"]["0.weight"]
    torch.testing.assert_close(w_cont, saved["0.weight"])
    assert not torch.allclose(w_fresh, saved["0.weight"])
    assert cont.summary["config"]["init_from"] == str(first.checkpoint)
    with pytest.raises(InputError, match="do not match"):
        init_from_checkpoint(build_cqmlp(depth=2, per_channel=True), first.checkpoint)
    with pytest.raises(InputError, match="give one"):
        train_cqmlp(split, TrainConfig(epochs=1, teacher=str(first.checkpoint), init_from_teacher=True,
                                       init_from=str(first.checkpoint)), tmp_path / "d.pt", {"name": "test"})


def test_bn_recalibration_sets_the_plain_average_of_the_pre_activations(tmp_path):
    import torch
    from torch import nn

    from hwkit.compress.cqmlp.model import build_cqmlp
    from hwkit.compress.cqmlp.train import TrainConfig, recalibrate_bn, train_cqmlp

    split = _split()
    torch.manual_seed(0)
    model = build_cqmlp(per_channel=True)
    model.train()
    model(torch.from_numpy(split.train.x[:256]).float())  # initialise the activation scales; moves running stats
    x = split.train.x[:1000]
    pre: list[torch.Tensor] = []
    h = model[0].register_forward_hook(lambda _m, _i, out: pre.append(out.detach()))
    recalibrate_bn(model, x, batch=250)  # 4 equal batches: the cumulative average, not a momentum one
    h.remove()
    first = torch.cat(pre)
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm1d) and not model.training and bn.momentum == 0.1
    torch.testing.assert_close(bn.running_mean, first.mean(0), rtol=1e-5, atol=1e-4)
    # per batch, unbiased variances averaged over the 4 batches
    var = torch.stack([first[i:i + 250].var(0, unbiased=True) for i in range(0, 1000, 250)])
    torch.testing.assert_close(bn.running_var, var.mean(0), rtol=1e-4, atol=1e-3)
    # in training, the saved model's statistics are the recalibrated ones (they differ from the momentum ones)
    cfg = TrainConfig(epochs=1, batch_size=256, lr=3e-3, patience=0, seed=0)
    plain = train_cqmlp(split, cfg, tmp_path / "p.pt", {"name": "test"})
    recal = train_cqmlp(split, TrainConfig(**{**cfg.__dict__, "bn_recalibrate": 700}), tmp_path / "r.pt",
                        {"name": "test"})
    sp = torch.load(plain.checkpoint, weights_only=True)["state_dict"]
    sr = torch.load(recal.checkpoint, weights_only=True)["state_dict"]
    torch.testing.assert_close(sp["0.weight"], sr["0.weight"])  # same training
    assert not torch.allclose(sp["1.running_mean"], sr["1.running_mean"])
    check = build_cqmlp(per_channel=True)
    check.load_state_dict(sp)
    pick = np.random.default_rng(1).choice(len(split.train), 700, replace=False)
    recalibrate_bn(check, split.train.x[pick])
    torch.testing.assert_close(check.state_dict()["1.running_mean"], sr["1.running_mean"])
