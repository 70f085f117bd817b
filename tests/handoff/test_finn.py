"""Hand-offs torch -> QONNX -> FINN (streamlined and HW graphs): integer-exact on real models, and a
corrupted stage is caught (moved from tests/e2e/test_compile.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hwkit.api import compile_model
from hwkit.errors import VerificationError
from tests.conftest import make_qmlp, save_checkpoint

pytestmark = pytest.mark.slow  # compiles through real finn-plus


def test_verification_catches_a_corrupted_stage(tmp_path, tiny_ckpt):
    def corrupt(art, ctx):
        """Flip one weight of the streamlined graph (what a buggy transformation would do)."""
        from qonnx.core.modelwrapper import ModelWrapper

        m = ModelWrapper(str(art.path))
        node = m.get_nodes_by_op_type("MatMul")[0]
        w = m.get_initializer(node.input[1]).copy()
        w.flat[0] = -w.flat[0] if w.flat[0] != 0 else 1.0
        w.flat[1] = w.flat[1] + 1.0
        m.set_initializer(node.input[1], w)
        out = ctx.work_dir / "model.onnx"
        m.save(str(out))
        return art.evolve(path=out)

    flow = ["export_qonnx", "finn.qonnx_to_finn", "finn.tidy_up", "finn.streamline", corrupt, "verify"]
    with pytest.raises(VerificationError, match="qonnx -> finn diverges"):
        compile_model(tiny_ckpt, "zcu104", tmp_path / "v", flow=flow)
    assert not (tmp_path / "v" / "report.json").exists()


@pytest.mark.parametrize("bits", [3, 4])
def test_integer_exact_handoff_at_other_bit_widths(tmp_path, bits):
    path = save_checkpoint(tmp_path / f"w{bits}.pt", make_qmlp(bits=bits, seed=bits), bits=bits)
    rep = compile_model(path, "zcu104", tmp_path / f"b{bits}", to_step="finn-hw")
    assert [v["ok"] for v in rep.verification] == [True, True, True]
    assert rep.verification[-1]["int_exact"] is True
    golden = np.load(tmp_path / f"b{bits}" / "passes" / "01-export_qonnx" / "golden_in.npy")
    assert golden.min() >= 0 and golden.max() <= 255 and len(golden) == 32
