"""LayerNorm in the finn-transformer streamlining: a quantiser's scale folded into LayerNorm's epsilon."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("qonnx")


def _ln_graph(scale: float, eps: float = 1e-5, axis: int = -1):
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import qonnx_make_model

    shape = [1, 8, 16]
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor("c", TensorProto.FLOAT, [], [scale]),
             helper.make_tensor("g", TensorProto.FLOAT, [16], rng.uniform(0.5, 2, 16).astype(np.float32)),
             helper.make_tensor("b", TensorProto.FLOAT, [16], rng.normal(0, 1, 16).astype(np.float32))]
    nodes = [helper.make_node("Mul", ["x", "c"], ["xs"]),
             helper.make_node("LayerNormalization", ["xs", "g", "b"], ["y"], axis=axis, epsilon=eps)]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    model = model.transform(InferShapes())
    return model, rng.integers(-8, 8, shape).astype(np.float32)


def _run(model, x):
    import qonnx.core.onnx_exec as oxe

    return oxe.execute_onnx(model, {"x": x})["y"]


@pytest.mark.parametrize("scale", [0.03125, 0.4, 3.0])
def test_scalar_scale_moves_into_epsilon_and_outputs_stay(scale):
    from hwkit.backends.finn.transformer import absorb_scale_into_layernorm

    model, x = _ln_graph(scale)
    ref = _run(model, x)
    model, changed = absorb_scale_into_layernorm(model)
    assert changed
    assert [n.op_type for n in model.graph.node] == ["LayerNormalization"]
    (ln,) = model.graph.node
    assert ln.input[0] == "x"  # reads the integer tensor directly
    eps = next(a.f for a in ln.attribute if a.name == "epsilon")
    assert eps == pytest.approx(1e-5 / scale ** 2, rel=1e-6)
    # LN(c x; eps) = LN(x; eps / c^2): equal up to float32 rounding
    assert np.abs(_run(model, x) - ref).max() < 1e-5


def test_a_negative_scale_or_another_axis_is_left_alone():
    from hwkit.backends.finn.transformer import absorb_scale_into_layernorm

    for model, _ in (_ln_graph(-0.5), _ln_graph(0.5, axis=1)):
        model, changed = absorb_scale_into_layernorm(model)
        assert not changed
        assert [n.op_type for n in model.graph.node] == ["Mul", "LayerNormalization"]
