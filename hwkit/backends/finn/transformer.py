"""finn-plus's transformer layers behind hwkit passes: streamlining, attention conversion, folding.

finn-plus 1.6.1 ships the pieces of an encoder's hardware (``ScaledDotProductAttention``, the
multi-head split/merge, ``ElementwiseAdd`` for residuals, ``ReplicateStream`` for forks, ``Squeeze``)
and ad-hoc steps for them (``finn.builder.custom_step_library.transformer_adhoc``: HW conversion
with attention, folding of attention), but no streamlining step that brings a Brevitas encoder there.
The steps here do, in this order (the order of finn-plus's transformer examples):

``transformer_streamline``
    finn-plus's ``StreamlinePlus`` (scales and biases moved through forks, residual adds and
    transposes, absorbed into thresholds), alternating with :class:`MoveTransposeForward`: Brevitas's
    batch-first ``QuantMultiheadAttention`` swaps the batch and token axes around its projections,
    and those transposes must meet their inverse and vanish before the biases in between can reach
    a threshold; and :class:`MoveReshapeForward`: Brevitas quantises each head after its head-split
    Reshape, and finn-plus's ``InferMultiHeads`` only matches a Reshape directly followed by the head
    Transpose, so the Reshape moves past that (per-tensor, element-wise) threshold.
``transformer_convert_to_hw``
    finn-plus's attention inference (heads split, ``InferScaledDotProductAttention``, heads unrolled,
    one attention operator per head with ``Heads=1``, thresholds absorbed into the attention
    operator), then ``Squeeze`` (the batch axis of 1 dropped,
    so the tokens are the stream of an MVAU), a second streamlining round, and finn-plus's
    ``transformer_adhoc.step_convert_to_hw`` (MVAU, thresholds, element-wise adds, replicate-stream,
    split/concat) plus LayerNorm and Squeeze/Unsqueeze layers.
``transformer_set_folding``
    finn-plus's ``transformer_adhoc.step_set_folding`` (attention folded along embedding then
    sequence, everything else by ``SetFolding``) for the target throughput.
"""

from __future__ import annotations

from typing import Any

from hwkit.backends.finn.passes import _make_step_pass
from hwkit.registry import PassSpec, register_factory

_ROUNDS = 4
"""Most StreamlinePlus / transpose rounds (the small encoders settle in two)."""


def _swap_forward(model: Any, node: Any, succ: Any, mid_shape: list[int] | None) -> None:
    """``x -node-> mid -succ-> out`` becomes ``x -succ-> mid -node-> out``; ``mid`` gets ``mid_shape`` (the
    shape of what ``succ`` now sees) and ``out``'s datatype; the node list stays topologically sorted."""
    graph = model.graph
    mid = node.output[0]
    src, out = node.input[0], succ.output[0]
    succ.input[0] = src
    succ.output[0] = mid
    node.input[0] = mid
    node.output[0] = out
    model.set_tensor_shape(mid, mid_shape if mid_shape else model.get_tensor_shape(src))
    model.set_tensor_datatype(mid, model.get_tensor_datatype(out))
    i, j = list(graph.node).index(node), list(graph.node).index(succ)
    if j > i:  # succ now runs before node
        graph.node.remove(succ)
        graph.node.insert(i, succ)


def _single_successor(model: Any, node: Any) -> Any:
    """The one consumer of ``node``'s output taking it as its first input (with constant other inputs), or None."""
    if model.is_fork_node(node):
        return None
    nxt = model.find_direct_successors(node)
    if not nxt or len(nxt) != 1:
        return None
    succ = nxt[0]
    if succ.input[0] != node.output[0] or len(succ.output) != 1:
        return None
    if any(model.get_initializer(t) is None for t in succ.input[1:]):
        return None  # a join: not ours
    return succ


def _per_tensor_threshold(model: Any, node: Any) -> bool:
    """A MultiThreshold with one threshold row for all elements: an element-wise function of its input, so it
    commutes with any transpose or reshape."""
    return node.op_type == "MultiThreshold" and model.get_initializer(node.input[1]).shape[0] == 1


_RANK_LAYOUT = {2: "NC", 3: "NWC", 4: "NHWC"}


