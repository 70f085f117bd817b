"""``hwkit shiftadd`` and the ``shiftadd`` pass end to end on a float MLP trained here on digits."""

from __future__ import annotations

import json

import pytest

from tests.e2e.models import is_pow2, train_on_digits

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains

torch = pytest.importorskip("torch")

ARCH = "hwkit.compress.amp.toy:float_mlp"


@pytest.fixture(scope="module")
def float_sd(tmp_path_factory):
    from hwkit.compress.amp.toy import float_mlp

    m = train_on_digits(float_mlp, epochs=8)
    path = tmp_path_factory.mktemp("shiftadd") / "f.pt"
    torch.save(m.state_dict(), path)
    return path


def test_cli_ps_writes_pow2_model_onnx_qonnx_and_report(float_sd, tmp_path, capsys):
    from hwkit.cli import main
    from hwkit.config import CompileSettings
    from hwkit.load import load_model

    out = tmp_path / "ps.pt"
    rc = main(["shiftadd", str(float_sd), "--arch", ARCH, "--mode", "ps", "--calib", "digits", "--epochs", "2",
               "--out", str(out), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["accuracy"]["before"] > 0.9 and rep["accuracy"]["after"] > rep["accuracy"]["before"] - 0.05
    assert rep["onnx"]["ort_max_abs_diff"] < 1e-4 and rep["onnx"]["argmax_agree"] == 1.0
    assert rep["energy"]["kind"] == "analytical-estimate" and 0.5 < rep["energy"]["saving"] < 1
    assert rep["energy"]["reparameterised"]["ops"]["fp_mult"] == 0
    assert len(rep["finetune"]["loss"]) == 2
    assert {v["bit_width"] for v in rep["qonnx"]["layers"].values()} == {16}
    assert rep["qonnx"]["qonnx_exec_max_abs_diff"] < 1e-4
    cost = rep["qonnx"]["inference_cost"]
    macs = 64 * 64 + 64 * 32 + 32 * 10
    assert cost["total_macs"] <= macs and cost["total_mem_w_bits"] == 16 * cost["total_mem_w_elems"]
    loaded = load_model(out, CompileSettings(arch=ARCH))
    for name in ("0", "3", "6"):
        assert is_pow2(loaded.module.get_submodule(name).weight.detach(), -14)
    codes = torch.load(out.with_suffix(".codes.pt"), weights_only=True)
    assert set(codes) == {"0", "3", "6"} and codes["0"]["sign"].dtype == torch.int8
    for f in ("shiftadd.onnx", "shiftadd_qonnx.onnx", "shiftadd_report.json", "shiftadd_report.md"):
        assert (tmp_path / f).is_file()
    assert "analytical estimate" in (tmp_path / "shiftadd_report.md").read_text()


def test_cli_bcq_allocates_bits_and_reports_layer_errors(float_sd, tmp_path, capsys):
    from hwkit.cli import main

    out = tmp_path / "b.pt"
    rc = main(["shiftadd", str(float_sd), "--arch", ARCH, "--mode", "bcq", "--bits", "0", "--rounds", "5",
               "--calib", "digits", "--out", str(out), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert {lay["bits"] for lay in rep["layers"]} <= {2, 3}
    assert all(0 < lay["output_rel_error"] < 1 for lay in rep["layers"])
    assert rep["accuracy"]["after"] > 0.85 and rep["onnx"]["ort_max_abs_diff"] < 1e-4
    assert rep["energy"]["reparameterised"]["ops"]["lut_query"] > 0
    assert "qonnx" not in rep


def test_cli_refuses_brevitas_model(tmp_path, capsys):
    from hwkit.cli import main
    from hwkit.models.mlp import build_qmlp

    kw = {"in_features": 64, "hidden": [8], "out_features": 10}
    path = tmp_path / "q.pt"
    m = build_qmlp(**kw)
    m(torch.rand(4, 64))  # initialises Brevitas' lazy activation scales (part of the state dict)
    torch.save({"hwkit_checkpoint": 1, "arch": "qmlp", "arch_kwargs": kw, "state_dict": m.state_dict(),
                "input_shape": [1, 64]}, path)
    rc = main(["shiftadd", str(path), "--calib", "digits", "--out", str(tmp_path / "o.pt")])
    assert rc == 3
    assert "Brevitas" in capsys.readouterr().err


def test_shiftadd_pass_in_a_flow_context(float_sd, tmp_path):
    from hwkit.artifact import Artifact
    from hwkit.board import load_board
    from hwkit.config import CompileSettings, Context
    from hwkit.registry import resolve

    spec = resolve("shiftadd")
    work = tmp_path / "passes" / "01-shiftadd"
    work.mkdir(parents=True)
    ctx = Context(load_board("zcu104"), CompileSettings(arch=ARCH), tmp_path, work,
                  {"calib": "digits", "mode": "q"})
    art = spec.fn(Artifact("model-file", float_sd), ctx)
    assert art.path == work / "shiftadd.pt" and art.path.is_file()
    assert art.meta["shiftadd"]["mode"] == "q" and art.meta["shiftadd"]["energy_saving"] > 0.5
    assert (work / "shiftadd_report.json").is_file() and (work / "shiftadd.onnx").is_file()


def test_cli_moe_reports_token_shares(float_sd, tmp_path, capsys):
    from hwkit.cli import main

    rc = main(["shiftadd", str(float_sd), "--arch", ARCH, "--mode", "moe", "--epochs", "1", "--calib", "digits",
               "--out", str(tmp_path / "m.pt"), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert [lay["name"] for lay in rep["layers"]] == ["0", "3", "6"]
    for lay in rep["layers"]:
        assert 0 <= lay["shift_token_share"] <= 1 and 0 <= lay["train_shift_token_share"] <= 1
    assert rep["balance_point_shift_share"] == pytest.approx(0.6)
    assert rep["onnx"]["ort_max_abs_diff"] < 1e-4 and "qonnx" not in rep


def test_cli_moe_route_share_calibrates_the_argmax_routing(float_sd, tmp_path, capsys):
    from hwkit.cli import main

    rc = main(["shiftadd", str(float_sd), "--arch", ARCH, "--mode", "moe", "--epochs", "2", "--calib", "digits",
               "--route-share", "0.6", "--out", str(tmp_path / "m.pt"), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["calibrated_route_share"]) == {"0", "3", "6"}
    for v in rep["calibrated_route_share"].values():  # on the calibration split
        assert abs(v - 0.6) < 0.02
    for lay in rep["layers"]:  # the test split: no longer every token to one expert
        assert 0.4 < lay["shift_token_share"] < 0.8
    assert rep["onnx"]["ort_max_abs_diff"] < 1e-4
