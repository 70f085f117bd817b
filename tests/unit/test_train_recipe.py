"""Training-recipe options of hwkit.compress.cqmlp.train: progressive quantisation (``pretrain_bits``/``_epochs``)."""

from __future__ import annotations

import numpy as np
import pytest

from hwkit.compress.cqmlp.train import STAGE_WARMUP, TrainConfig, lr_at, stage_at, stages_of, train_cqmlp
from hwkit.data.windows import Split, Windows
from hwkit.errors import InputError


def _windows(m: int, seed: int) -> Windows:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(m, 40), dtype=np.uint8)
    y = (x[:, 1] % 4).astype(np.int64)  # learnable from one byte
    return Windows(x, y, np.zeros(m, np.int32), np.arange(m, dtype=np.int64), 4)


def _split() -> Split:
    return Split(_windows(256, 0), _windows(64, 1), _windows(64, 2), "time", (0.8, 0.1, 0.1), 0)


def _cfg(**kw) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 64, "lr": 1e-3, "patience": 0, "pretrain_bits": (8,), "pretrain_epochs": (1,)}
    return TrainConfig(**(base | kw))


def test_stages_and_their_schedules():
    cfg = TrainConfig(bits=2, epochs=5, warmup=0.15, pretrain_bits=(8, 3), pretrain_epochs=(2, 1))
    assert stages_of(cfg) == [(8, 2, 0.15), (3, 1, STAGE_WARMUP), (2, 5, STAGE_WARMUP)]
    assert stages_of(TrainConfig(bits=2, epochs=4)) == [(2, 4, 0.15)]  # off by default: one stage, as before
    assert [stage_at(stages_of(cfg), e) for e in range(1, 10)] == [(0, 0), (0, 0), (1, 2), (2, 3), (2, 3), (2, 3),
                                                                    (2, 3), (2, 3), (2, 3)]
    # every stage restarts its one-cycle schedule: a later stage warms up over 2% of its own steps
    later = TrainConfig(lr=3e-3, warmup=stages_of(cfg)[1][2])
    lrs = [lr_at(later, s, 1000) for s in range(1000)]
    assert int(np.argmax(lrs)) == 20 and lrs[0] < 2e-4
    for bad, words in (({"pretrain_bits": (8,), "pretrain_epochs": ()}, "same length"),
                       ({"pretrain_bits": (9,), "pretrain_epochs": (1,)}, "1..8"),
                       ({"pretrain_bits": (8,), "pretrain_epochs": (0,)}, ">= 1")):
        with pytest.raises(InputError, match=words):
            stages_of(TrainConfig(**bad))


def test_progressive_run_keeps_only_the_final_width_and_carries_the_weights(tmp_path):
    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp

    # with a negligible learning rate the weights hardly move, so the final 2-bit model must still hold the
    # 8-bit stage's initial weights (a fresh 2-bit model would have different ones)
    cfg = _cfg(lr=1e-12, epochs=2)
    res = train_cqmlp(_split(), cfg, tmp_path / "cq.pt", {"name": "toy"})
    hist = res.summary["history"]
    assert [r["bits"] for r in hist] == [8, 2, 2]
    assert not hist[0]["best"] and res.summary["best_epoch"] in (2, 3)
    ckpt = torch.load(tmp_path / "cq.pt", weights_only=False)
    assert ckpt["arch_kwargs"]["bits"] == 2 and ckpt["meta"]["config"]["pretrain_bits"] == [8]
    torch.manual_seed(cfg.seed)
    fresh2 = build_cqmlp(**cfg.arch_kwargs())
    init8 = build_cqmlp(**(cfg.arch_kwargs() | {"bits": 8}))
    w = ckpt["state_dict"]["0.weight"]
    assert torch.allclose(w, init8[0].weight, atol=1e-6)
    assert not torch.allclose(w, fresh2[0].weight, atol=1e-3)


def test_progressive_run_resumes_in_the_right_stage_and_refuses_other_stages(tmp_path):
    import torch

    out = tmp_path / "cq.pt"
    train_cqmlp(_split(), _cfg(epochs=1), out, {"name": "toy"})  # epoch 1 at 8 bits, epoch 2 at 2 bits
    res = train_cqmlp(_split(), _cfg(epochs=3), out, {"name": "toy"}, resume=tmp_path / "cq.state.pt")
    assert [r["bits"] for r in res.summary["history"]] == [8, 2, 2, 2]
    assert torch.load(out, weights_only=False)["arch_kwargs"]["bits"] == 2
    with pytest.raises(InputError, match="pretrain_bits"):
        train_cqmlp(_split(), _cfg(epochs=4, pretrain_bits=(4,)), out, {"name": "toy"},
                    resume=tmp_path / "cq.state.pt")


def test_states_saved_before_the_field_existed_resume_as_single_stage(tmp_path):
    import torch

    out = tmp_path / "old.pt"
    state_path = tmp_path / "old.state.pt"
    cfg = _cfg(pretrain_bits=(), pretrain_epochs=(), epochs=1)
    train_cqmlp(_split(), cfg, out, {"name": "toy"})
    state = torch.load(state_path, weights_only=True)
    for key in ("pretrain_bits", "pretrain_epochs"):
        del state["config"][key]
    torch.save(state, state_path)
    res = train_cqmlp(_split(), TrainConfig(**(cfg.__dict__ | {"epochs": 2})), out, {"name": "toy"}, resume=state_path)
    assert [r["bits"] for r in res.summary["history"]] == [2, 2]
    with pytest.raises(InputError, match="pretrain_bits"):
        train_cqmlp(_split(), _cfg(epochs=3), out, {"name": "toy"}, resume=state_path)


@pytest.mark.parametrize(("args", "words"), [
    (["--pretrain-bits", "8,x", "--pretrain-epochs", "1,1"], "comma-separated list of integers"),
    (["--pretrain-bits", "8,3", "--pretrain-epochs", "1"], "same length"),
    (["--pretrain-bits", "9", "--pretrain-epochs", "1"], "1..8"),
])
def test_cli_refuses_bad_stages_before_reading_data(tmp_path, capsys, args, words):
    from hwkit.cli import main

    # --data names a directory that does not exist: the stage check must come first
    assert main(["train", "cqmlp", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "cq.pt"), *args]) == 2
    assert words in capsys.readouterr().err


def test_cli_passes_the_stages_to_the_config(monkeypatch, tmp_path):
    import hwkit.compress.cqmlp.train
    from hwkit.cli import main

    seen = {}

    def fake_prepare(*a, **kw):
        seen["cfg"] = a[2]
        raise InputError("stop here")

    monkeypatch.setattr(hwkit.compress.cqmlp.train, "prepare_data", fake_prepare)
    assert main(["train", "cqmlp", "--synthetic", "--quiet", "--out", str(tmp_path / "cq.pt"),
                 "--pretrain-bits", "8,3", "--pretrain-epochs", "4,2"]) == 2
    assert seen["cfg"].pretrain_bits == (8, 3) and seen["cfg"].pretrain_epochs == (4, 2)