def move_transpose_forward(model: Any) -> tuple[Any, bool]:
    """One pass of :class:`MoveTransposeForward`; returns (model, changed)."""
    for node in model.graph.node:
        if node.op_type != "Transpose":
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if perm is None:
            continue
        keeps_last = perm[-1] == len(perm) - 1
        succ = _single_successor(model, node)
        if succ is None:
            continue
        others = [model.get_initializer(t) for t in succ.input[1:]]
        if succ.op_type == "MatMul":
            ok = keeps_last and others[0].ndim == 2
        elif succ.op_type in ("Add", "Mul"):
            # the constant must broadcast over every axis but the last
            ok = keeps_last and (others[0].ndim <= 1 or all(d == 1 for d in others[0].shape[:-1]))
        else:
            ok = _per_tensor_threshold(model, succ)
        if not ok:
            continue
        if succ.op_type == "MultiThreshold":
            # the threshold now sees the axes before the transpose: its layout letters follow them
            attr = next((a for a in succ.attribute if a.name == "data_layout"), None)
            if attr is not None and len(attr.s) == len(perm):
                old = attr.s.decode()
                new = [""] * len(perm)
                for j, p in enumerate(perm):
                    new[p] = old[j]
                attr.s = "".join(new).encode()
        out_shape = model.get_tensor_shape(succ.output[0])
        inv = [perm.index(i) for i in range(len(perm))]
        _swap_forward(model, node, succ, [out_shape[i] for i in inv] if out_shape else None)
        return model, True
    return model, False


def move_reshape_forward(model: Any) -> tuple[Any, bool]:
    """One pass of :class:`MoveReshapeForward`; returns (model, changed).

    Brevitas's ``QuantMultiheadAttention`` quantises the queries, keys and values after splitting them into
    heads: ``Reshape (tokens, 1, dim) -> (tokens, heads, dim/heads)``, the quantiser (a per-tensor
    MultiThreshold once streamlined), then the head transpose. finn-plus's ``InferMultiHeads`` matches a
    Reshape directly followed by its Transpose; a per-tensor threshold is element-wise, so the Reshape moves
    past it (the threshold then runs on the unsplit tensor: the same values in the same order).
    """
    for node in model.graph.node:
        if node.op_type != "Reshape" or model.get_initializer(node.input[1]) is None:
            continue
        succ = _single_successor(model, node)
        if succ is None or not _per_tensor_threshold(model, succ):
            continue
        in_shape = model.get_tensor_shape(node.input[0])
        if in_shape is None:
            continue
        attr = next((a for a in succ.attribute if a.name == "data_layout"), None)
        if attr is not None and len(attr.s) != len(in_shape):
            succ.attribute.remove(attr)  # a layout of the new rank (one threshold row: any channel axis does)
            if len(in_shape) in _RANK_LAYOUT:
                from onnx import helper

                succ.attribute.append(helper.make_attribute("data_layout", _RANK_LAYOUT[len(in_shape)]))
        _swap_forward(model, node, succ, in_shape)
        return model, True
    return model, False


def _transformation_class() -> Any:
    from qonnx.transformation.base import Transformation

    class MoveTransposeForward(Transformation):
        """Move a Transpose past what commutes with it: MatMul-by-weights and per-channel Add/Mul when it
        keeps the last axis (they act on the last axis only), a per-tensor MultiThreshold always."""

        def apply(self, model: Any) -> tuple[Any, bool]:
            return move_transpose_forward(model)

    return MoveTransposeForward


def _reshape_transformation_class() -> Any:
    from qonnx.transformation.base import Transformation

    class MoveReshapeForward(Transformation):
        """Move a constant-shape Reshape past a per-tensor MultiThreshold (see :func:`move_reshape_forward`)."""

        def apply(self, model: Any) -> tuple[Any, bool]:
            return move_reshape_forward(model)

    return MoveReshapeForward


def _tidy(model: Any) -> Any:
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    return model.transform(InferShapes()).transform(InferDataTypes()).transform(GiveUniqueNodeNames())


