"""A 1-D quantised CNN to an FPGA board. qonnx's conv lowering takes 2-D kernels only, so finn-plus's streamlining
once failed with an IndexError (exit 5); hwkit now rewrites 1-D convs and pools as 2-D ones on (N, C, L, 1) after
tidy-up, as FINN's own 1-D examples do, and every hand-off is verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("finn")

from hwkit.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_conv1d_cnn_compiles_with_every_handoff_verified(tmp_path: Path) -> None:
    from tests.e2e.models import quant_cnn_1d

    torch.manual_seed(0)
    model = quant_cnn_1d()
    model.train()
    with torch.no_grad():  # BatchNorm statistics and activation scales
        for _ in range(3):
            model(torch.randn(32, 4, 16))
    torch.save(model.eval().state_dict(), tmp_path / "c1d.pt")
    out = tmp_path / "build"
    assert main(["compile", str(tmp_path / "c1d.pt"), "--arch", "tests.e2e.models:quant_cnn_1d", "--input-shape",
                 "1,4,16", "--target", "zcu104", "--out", str(out), "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    rows = [(r["reference"], r["stage"], r["ok"]) for r in rep["verification"]]
    assert rows == [("torch", "qonnx", True), ("qonnx", "finn-streamlined", True),
                    ("finn-streamlined", "finn-hw", True)]
    assert rep["verification"][-1]["int_exact"] is True
    ops = [layer["op"].split("_")[0] for layer in rep["layers"]]
    assert ops.count("MVAU") == 3 and ops.count("ConvolutionInputGenerator") >= 2 and "Pool" in ops
    assert rep["model"]["host_nodes"] == []
