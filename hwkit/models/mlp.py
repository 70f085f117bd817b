"""Quantised MLPs in Brevitas: Linear -> BatchNorm1d -> QuantReLU blocks, then a Linear head.

This is the shape of the CQMLP family (40-256-128-64-32-4 at 2 bits) and of the bundled example.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def build_qmlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    weight_bits: int = 2,
    act_bits: int = 2,
    bias: bool = True,
    batchnorm: bool = True,
    dropout: float = 0.0,
) -> nn.Sequential:
    """A Brevitas MLP whose inputs are integers (FINN input type UINT8/INT8, no input quantiser)."""
    import brevitas.nn as qnn

    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(qnn.QuantLinear(width, h, bias=bias, weight_bit_width=weight_bits))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(qnn.QuantReLU(bit_width=act_bits))
        width = h
    layers.append(qnn.QuantLinear(width, out_features, bias=bias, weight_bit_width=weight_bits))
    return nn.Sequential(*layers)
