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



class MiniResNet(nn.Module):
    """resnet18_4w4a in miniature, from brevitas_examples' own QuantBasicBlock: a 3x3 stem (16 channels,
    shared QuantReLU), an identity block, a downsampling block (32 channels, stride 2), the 8-bit
    truncating average pool and a QuantLinear head; 4-bit weights and activations, 3x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        import brevitas.nn as qnn
        from brevitas.quant import Int8WeightPerChannelFloat, Int32Bias, TruncTo8bit
        from brevitas_examples.bnn_pynq.models.resnet import QuantBasicBlock, make_quant_conv2d

        self.conv1 = make_quant_conv2d(3, 16, 3, 8, Int8WeightPerChannelFloat, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = qnn.QuantReLU(bit_width=4, return_quant_tensor=True)
        self.block1 = QuantBasicBlock(16, 16, 1, shared_quant_act=self.relu, act_bit_width=4, weight_bit_width=4)
        self.block2 = QuantBasicBlock(16, 32, 2, shared_quant_act=self.block1.relu_out, act_bit_width=4,
                                      weight_bit_width=4)
        self.pool = qnn.TruncAvgPool2d(kernel_size=4, trunc_quant=TruncTo8bit, float_to_int_impl_type="FLOOR")
        self.linear = qnn.QuantLinear(32, 10, bias=True, weight_bit_width=8, bias_quant=Int32Bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.block2(self.block1(out)))
        return self.linear(out.view(out.size(0), -1))


def mini_resnet() -> nn.Module:
    """A :class:`MiniResNet` (the ``--arch`` entry point)."""
    return MiniResNet()


class MiniDepthwise(nn.Module):
    """A depthwise-separable block as in brevitas_examples' MobileNet v1 (DwsConvBlock): a 3x3 stem,
    then a 3x3 depthwise QuantConv2d (groups = channels) and a 1x1 pointwise QuantConv2d, each with
    BatchNorm and a 4-bit QuantReLU; average pool and a QuantLinear head; 3x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        from brevitas.nn import QuantReLU

        self.inp = QuantIdentity(bit_width=8, return_quant_tensor=True)
        self.stem = QuantConv2d(3, 16, 3, padding=1, bias=False, weight_bit_width=4)
        self.bn0 = nn.BatchNorm2d(16)
        self.act0 = QuantReLU(bit_width=4, return_quant_tensor=True)
        self.dw = QuantConv2d(16, 16, 3, padding=1, groups=16, bias=False, weight_bit_width=4)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = QuantReLU(bit_width=4, return_quant_tensor=True)
        self.pw = QuantConv2d(16, 32, 1, bias=False, weight_bit_width=4)
        self.bn2 = nn.BatchNorm2d(32)
        self.act2 = QuantReLU(bit_width=4, return_quant_tensor=True)
        self.pool = nn.MaxPool2d(8)
        self.fc = QuantLinear(32, 10, bias=False, weight_bit_width=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.bn0(self.stem(self.inp(x))))
        x = self.act1(self.bn1(self.dw(x)))
        x = self.pool(self.act2(self.bn2(self.pw(x))))
        return self.fc(x.view(x.shape[0], -1))


def mini_depthwise() -> nn.Module:
    """A :class:`MiniDepthwise` (the ``--arch`` entry point)."""
    return MiniDepthwise()
