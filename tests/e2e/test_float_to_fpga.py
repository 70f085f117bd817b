"""A float model sent to an FPGA target: finn-plus maps only its ReLUs and leaves every weight layer on the host, so
the "accelerator" estimate would describe none of the model. hwkit once reported it as fitting at 6 M fps with
0 LUT; now it stops with exit 3 naming the layers and the remedy. A model with a float first layer in front of a
quantised body still compiles, with a warning that the first layer's work is not in the estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("finn")

from hwkit.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _state(tmp_path: Path, build: str, shape: tuple[int, ...] = (16,)) -> Path:
    from tests.e2e import models

    torch.manual_seed(0)
    m = getattr(models, build)()
    m.train()
    with torch.no_grad():  # BatchNorm statistics and activation scales from integer inputs
        for _ in range(4):
            m(torch.randint(0, 256, (64, *shape)).float())
    torch.save(m.eval().state_dict(), tmp_path / f"{build}.pt")
    return tmp_path / f"{build}.pt"


def test_float_mlp_to_fpga_is_unsupported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sd = _state(tmp_path, "float_mlp16")
    out = tmp_path / "build"
    rc = main(["compile", str(sd), "--arch", "tests.e2e.models:float_mlp16", "--input-shape", "1,16",
               "--target", "zcu104", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "no weight layer maps" in err and "PyTorch layer 0" in err and "--quantize" in err
    assert not (out / "report.json").exists()


def test_float_first_layer_on_the_host_is_a_warning(tmp_path: Path) -> None:
    sd = _state(tmp_path, "float_first_layer")
    out = tmp_path / "build"
    rc = main(["compile", str(sd), "--arch", "tests.e2e.models:float_first_layer", "--input-shape", "1,16",
               "--target", "zcu104", "--out", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    weights = [n for n in rep["model"]["host_nodes"] if n.get("weights")]
    assert [(n["op"], n["where"]) for n in weights] == [("MatMul", "input")]
    assert any("run on the host in floating point" in w and weights[0]["name"] in w for w in rep["warnings"])


def test_rounding_trunc_pool_is_unsupported_naming_the_layer(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A TruncAvgPool2d with ROUND once ended as exit 5 (finn-plus's QONNX conversion raising a ValueError)."""
    sd = _state(tmp_path, "round_trunc_pool_cnn", shape=(1, 8, 8))
    rc = main(["compile", str(sd), "--arch", "tests.e2e.models:round_trunc_pool_cnn", "--input-shape", "1,1,8,8",
               "--target", "zcu104", "--out", str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "PyTorch layer 3 (TruncAvgPool2d)" in err and "FLOOR" in err
