"""Architectures the fuzz corpus names with ``--arch tests.fuzz.archs:NAME`` (module-level classes)."""

from __future__ import annotations

import torch
from torch import nn


class LstmNet(nn.Module):
    """A recurrent classifier: finn-plus has no FPGA layer for its LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class TinyMlp(nn.Module):
    """A float 16-8-4 MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def lstm_net() -> nn.Module:
    """Builder for ``--arch tests.fuzz.archs:lstm_net``."""
    return LstmNet()


def tiny_mlp() -> nn.Module:
    """Builder for ``--arch tests.fuzz.archs:tiny_mlp``."""
    return TinyMlp()
