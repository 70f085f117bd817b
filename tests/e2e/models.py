"""Architectures for tests that go through ``--arch module:function``."""

from __future__ import annotations

import torch


def sigmoid_mlp() -> torch.nn.Sequential:
    """A quantised MLP with a float Sigmoid in the middle: FINN has no HW layer for it."""
    import brevitas.nn as qnn

    return torch.nn.Sequential(qnn.QuantLinear(16, 8, bias=True, weight_bit_width=2), torch.nn.Sigmoid(),
                               qnn.QuantLinear(8, 4, bias=True, weight_bit_width=2))
