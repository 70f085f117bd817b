"""The flow chosen from the exported graph (hwkit/backends/finn/select.py), on small ONNX graphs: a residual
join or a grouped convolution picks finn-recipes instead of finn-estimate; a bias add, a plain
convolution or a default flow no rule replaces picks nothing."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from hwkit.backends.finn.select import RULES, choose_flow
from hwkit.flow import flow_names

pytest.importorskip("qonnx")


def _save(tmp_path, nodes, inits: dict[str, np.ndarray]):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    for k, v in inits.items():
        model.set_initializer(k, v.astype(np.float32))
    path = tmp_path / "g.onnx"
    model.save(str(path))
    return path


def _conv(name: str, x: str, y: str, group: int = 1):
    return helper.make_node("Conv", [x, f"{name}_w"], [y], name=name, group=group, pads=[1, 1, 1, 1])


def test_residual_join_picks_the_recipes(tmp_path):
    w = np.ones((4, 4, 3, 3))
    path = _save(tmp_path, [_conv("c1", "x", "a"), _conv("c2", "a", "b"), helper.make_node("Add", ["a", "b"], ["y"],
                                                                                           name="join")],
                 {"c1_w": w, "c2_w": w})
    choice = choose_flow(path, "finn-estimate")
    assert choice is not None and choice.flow == "finn-recipes" and choice.default == "finn-estimate"
    assert choice.found == {"residual": ["join"]}
    assert "residual adds (join)" in choice.reason and "--flow finn-estimate" in choice.reason
    assert choose_flow(path, "ort-cpu") is None  # no rule replaces that default


def test_grouped_conv_picks_the_recipes_and_plain_graphs_nothing(tmp_path):
    path = _save(tmp_path, [_conv("dw", "x", "y", group=4)], {"dw_w": np.ones((4, 1, 3, 3))})
    choice = choose_flow(path, "finn-estimate")
    assert choice is not None and choice.found == {"depthwise": ["dw"]}

    bias = _save(tmp_path, [_conv("c", "x", "a"), helper.make_node("Add", ["a", "b"], ["y"], name="bias")],
                 {"c_w": np.ones((4, 4, 3, 3)), "b": np.ones((1, 4, 1, 1))})
    assert choose_flow(bias, "finn-estimate") is None  # an add of a constant is a bias, not a join


def test_rules_name_shipped_flows():
    shipped = set(flow_names())
    assert all(rule.flow in shipped and set(rule.replaces) <= shipped for rule in RULES)


def test_attention_picks_the_transformer_flow_before_the_recipes(tmp_path):
    # x (1,4,6,6) used as 4 x (6x6) "heads": scores = softmax(x @ x^T), out = scores @ x, plus a residual join
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], name="kt", perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["x", "xt"], ["s"], name="qk"),
             helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "x"], ["o"], name="av"),
             helper.make_node("Add", ["o", "x"], ["y"], name="residual")]
    choice = choose_flow(_save(tmp_path, nodes, {}), "finn-estimate")
    assert choice is not None and choice.flow == "finn-transformer"
    assert choice.found["attention"] == ["qk", "av"]

    # a MatMul by weights without a softmax is a linear layer, not attention
    linear = _save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], {"w": np.ones((6, 6))})
    assert choose_flow(linear, "finn-estimate") is None