def _transposes(model: Any) -> Any:
    from finn.transformation.streamline.collapse_repeated import CollapseRepeatedTranspose
    from finn.transformation.streamline.remove import RemoveIdentityReshape, RemoveIdentityTranspose
    from finn.transformation.streamline.reorder import (
        MoveTransposePastEltwise,
        MoveTransposePastFork,
        MoveTransposePastJoinAdd,
        MoveTransposePastJoinMul,
    )
    from qonnx.transformation.composed import ComposedTransformation

    return model.transform(ComposedTransformation([
        _transformation_class()(), _reshape_transformation_class()(), MoveTransposePastFork(),
        MoveTransposePastEltwise(), MoveTransposePastJoinMul(), MoveTransposePastJoinAdd(),
        CollapseRepeatedTranspose(), RemoveIdentityTranspose(), RemoveIdentityReshape(),
    ]))


def _fingerprint(model: Any) -> tuple[str, ...]:
    return tuple(n.op_type for n in model.graph.node)


def absorb_scale_into_layernorm(model: Any) -> tuple[Any, bool]:
    """LayerNorm over the last axis is invariant to a positive scalar factor c up to its epsilon:
    LN(c x; eps) = LN(x; eps / c^2). A scalar Mul (a quantiser's scale) feeding a LayerNormalization
    is therefore removed and its factor folded into epsilon, so the LayerNorm reads the integer tensor
    (finn-plus's LayerNorm_hls takes an integer input). Returns (model, changed)."""
    import numpy as np
    from onnx import helper

    graph = model.graph
    for node in list(graph.node):
        if node.op_type != "LayerNormalization":
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        rank = len(model.get_tensor_shape(node.input[0]) or ())
        if axis not in (-1, rank - 1):
            continue
        mul = model.find_producer(node.input[0])
        if mul is None or mul.op_type != "Mul" or model.is_fork_node(mul):
            continue
        c = model.get_initializer(mul.input[1])
        if c is None or c.size != 1 or not float(c.reshape(-1)[0]) > 0:
            continue
        attr = next((a for a in node.attribute if a.name == "epsilon"), None)
        eps = attr.f if attr is not None else 1e-5
        scale = float(c.reshape(-1)[0])
        if attr is None:
            node.attribute.append(helper.make_attribute("epsilon", eps / scale ** 2))
        else:
            attr.f = float(np.float32(eps / scale ** 2))
        node.input[0] = mul.input[0]
        graph.node.remove(mul)
        return model, True
    return model, False


def _layernorms(model: Any) -> Any:
    """LayerNorm's scale and bias split off (finn-plus's ExtractNormScaleBias: they are absorbed into the
    next thresholds like any per-channel Mul/Add) and the input scale folded into epsilon."""
    from finn.transformation.streamline.extract_norm_scale_bias import ExtractNormScaleBias

    if not any(n.op_type == "LayerNormalization" for n in model.graph.node):
        return model
    model = model.transform(ExtractNormScaleBias())
    changed = True
    while changed:
        model, changed = absorb_scale_into_layernorm(model)
    return _tidy(model)


def step_transformer_streamline(model: Any, cfg: Any) -> Any:
    """Streamline a Brevitas transformer encoder (see the module docstring)."""
    from finn.transformation.streamline.streamline_plus import StreamlinePlus

    for _ in range(_ROUNDS):
        before = _fingerprint(model)
        model = _tidy(model.transform(StreamlinePlus()))
        model = _tidy(_transposes(_layernorms(model)))
        if _fingerprint(model) == before:
            break
    return model


def _reshape_shapes_1d(model: Any) -> Any:
    """finn-plus's Squeeze leaves rank-0 shapes/axes (ONNX and finn-plus's RemoveIdentityReshape want a
    1-d tensor) and Squeeze/Unsqueeze nodes with their axes given twice (input and attribute)."""
    import numpy as np

    for node in model.graph.node:
        if node.op_type in ("Reshape", "Squeeze", "Unsqueeze") and len(node.input) > 1:
            shape = model.get_initializer(node.input[1])
            if shape is not None and shape.ndim == 0:
                model.set_initializer(node.input[1], np.atleast_1d(shape).astype(np.int64))
            # it also writes the axes as an attribute, which opset >= 13 forbids next to the input
            for attr in [a for a in node.attribute if a.name == "axes"]:
                node.attribute.remove(attr)
    return model


