"""Brevitas's BNN-PYNQ models (the ones FINN's own end-to-end tests build) and a miniature CNV, ready to compile.

The BNN-PYNQ models come unmodified from ``brevitas_examples.bnn_pynq.models``; only their state is
set here: BatchNorm statistics from a few training-mode forward passes on random UINT8 inputs (what
the golden batch draws from), and random BatchNorm affine parameters so that no activation sits
exactly on a quantisation threshold (random init with bias 0 puts many there, and a tie rounds
differently in Brevitas and in FINN's thresholds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from brevitas.core.restrict_val import RestrictValueType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
from torch import nn

SMALL = ("tfc_1w1a", "tfc_2w2a", "sfc_1w2a", "lfc_1w1a")
CNV = ("cnv_1w1a", "cnv_2w2a")


def input_shape(name: str) -> tuple[int, ...]:
    """Input shape with batch 1 of a BNN-PYNQ model (MNIST 1x28x28, CIFAR-10 3x32x32)."""
    return (1, 3, 32, 32) if name.startswith(("cnv", "resnet")) else (1, 1, 28, 28)


def bnn_pynq(name: str) -> nn.Module:
    """The named BNN-PYNQ model from brevitas_examples, untrained (``pretrained=False``)."""
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    model, _ = model_with_cfg(name, pretrained=False)
    return model


class MiniCNV(nn.Module):
    """CNV in miniature (Brevitas layers as in brevitas_examples' CNV): 8-bit input quantiser, two
    3x3 binary convolutions with BatchNorm, a max-pool, ``x.view(x.shape[0], -1)``, a binary linear
    layer and a TensorNorm, on 3x8x8 inputs."""

    def __init__(self, weight_bits: int = 1, act_bits: int = 1) -> None:
        super().__init__()
        self.inp = QuantIdentity(act_quant=CommonActQuant, bit_width=8, min_val=-1.0, max_val=1.0 - 2.0 ** (-7),
                                 narrow_range=False, restrict_scaling_type=RestrictValueType.POWER_OF_TWO)
        self.features = nn.ModuleList()
        ch = 3
        for out_ch, pool in ((8, False), (8, True)):
            self.features.append(QuantConv2d(ch, out_ch, 3, bias=False, weight_quant=CommonWeightQuant,
                                             weight_bit_width=weight_bits))
            self.features.append(nn.BatchNorm2d(out_ch, eps=1e-4))
            self.features.append(QuantIdentity(act_quant=CommonActQuant, bit_width=act_bits))
            if pool:
                self.features.append(nn.MaxPool2d(2))
            ch = out_ch
        self.fc = QuantLinear(8 * 2 * 2, 10, bias=False, weight_quant=CommonWeightQuant, weight_bit_width=weight_bits)
        self.norm = TensorNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(2.0 * x - 1.0)
        for m in self.features:
            x = m(x)
        x = x.view(x.shape[0], -1)
        return self.norm(self.fc(x))


def mini_cnv(weight_bits: int = 1, act_bits: int = 1) -> nn.Module:
    """A :class:`MiniCNV` (the ``--arch`` entry point)."""
    return MiniCNV(weight_bits, act_bits)


def calibrate(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Random BatchNorm affine parameters, then statistics from training-mode passes on UINT8 inputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.momentum = None  # cumulative average over the passes
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
        model.train()
        for _ in range(4):
            model(torch.randint(0, 256, (32, *shape[1:]), generator=gen).float())
    return model.eval()


def save_state(model: nn.Module, path: Path) -> Path:
    """The model's state dict, as a plain weights file for ``--arch``."""
    torch.save(model.state_dict(), path)
    return path


def compile_args(name: str) -> dict[str, Any]:
    """compile_model settings for a BNN-PYNQ model saved with :func:`save_state`."""
    return {"arch": f"brevitas_examples.bnn_pynq.models:{name}", "arch_kwargs": (("pretrained", False),),
            "input_shape": input_shape(name), "input_dtype": "UINT8"}

