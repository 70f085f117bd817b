"""``hwkit shiftadd`` on a small float CNN (Conv2d layers) trained here on digits."""

from __future__ import annotations

import json

import pytest

from tests.e2e.models import is_pow2, train_on_digits

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains

torch = pytest.importorskip("torch")

ARCH = "tests.e2e.test_shiftadd_conv:small_cnn"
CONVS = ("1", "4")


def small_cnn(classes: int = 10):
    """8x8 digits (flat, 64 values) -> conv (BN) -> strided grouped conv -> Linear head."""
    nn = torch.nn
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, classes))


@pytest.fixture(scope="module")
def cnn_sd(tmp_path_factory):
    m = train_on_digits(small_cnn, epochs=6)
    path = tmp_path_factory.mktemp("shiftadd_conv") / "cnn.pt"
    torch.save(m.state_dict(), path)
    return path


def test_cli_ps_converts_convs_and_exports_pow2_conv_onnx(cnn_sd, tmp_path, capsys):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from hwkit.cli import main
    from hwkit.compress.amp.toy import digits_splits
    from hwkit.compress.shiftadd.export import run_ort

    out = tmp_path / "ps.pt"
    rc = main(["shiftadd", str(cnn_sd), "--arch", ARCH, "--mode", "ps", "--calib", "digits", "--epochs", "1",
               "--out", str(out), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["accuracy"]["before"] > 0.85 and rep["accuracy"]["after"] > rep["accuracy"]["before"] - 0.1
    assert [lay["name"] for lay in rep["layers"]] == [*CONVS, "7"]
    assert rep["layers"][1]["shape"] == [8, 4, 3, 3]
    assert "dense_conv_layers" not in rep
    # conv op counts per output position: 8x8 then 4x4 outputs
    dense = rep["energy"]["dense"]["ops"]
    assert dense["fp_mult"] == 64 * 8 * 9 + 16 * 8 * 36 + 10 * 128
    assert rep["energy"]["reparameterised"]["ops"]["fp_mult"] == 0 and rep["energy"]["saving"] > 0.5
    assert rep["onnx"]["ort_max_abs_diff"] < 1e-4 and rep["onnx"]["argmax_agree"] == 1.0
    assert set(rep["qonnx"]["layers"]) == {*CONVS, "7"} and rep["qonnx"]["qonnx_exec_max_abs_diff"] < 1e-4
    assert 0 < rep["qonnx"]["inference_cost"]["total_macs"] <= dense["fp_mult"]  # zero weights are discounted
    codes = torch.load(out.with_suffix(".codes.pt"), weights_only=True)
    assert codes["4"]["sign"].shape == (8, 4, 3, 3) and codes["4"]["p"].dtype == torch.int8
    # the saved model: plain Conv2d layers with power-of-two weights, and ORT on the ONNX file agrees with it
    model = small_cnn()
    model.load_state_dict(torch.load(out, weights_only=True))
    model.eval()
    for name in CONVS:
        w = model.get_submodule(name).weight.detach()
        assert is_pow2(w, -14, 0)
        c = codes[name]
        assert torch.equal(c["sign"].float() * torch.pow(2.0, c["p"].float()), w)
    x = digits_splits(0)["test"][0][:32]
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(run_ort(tmp_path / "shiftadd.onnx", x.numpy()) - ref).max() < 1e-4
    g = onnx.load(str(tmp_path / "shiftadd.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in g.graph.initializer}
    conv_w = [inits[n.input[1]] for n in g.graph.node if n.op_type == "Conv"]
    assert len(conv_w) == 2
    for w in conv_w:
        assert is_pow2(torch.from_numpy(w.copy()), -14, 0)


def test_cli_bcq_leaves_convs_dense_and_says_so(cnn_sd, tmp_path, capsys):
    from hwkit.cli import main

    rc = main(["shiftadd", str(cnn_sd), "--arch", ARCH, "--mode", "bcq", "--rounds", "3", "--calib", "digits",
               "--out", str(tmp_path / "b.pt"), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["dense_conv_layers"]["names"] == list(CONVS)
    assert [lay["name"] for lay in rep["layers"]] == ["7"]
    assert rep["energy"]["reparameterised"]["ops"]["fp_mult"] == 64 * 8 * 9 + 16 * 8 * 36  # the dense convs
    assert rep["onnx"]["ort_max_abs_diff"] < 1e-4
    assert "left dense" in (tmp_path / "shiftadd_report.md").read_text()
