"""hwkit recipes past finn-plus's default steps: streamlining for residual and depthwise-separable CNNs.

finn-plus's ``step_streamline`` cannot move the float scales of a residual network past its forks and
element-wise adds, so convolutions are left with float inputs (an ``Im2Col``/``MatMul`` between HW
layers); a depthwise convolution's scale is not moved past it either. FINN's own example builds
(finn-examples: resnet50 and mobilenet-v1 ``custom_steps.py``) add streamlining transformations for
these; the steps here follow the same idea with hwkit's own code:

* ``residual``: finn-plus's streamlining, then rounds of scalar/linear reordering (move adds and
  multiplications past convolutions, matmuls and invariants; collapse and absorb them into
  thresholds) alternating with moving linear ops past element-wise adds and forks, until the graph
  stops changing; then finn-plus's lowering of convolutions to Im2Col + MatMul.
* ``depthwise``: finn-plus's streamlining plus moving multiplications past depthwise convolutions
  and absorbing them into thresholds, then the same lowering.

``recipe.streamline`` picks what the graph needs (an ``Add`` of two computed tensors: residual; a
``Conv`` with ``group`` > 1: depthwise) and is exactly finn-plus's ``step_streamline`` when it needs
neither, so flows/finn-recipes.toml gives the same design as finn-estimate on plain models.
"""

from __future__ import annotations

from typing import Any

from hwkit.backends.finn.passes import _make_step_pass
from hwkit.registry import PassSpec, register_factory

_ROUNDS = 6
"""Most reorder/absorb rounds of the residual recipe (FINN's resnet50 build uses 4)."""


def graph_features(model: Any) -> set[str]:
    """What in ``model`` needs a recipe: ``residual`` (an ``Add`` of two tensors computed from the input,
    not a bias) and/or ``depthwise`` (a ``Conv`` with ``group`` > 1); the detectors of
    hwkit/backends/finn/select.py, which also picks this flow automatically."""
    from hwkit.backends.finn.select import graph_features as features

    return set(features(model)) & {"residual", "depthwise"}


def _each(model: Any, transforms: list[Any]) -> Any:
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes

    for t in transforms:
        model = model.transform(t)
        model = model.transform(GiveUniqueNodeNames())
        model = model.transform(InferDataTypes())
    return model


def _reorder_round(model: Any) -> Any:
    import finn.transformation.streamline.absorb as absorb
    import finn.transformation.streamline.collapse_repeated as collapse
    import finn.transformation.streamline.reorder as reorder
    from finn.transformation.streamline import ConvertDivToMul, ConvertSubToAdd
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from finn.transformation.streamline.sign_to_thres import ConvertSignToThres
    from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
    from qonnx.transformation.remove import RemoveIdentityOps

    return _each(model, [
        absorb.AbsorbScalarMulAddIntoTopK(), ConvertSubToAdd(), ConvertDivToMul(), RemoveIdentityOps(),
        collapse.CollapseRepeatedMul(), BatchNormToAffine(), ConvertSignToThres(), reorder.MoveAddPastMul(),
        reorder.MoveScalarAddPastMatMul(), reorder.MoveAddPastConv(), reorder.MoveScalarMulPastMatMul(),
        reorder.MoveScalarMulPastConv(), reorder.MoveScalarLinearPastInvariants(), reorder.MoveAddPastMul(),
        collapse.CollapseRepeatedAdd(), collapse.CollapseRepeatedMul(), absorb.AbsorbAddIntoMultiThreshold(),
        absorb.FactorOutMulSignMagnitude(), reorder.MoveMaxPoolPastMultiThreshold(),
        absorb.AbsorbMulIntoMultiThreshold(), absorb.Absorb1BitMulIntoMatMul(), absorb.Absorb1BitMulIntoConv(),
        RoundAndClipThresholds(),
        # the non-linear part: linear ops move past forks first (each consumer gets its own copy), then
        # past residual joins; finn-plus's MoveLinearPastEltwiseAdd does not check that the two
        # multiplications it merges feed nothing else, so on a fork it would change the other branch
        reorder.MoveLinearPastFork(), reorder.MoveLinearPastEltwiseAdd(),
    ])


def _lower(model: Any) -> Any:
    """finn-plus's own tail of step_streamline: lower convolutions, NHWC max-pools, final streamline."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    if model.get_nodes_by_op_type("Conv"):
        for t in (LowerConvsToMatMul(), MakeMaxPoolNHWC(), absorb.AbsorbTransposeIntoMultiThreshold(),
                  MakeMaxPoolNHWC(), absorb.AbsorbConsecutiveTransposes()):
            model = model.transform(t)
    for t in (ConvertBipolarMatMulToXnorPopcount(), Streamline(), absorb.AbsorbScalarMulAddIntoTopK(),
              InferDataLayouts(), RemoveUnusedTensors()):
        model = model.transform(t)
    return model


def _fingerprint(model: Any) -> tuple[str, ...]:
    return tuple(n.op_type for n in model.graph.node)


def step_residual_streamline(model: Any, cfg: Any) -> Any:
    """Streamline a residual CNN (see the module docstring)."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from qonnx.transformation.general import RemoveUnusedTensors, SortGraph

    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(Streamline())
    for _ in range(_ROUNDS):
        before = _fingerprint(model)
        model = _reorder_round(model)
        model = model.transform(RemoveUnusedTensors())
        model = model.transform(SortGraph())
        if _fingerprint(model) == before:
            break
    return _lower(model)


def step_depthwise_streamline(model: Any, cfg: Any) -> Any:
    """Streamline a depthwise-separable CNN (see the module docstring)."""
    import finn.transformation.streamline.absorb as absorb
    import finn.transformation.streamline.collapse_repeated as collapse
    import finn.transformation.streamline.reorder as reorder
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.remove import RemoveIdentityOps

    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(Streamline())
    model = _each(model, [reorder.MoveMulPastDWConv(), absorb.AbsorbMulIntoMultiThreshold(),
                          reorder.MoveScalarMulPastMatMul(), collapse.CollapseRepeatedMul(), RemoveIdentityOps(),
                          RoundAndClipThresholds()])
    return _lower(model)


def step_recipe_streamline(model: Any, cfg: Any) -> Any:
    """finn-plus's step_streamline, or the residual/depthwise recipe when the graph needs one."""
    found = graph_features(model)
    if "residual" in found:
        model = step_residual_streamline(model, cfg)
        return step_depthwise_streamline(model, cfg) if "depthwise" in found else model
    if "depthwise" in found:
        return step_depthwise_streamline(model, cfg)
    from finn.builder.build_dataflow_steps import step_streamline

    return step_streamline(model, cfg)


RECIPE_STEPS = {
    "streamline": step_recipe_streamline,
    "residual_streamline": step_residual_streamline,
    "depthwise_streamline": step_depthwise_streamline,
}


def _factory(name: str) -> PassSpec | None:
    key = name.removeprefix("recipe.")
    fn = RECIPE_STEPS.get(key)
    if fn is None:
        return None
    return PassSpec(name, _make_step_pass(f"recipe_{key}", fn), ("clock_ns", "board"), (fn.__doc__ or "").strip())


register_factory("recipe.", _factory)