def _keep_vector_batch(model: Any) -> Any:
    """After Squeeze, a Reshape that flattens the tokens for a classifier gives a bare vector, which an
    MVAU cannot take (it needs at least one input vector): give it back its batch axis of 1, and drop
    the Unsqueeze that Squeeze put at the output for it."""
    import numpy as np

    graph = model.graph
    fixed = None
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        shape = model.get_initializer(node.input[1])
        if shape is None or shape.ndim != 1 or len(shape) != 1:
            continue
        consumers = model.find_consumers(node.output[0]) or []
        if not any(c.op_type == "MatMul" for c in consumers):
            continue
        model.set_initializer(node.input[1], np.array([1, int(shape[0])], dtype=np.int64))
        fixed = node
        break
    if fixed is None:
        return model
    nodes = list(graph.node)
    after = {t for n in nodes[nodes.index(fixed):] for t in n.output}
    out = graph.output[0].name
    last = model.find_producer(out)
    if last is not None and last.op_type == "Unsqueeze":
        src = last.input[0]
        graph.node.remove(last)
        for n in graph.node:
            for i, t in enumerate(n.output):
                if t == src:
                    n.output[i] = out
            for i, t in enumerate(n.input):
                if t == src:
                    n.input[i] = out
    for vi in list(graph.value_info):  # shapes after the reshape change: re-inferred by the caller
        if vi.name in after:
            graph.value_info.remove(vi)
    return model


def one_head_per_unrolled_attention(model: Any) -> Any:
    """Give each attention operator fed by an unrolled (``packed=0``) ``SplitMultiHeads`` ``Heads=1``.

    finn-plus 1.6.1's ``UnrollMultiHeadAttention`` copies the multi-head attention node once per head and then
    sets ``Heads=1`` on its local copy *after* inserting it into the graph; protobuf's insert stores a copy, so
    the graph's per-head nodes keep the original head count and compute (and are estimated) as if each saw all
    heads (their python execution fails to reshape one head's tokens into ``heads`` of them).
    """
    from onnx import helper

    for node in model.graph.node:
        if node.op_type != "ScaledDotProductAttention":
            continue
        split = model.find_producer(node.input[0])
        if split is None or split.op_type != "SplitMultiHeads":
            continue
        if any(a.name == "packed" and a.i for a in split.attribute):
            continue  # still packed: this node computes every head
        for attr in [a for a in node.attribute if a.name == "Heads"]:
            node.attribute.remove(attr)
        node.attribute.append(helper.make_attribute("Heads", 1))
    return model


def _unmapped_attention(model: Any, transform: str, exc: BaseException) -> Exception:
    """The one-line error (exit 3) for an attention pattern finn-plus cannot convert, naming its node."""
    from hwkit.backends.finn.execute import dynamic_tensors
    from hwkit.errors import UnsupportedLayerError

    dynamic = dynamic_tensors(model)
    joins = [n for n in model.graph.node if n.op_type == "MatMul" and all(t in dynamic for t in n.input)]
    heads = next((model.get_tensor_shape(n.input[0])[0] for n in joins
                  if len(model.get_tensor_shape(n.input[0]) or ()) == 3), None)
    where = f"node '{joins[0].name}' (op MatMul, attention scores)" if joins else "the attention"
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "an assertion on the pattern"
    hint = (f"; the graph has {heads} attention heads: finn-plus's InferMultiHeads maps a head split that is a "
            "Reshape (tokens, 1, dim) -> (tokens, heads, dim/heads) then a Transpose (perm [1, 0, 2], the keys' "
            "[1, 2, 0]), with at most per-tensor quantisers between them"
            if heads and heads > 1 else "")
    return UnsupportedLayerError(f"{where}: finn-plus {transform} cannot map this scaled dot-product attention "
                                 f"({type(exc).__name__}: {detail}){hint}")


