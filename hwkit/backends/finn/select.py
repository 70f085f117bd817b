"""Which FPGA flow a graph needs, when the user gave no ``--flow``: one small, data-driven table.

``compile`` without ``--flow`` runs the board's default flow's first pass (the QONNX export), looks at
the exported graph here and, when a rule matches, runs the rule's flow instead (the export is reused
from its checkpoint). The choice and its reason go to the console and the report; ``--flow`` always
wins. To teach hwkit a new topology, add a detector to :data:`FEATURES` and a :class:`Rule` to
:data:`RULES` (first matching rule wins).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _residual_adds(model: Any) -> list[str]:
    """``Add`` nodes of two tensors both computed from the input (a residual join, not a bias)."""
    from hwkit.backends.finn.execute import dynamic_tensors

    dynamic = dynamic_tensors(model)
    return [n.name or n.output[0] for n in model.graph.node
            if n.op_type == "Add" and len(n.input) == 2 and all(t in dynamic for t in n.input)]


def _depthwise_convs(model: Any) -> list[str]:
    """``Conv`` nodes with ``group`` > 1 (depthwise or grouped convolutions)."""
    return [n.name or n.output[0] for n in model.graph.node
            if n.op_type == "Conv" and next((a.i for a in n.attribute if a.name == "group"), 1) > 1]


def _attention(model: Any) -> list[str]:
    """``MatMul`` nodes of two computed tensors (attention scores or weighted values) in a graph with a Softmax."""
    from hwkit.backends.finn.execute import dynamic_tensors

    if not any(n.op_type == "Softmax" for n in model.graph.node):
        return []
    dynamic = dynamic_tensors(model)
    return [n.name or n.output[0] for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) == 2 and all(t in dynamic for t in n.input)]


FEATURES: dict[str, tuple[Callable[[Any], list[str]], str]] = {
    "attention": (_attention, "scaled dot-product attention"),
    "residual": (_residual_adds, "residual adds"),
    "depthwise": (_depthwise_convs, "depthwise convolutions"),
}
"""Graph feature -> (detector returning the nodes that have it, words for the console)."""


@dataclass(frozen=True)
class Rule:
    """Run ``flow`` instead of a default flow in ``replaces`` when the graph has any of ``features``."""

    flow: str
    """The flow to run."""
    replaces: tuple[str, ...]
    """Default flows this rule may replace."""
    features: tuple[str, ...]
    """Keys of :data:`FEATURES`; any one triggers the rule."""
    why: str
    """Why the default flow does not do for such a graph (completes "... : <why>")."""


RULES: tuple[Rule, ...] = (
    Rule("finn-transformer", ("finn-estimate",), ("attention",),
         "finn-plus's default steps have no attention layer; finn-transformer streamlines the encoder and maps it "
         "to finn-plus's ScaledDotProductAttention, ElementwiseAdd and ReplicateStream layers"),
    Rule("finn-recipes", ("finn-estimate",), ("residual", "depthwise"),
         "finn-plus's default streamlining leaves such convolutions with float inputs, which it cannot map to "
         "HW layers; finn-recipes adds the reordering FINN's own example builds use"),
)


@dataclass(frozen=True)
class FlowChoice:
    """A flow picked from the graph, and why."""

    flow: str
    """The flow to run."""
    default: str
    """The flow it replaces."""
    found: dict[str, list[str]]
    """Feature -> nodes that have it."""
    reason: str
    """One line for the console and the report."""


def graph_features(model: Any) -> dict[str, list[str]]:
    """Feature -> nodes that have it, for every feature of :data:`FEATURES` present in ``model``."""
    found = {}
    for key, (detect, _) in FEATURES.items():
        nodes = detect(model)
        if nodes:
            found[key] = nodes
    return found


def _names(nodes: list[str], most: int = 3) -> str:
    shown = ", ".join(nodes[:most])
    return f"{shown}, ... ({len(nodes)} in all)" if len(nodes) > most else shown


def choose_flow(model_path: Path, default: str) -> FlowChoice | None:
    """The flow the graph at ``model_path`` needs instead of ``default``, or None when ``default`` does."""
    rules = [r for r in RULES if default in r.replaces]
    if not rules:
        return None
    from qonnx.core.modelwrapper import ModelWrapper

    found = graph_features(ModelWrapper(str(model_path)))
    for rule in rules:
        hits = {k: found[k] for k in rule.features if k in found}
        if hits:
            what = "; ".join(f"{FEATURES[k][1]} ({_names(v)})" for k, v in hits.items())
            reason = (f"flow {rule.flow} chosen from the graph instead of {default}: it has {what}; {rule.why} "
                      f"(--flow {default} runs the default anyway)")
            return FlowChoice(rule.flow, default, hits, reason)
    return None
