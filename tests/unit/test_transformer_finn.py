"""finn-plus transformer passes on exported encoders (real Brevitas export, real finn-plus transformations)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # exports and streamlines encoders with finn-plus (about a minute each)

torch = pytest.importorskip("torch")
pytest.importorskip("finn")


def _streamlined(tmp_path, calibrate=False, **kw):
    from hwkit.backends.finn.passes import ensure_finn

    ensure_finn(tmp_path)  # finn-plus's settings first: its builder modules read them at import
    from brevitas.export import export_qonnx
    from finn.builder.build_dataflow_config import DataflowBuildConfig
    from finn.builder.build_dataflow_steps import step_qonnx_to_finn, step_tidy_up
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    from hwkit.backends.finn.transformer import step_transformer_streamline
    from hwkit.models.encoder import build_encoder, with_positions

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_encoder(**kw)
    if calibrate:  # training-mode forwards: BatchNorm statistics and activation scales of digit-like inputs
        model.train()
        with torch.no_grad():
            model(with_positions(torch.randint(0, 17, (256, 8, 8)).float()))
    model = model.eval()
    x = with_positions(torch.randint(0, 17, (1, 8, 8)).float())
    export_qonnx(model, x, export_path=str(tmp_path / "m.onnx"))
    m = ModelWrapper(str(tmp_path / "m.onnx"))
    m.set_tensor_datatype(m.graph.input[0].name, DataType["UINT5"])
    cfg = DataflowBuildConfig(output_dir=str(tmp_path), synth_clk_period_ns=5.0, generate_outputs=[],
                              fpga_part="xczu7ev-ffvc1156-2-e")
    m = step_transformer_streamline(step_tidy_up(step_qonnx_to_finn(m, cfg), cfg), cfg)
    return m, cfg, model, x


def test_streamlining_leaves_no_batch_transpose_and_keeps_outputs(tmp_path):
    import numpy as np
    import qonnx.core.onnx_exec as oxe

    m, _, model, x = _streamlined(tmp_path, dim=8, hidden=16)
    ops = [n.op_type for n in m.graph.node]
    # Brevitas's batch-first MHA swaps batch and tokens around each projection; only the K^T transpose is left
    assert ops.count("Transpose") == 1
    assert "Add" in ops and ops.count("MatMul") == 10  # 7 weight MatMuls, QK^T, AV, head; residual adds stay
    out = oxe.execute_onnx(m, {m.graph.input[0].name: x.numpy()})[m.graph.output[0].name]
    assert np.abs(out - model(x).detach().numpy()).max() < 1e-4


def test_multi_head_split_of_brevitas_export_is_streamlined_into_finn_plus_pattern(tmp_path):
    """Brevitas quantises each head after its Reshape; streamlining moves the Reshape past that (per-tensor)
    threshold so that it meets its head Transpose, and finn-plus's attention inference maps both heads."""
    import numpy as np
    import qonnx.core.onnx_exec as oxe

    from hwkit.backends.finn.transformer import attention_to_hw

    # calibrated: the uncalibrated model's round scales put values exactly on rounding ties, where thresholds
    # (round half up) and Brevitas's export (half to even) differ by a level with or without this rewrite
    m, _, model, x = _streamlined(tmp_path, calibrate=True, dim=8, hidden=16, heads=2)
    splits = [n for n in m.graph.node if n.op_type == "Reshape"
              and [s.op_type for s in m.find_direct_successors(n) or []] == ["Transpose"]
              and len(m.get_tensor_shape(n.output[0])) == 3 and m.get_tensor_shape(n.output[0])[1] == 2]
    assert len(splits) == 3  # q, k, v: (tokens, 1, dim) -> (tokens, heads, dim/heads) -> head transpose
    out = oxe.execute_onnx(m, {m.graph.input[0].name: x.numpy()})[m.graph.output[0].name]
    assert np.abs(out - model(x).detach().numpy()).max() < 1e-4
    ops = [n.op_type for n in attention_to_hw(m).graph.node]
    assert ops.count("ScaledDotProductAttention") == 2 and ops.count("MergeMultiHeads") == 1
