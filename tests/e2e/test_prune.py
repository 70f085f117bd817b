"""``hwkit prune`` and the ``prune_amp`` pass end to end on a 2-bit MLP trained here on digits."""

from __future__ import annotations

import json

import pytest

from tests.e2e.models import train_on_digits

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains

torch = pytest.importorskip("torch")

KW = {"in_features": 64, "hidden": [48, 24], "out_features": 10, "weight_bits": 2, "act_bits": 2}


@pytest.fixture(scope="module")
def qmlp_ckpt(tmp_path_factory):
    from hwkit.models.mlp import build_qmlp

    m = train_on_digits(lambda: build_qmlp(**KW), epochs=6, lr=5e-3)
    path = tmp_path_factory.mktemp("prune") / "q.pt"
    torch.save({"hwkit_checkpoint": 1, "arch": "qmlp", "arch_kwargs": KW, "state_dict": m.state_dict(),
                "input_shape": [1, 64], "input_dtype": "UINT8"}, path)
    torch.save(m.state_dict(), path.with_name("q_sd.pt"))
    return path


def test_cli_writes_smaller_hwkit_checkpoint_and_report(qmlp_ckpt, tmp_path, capsys):
    from hwkit.cli import main
    from hwkit.config import CompileSettings
    from hwkit.load import load_model

    out = tmp_path / "pruned.pt"
    rc = main(["prune", str(qmlp_ckpt), "--method", "amp", "--calib", "digits", "--delta-e", "0.02",
               "--batch-size", "64", "--steps", "4", "--distill-epochs", "2", "--out", str(out), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    widths = [b["width_after"] for b in rep["blocks"]]
    assert [b["width_before"] for b in rep["blocks"]] == [48, 24]
    assert rep["params"]["after"] < rep["params"]["before"] and rep["flops_per_sample"]["after"] < \
        rep["flops_per_sample"]["before"]
    assert len(rep["trace"]) >= 2 and set(rep["accuracy"]) == {"before", "after_prune", "after_distill"}
    assert all(v is not None for v in rep["accuracy"].values())
    loaded = load_model(out, CompileSettings())
    assert loaded.format == "hwkit-checkpoint"
    ck = torch.load(out, weights_only=True)
    assert ck["arch_kwargs"]["hidden"] == widths and ck["meta"]["amp"]["widths_after"] == widths
    assert sum(p.numel() for p in loaded.module.parameters()) == rep["params"]["after"]
    for name in ("prune_report.json", "prune_report.md", "prune_widths.svg"):
        assert (tmp_path / name).is_file()
    assert (tmp_path / "prune_widths.svg").read_text().startswith("<svg")
    assert "Search trace" in (tmp_path / "prune_report.md").read_text()


def test_cli_state_dict_input_gives_widths_json(qmlp_ckpt, tmp_path):
    from hwkit.cli import main

    out = tmp_path / "sd_pruned.pt"
    rc = main(["prune", str(qmlp_ckpt.with_name("q_sd.pt")), "--calib", "digits", "--arch",
               "hwkit.models.mlp:build_qmlp", "--arch-kwargs", json.dumps(KW), "--batch-size", "64", "--steps", "2",
               "--out", str(out), "--quiet"])
    assert rc == 0
    side = json.loads(out.with_suffix(".widths.json").read_text())
    assert set(side["widths"]) == {"0->3", "3->6"}
    sd = torch.load(out, weights_only=True)
    assert sd["3.weight"].shape == (side["widths"]["3->6"], side["widths"]["0->3"])


def test_cli_rejects_bad_calib(qmlp_ckpt, tmp_path, capsys):
    from hwkit.cli import main

    rc = main(["prune", str(qmlp_ckpt), "--calib", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "p.pt")])
    assert rc == 2 and "--calib" in capsys.readouterr().err


def test_prune_amp_pass_in_a_flow_context(qmlp_ckpt, tmp_path):
    from hwkit.artifact import Artifact
    from hwkit.board import load_board
    from hwkit.config import CompileSettings, Context
    from hwkit.registry import resolve

    spec = resolve("prune_amp")
    work = tmp_path / "passes" / "01-prune_amp"
    work.mkdir(parents=True)
    ctx = Context(load_board("zcu104"), CompileSettings(), tmp_path, work,
                  {"calib": "digits", "batch_size": 64, "steps": 2, "delta_e": 0.02})
    art = spec.fn(Artifact("model-file", qmlp_ckpt), ctx)
    assert art.path == work / "pruned.pt" and art.path.is_file()
    assert art.meta["amp"]["params"]["after"] < art.meta["amp"]["params"]["before"]
    assert (work / "prune_report.json").is_file()
