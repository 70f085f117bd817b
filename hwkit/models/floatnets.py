"""Float (unquantised) architectures a user might bring: an MLP, a small CNN and a residual CNN.

They are what ``hwkit quantize`` starts from in the tests and benchmarks (benchmarks/quantize_models.py)
and can be saved as hwkit checkpoints (``arch`` ``mlp`` / ``cnn`` / ``rescnn``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn


def build_mlp(in_features: int, hidden: Sequence[int], out_features: int, softmax: bool = False,
              batchnorm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> (BatchNorm1d) -> ReLU blocks, a Linear head, optionally a Softmax."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    if softmax:
        layers.append(nn.Softmax(dim=-1))
    return nn.Sequential(*layers)


def build_cnn(in_channels: int = 1, channels: Sequence[int] = (16, 32), image: int = 8, hidden: int = 64,
              out_features: int = 10) -> nn.Sequential:
    """3x3 conv (no padding) -> BatchNorm2d -> ReLU per entry of ``channels``, max-pool, then an MLP head."""
    layers: list[nn.Module] = []
    c, side = in_channels, image
    for i, ch in enumerate(channels):
        layers += [nn.Conv2d(c, ch, 3, bias=False), nn.BatchNorm2d(ch), nn.ReLU()]
        c, side = ch, side - 2
        if i == len(channels) - 1 and side % 2 == 0 and side >= 2:
            layers.append(nn.MaxPool2d(2))
            side //= 2
    layers += [nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ReLU(), nn.Linear(hidden, out_features)]
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU (padding keeps the shape)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()

    def forward(self, x: Any) -> Any:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + x)


class ResCNN(nn.Module):
    """A stem conv, ``blocks`` residual blocks with BatchNorm and skip connections, a pooled Linear head."""

    def __init__(self, in_channels: int = 1, channels: int = 16, blocks: int = 2, image: int = 8,
                 out_features: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(channels * (image // 2) ** 2, out_features)

    def forward(self, x: Any) -> Any:
        return self.head(self.flatten(self.pool(self.blocks(self.stem(x)))))


def build_rescnn(in_channels: int = 1, channels: int = 16, blocks: int = 2, image: int = 8,
                 out_features: int = 10) -> ResCNN:
    """The residual CNN (see :class:`ResCNN`)."""
    return ResCNN(in_channels, channels, blocks, image, out_features)
