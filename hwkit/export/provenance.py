"""Provenance: which PyTorch layer an ONNX node came from, kept through FINN's transformations.

Neutral ground for the exporters and the backends (the FINN backend names layers in its errors).
"""

from __future__ import annotations

import ast
from typing import Any

TORCH_TAG = "hwkit.torch_node="
"""Prefix of the node doc_string that records its PyTorch layer."""


def _torch_layer(node: Any) -> str | None:
    """'path (Class)' of the user-facing PyTorch module an exported node came from, if recorded."""
    props = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(props["pkg.torch.onnx.name_scopes"])
        classes = ast.literal_eval(props["pkg.torch.onnx.class_hierarchy"])
    except (KeyError, ValueError, SyntaxError):
        return None
    best = None
    for scope, cls in zip(scopes, classes):
        if scope and cls.startswith(("torch.nn.", "brevitas.nn.")):
            best = f"{scope} ({cls.rsplit('.', 1)[-1]})"
    return best


def tag_torch_names(model: Any) -> None:
    """Keep each node's PyTorch layer in its doc_string (see :func:`torch_layer_of`)."""
    # The torch exporter records each node's module path in metadata_props; FINN drops those and
    # renames nodes, so keep the layer in doc_string, which survives on nodes FINN leaves alone.
    for node in model.graph.node:
        layer = _torch_layer(node)
        if layer and not node.doc_string.startswith(TORCH_TAG):
            node.doc_string = TORCH_TAG + layer


def torch_layer_of(node: Any) -> str | None:
    """The PyTorch layer ('path (Class)') an ONNX node came from, when export recorded it."""
    if node.doc_string.startswith(TORCH_TAG):
        return str(node.doc_string[len(TORCH_TAG):])
    return None


def weight_layers(model: Any) -> list[str | None]:
    """PyTorch layers of the weight-carrying nodes (Gemm/MatMul/Conv), in graph order."""
    return [torch_layer_of(n) for n in model.graph.node if n.op_type in ("Gemm", "MatMul", "Conv")]
