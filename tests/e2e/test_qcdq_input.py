"""An ONNX file quantised with QuantizeLinear / Clip / DequantizeLinear (QCDQ) as the FPGA input.

Brevitas's `export_onnx_qcdq` writes this form; FINN reads QONNX Quant nodes. hwkit once sent the QDQ nodes
straight to finn-plus, which stopped at convert_to_hw ("QuantizeLinear has no FINN hardware layer"). Now they are
converted (qonnx's QCDQToQuant), the conversion is verified against the file itself in ONNX Runtime, and the design
is the one the same model gives through QONNX. Per-channel QDQ from ONNX Runtime's quantize_static, which qonnx
cannot convert, stops with exit 3 and a line saying what to do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("finn")

from hwkit.cli import main  # noqa: E402
from tests.conftest import make_qmlp, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_brevitas_qcdq_file_compiles_like_its_qonnx(tmp_path: Path) -> None:
    from brevitas.export import export_onnx_qcdq

    model = make_qmlp()
    export_onnx_qcdq(model, torch.zeros(1, 16), str(tmp_path / "m.onnx"), dynamo=False)
    assert main(["compile", str(tmp_path / "m.onnx"), "--input-dtype", "UINT8", "--target", "zcu104",
                 "--out", str(tmp_path / "qcdq"), "--quiet"]) == 0
    assert main(["compile", str(save_checkpoint(tmp_path / "m.pt", model)), "--target", "zcu104",
                 "--out", str(tmp_path / "ckpt"), "--quiet"]) == 0
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("qcdq", "ckpt"))
    rows = [(r["reference"], r["stage"], r["ok"]) for r in a["verification"]]
    assert rows == [("onnxruntime-qcdq", "qonnx", True), ("qonnx", "finn-streamlined", True),
                    ("finn-streamlined", "finn-hw", True)]
    assert a["model"]["format"] == "qcdq"
    assert a["resources"]["LUT"]["used"]["value"] == b["resources"]["LUT"]["used"]["value"] > 0
    layers = [[(x["op"], x["pe"], x["simd"], x["weight_dtype"]) for x in r["layers"]] for r in (a, b)]
    assert layers[0] == layers[1] and [x[0] for x in layers[0]].count("MVAU_hls") == 3


def test_per_channel_ort_qdq_to_fpga_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    torch.manual_seed(0)
    float_model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    torch.onnx.export(float_model, (torch.zeros(1, 16),), str(tmp_path / "f.onnx"), dynamo=False,
                      input_names=["x"])

    class Reader:
        def __init__(self) -> None:
            self.it = iter([{"x": np.random.default_rng(i).random((1, 16), dtype=np.float32)} for i in range(8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    rc = main(["compile", str(tmp_path / "q.onnx"), "--target", "zcu104", "--out", str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "QuantizeLinear/DequantizeLinear" in err and "--target cpu" in err and "DequantizeLinear)" in err
