"""Architectures for tests that go through ``--arch module:function``."""

from __future__ import annotations

import torch


def sigmoid_mlp() -> torch.nn.Sequential:
    """A quantised MLP with a float Sigmoid in the middle: FINN has no HW layer for it."""
    import brevitas.nn as qnn

    return torch.nn.Sequential(qnn.QuantLinear(16, 8, bias=True, weight_bit_width=2), torch.nn.Sigmoid(),
                               qnn.QuantLinear(8, 4, bias=True, weight_bit_width=2))


def train_on_digits(build, epochs: int, **kw):
    """``build()`` trained on the digits training split (seed 0) on one thread, as the e2e fixtures train models.

    The model is built after seeding, so its initialisation is reproducible.
    """
    from hwkit.compress.amp.toy import digits_splits, train_classifier

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = digits_splits(0)
        torch.manual_seed(0)
        return train_classifier(build(), *d["train"], epochs=epochs, **kw)
    finally:
        torch.set_num_threads(threads)


def is_pow2(w: torch.Tensor, pmin: int, pmax: int | None = None) -> bool:
    """Every non-zero entry of ``w`` is +-2^p with an integer p in [pmin, pmax] (no upper bound when pmax is None)."""
    p = torch.log2(w[w != 0].abs())
    ok = torch.all(p == torch.round(p)) and torch.all(p >= pmin)
    return bool(ok and (pmax is None or torch.all(p <= pmax)))