def attention_to_hw(model: Any) -> Any:
    """finn-plus's attention inference: head split/merge (``InferMultiHeads``), ``ScaledDotProductAttention``,
    heads unrolled (one attention operator per head), thresholds absorbed. An attention finn-plus rejects stops
    with :class:`~hwkit.errors.UnsupportedLayerError` naming its score MatMul."""
    from finn.transformation.fpgadataflow.attention import (
        AbsorbMultiThresholdIntoScaledDotProductAttention,
        InferScaledDotProductAttention,
    )
    from finn.transformation.fpgadataflow.attention_heads import (
        InferMultiHeads,
        MoveMergeMultiHeadsPastMultiThreshold,
        MoveSplitMultiHeadsPastMultiThreshold,
        UnrollMultiHeadAttention,
    )
    from finn.transformation.streamline.absorb import AbsorbAddIntoMultiThreshold

    for t in (InferMultiHeads(), MoveSplitMultiHeadsPastMultiThreshold(), AbsorbAddIntoMultiThreshold(),
              InferScaledDotProductAttention(), UnrollMultiHeadAttention(), MoveMergeMultiHeadsPastMultiThreshold(),
              AbsorbMultiThresholdIntoScaledDotProductAttention()):
        try:
            model = _tidy(model.transform(t))
        except Exception as exc:  # finn-plus asserts (or fails otherwise) on attention patterns it cannot map
            raise _unmapped_attention(model, type(t).__name__, exc) from exc
        if isinstance(t, UnrollMultiHeadAttention):
            model = one_head_per_unrolled_attention(model)
    return model


def step_transformer_convert_to_hw(model: Any, cfg: Any) -> Any:
    """Attention, heads, squeeze, then finn-plus's transformer HW conversion (see the module docstring)."""
    from finn.builder.custom_step_library.transformer_adhoc import step_convert_to_hw
    from finn.transformation.fpgadataflow.attention import AbsorbMultiThresholdIntoScaledDotProductAttention
    from finn.transformation.fpgadataflow.convert_to_hw.layer_norm import InferLayerNorm
    from finn.transformation.squeeze import Squeeze
    from finn.transformation.streamline.absorb import AbsorbAddIntoMultiThreshold
    from finn.transformation.streamline.streamline_plus import StreamlinePlus

    model = attention_to_hw(model)
    model = _tidy(_keep_vector_batch(_reshape_shapes_1d(model.transform(Squeeze()))))
    model = _tidy(_transposes(model))
    model = _tidy(model.transform(AbsorbAddIntoMultiThreshold()))
    model = _tidy(model.transform(AbsorbMultiThresholdIntoScaledDotProductAttention()))
    model = _tidy(model.transform(StreamlinePlus()))
    # Squeeze() leaves a Squeeze at the input and an Unsqueeze at the output: host side, as finn-plus does
    model = _tidy(model.transform(InferLayerNorm()))
    return step_convert_to_hw(model, cfg)


def step_transformer_set_folding(model: Any, cfg: Any) -> Any:
    """finn-plus's transformer folding (attention, then SetFolding) for the target fps; without a target
    (and without a folding config) every layer stays fully folded, finn-plus's default."""
    from finn.builder.custom_step_library.transformer_adhoc import step_set_folding
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    if cfg._resolve_cycles_per_frame() is None and cfg.folding_config_file is None:  # noqa: SLF001
        return model.transform(AnnotateCycles())
    return step_set_folding(model, cfg)


TRANSFORMER_STEPS = {
    "streamline": ("step_transformer_streamline", step_transformer_streamline),
    # named as finn-plus's step so the pass checks that nothing unmapped is left between HW layers
    "convert_to_hw": ("step_convert_to_hw", step_transformer_convert_to_hw),
    "set_folding": ("step_transformer_set_folding", step_transformer_set_folding),
}


def _factory(name: str) -> PassSpec | None:
    key = name.removeprefix("transformer.")
    found = TRANSFORMER_STEPS.get(key)
    if found is None:
        return None
    step, fn = found
    uses = ("clock_ns", "target_fps", "board") if key == "set_folding" else ("clock_ns", "board")
    run = _make_step_pass(step, fn)
    doc = (fn.__doc__ or "").strip().splitlines()[0]
    run.__doc__ = doc
    return PassSpec(name, run, uses, doc)


register_factory("transformer.", _factory)
