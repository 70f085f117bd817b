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


def gelu_mlp() -> torch.nn.Sequential:
    """A float MLP with a GELU in the middle: FINN has no layer for it, so quantising must refuse."""
    return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))


def float_mlp16() -> torch.nn.Sequential:
    """A small float MLP (16-12-4) for state-dict + --arch inputs."""
    return torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))


def random_loader():
    """A DataLoader-like iterable of (x, y) batches, for ``--calib tests.e2e.models:random_loader``."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(4)]



def float_first_layer() -> torch.nn.Sequential:
    """A float Linear (no bias) in front of a quantised body (4-level activations, a 2-bit Linear): FINN maps the
    body and leaves the first layer's MatMul on the host. (A float layer at the end would be followed by the
    body's output scale Mul, which finn-plus turns into a HW layer, so it would sit between hardware layers.)"""
    import brevitas.nn as qnn

    return torch.nn.Sequential(torch.nn.Linear(16, 12, bias=False), qnn.QuantReLU(bit_width=2),
                               qnn.QuantLinear(12, 4, bias=False, weight_bit_width=2))


def quant_cnn_1d() -> torch.nn.Sequential:
    """A 1-D Brevitas CNN (4 channels x 16 samples: Conv1d, BatchNorm, ReLU, MaxPool1d, Conv1d, Linear), the shape
    of signal and CAN-sequence models."""
    import brevitas.nn as qnn

    return torch.nn.Sequential(qnn.QuantIdentity(bit_width=8, return_quant_tensor=True),
                               qnn.QuantConv1d(4, 8, 3, weight_bit_width=4, bias=False), torch.nn.BatchNorm1d(8),
                               qnn.QuantReLU(bit_width=4, return_quant_tensor=True), torch.nn.MaxPool1d(2),
                               qnn.QuantConv1d(8, 8, 3, weight_bit_width=4, bias=False), torch.nn.BatchNorm1d(8),
                               qnn.QuantReLU(bit_width=4, return_quant_tensor=True), torch.nn.Flatten(),
                               qnn.QuantLinear(8 * 5, 4, weight_bit_width=4, bias=True))


def trained_encoder_build(d, kw: dict, epochs: int, name: str = "enc") -> tuple:
    """hwkit's ``encoder`` with ``kw`` trained on digits tokens (one thread), saved with 8 test samples as its golden
    inputs, and compiled for zcu104 with the finn-transformer flow at 100k fps: (test accuracy, report, build dir)."""
    from hwkit.api import compile_model
    from hwkit.models.encoder import accuracy, build_encoder, checkpoint, digits_tokens, train_encoder

    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits_tokens()
    model = train_encoder(build_encoder(**kw), xtr, ytr, epochs=epochs)
    acc = accuracy(model, xte, yte)
    path = d / f"{name}.pt"
    torch.save(checkpoint(model, kw, xte[:8], {"test_accuracy": acc}), path)
    report = compile_model(path, "zcu104", d / "build", flow="finn-transformer", target_fps=100000).to_json()
    return acc, report, d / "build"


def avgpool_cnn() -> torch.nn.Sequential:
    """A float CNN on 1x8x8 digits ending in global average pooling (ResNet/MobileNet style): Conv (no padding)
    -> BN -> ReLU -> Conv -> BN -> ReLU -> AdaptiveAvgPool2d(1) over a 6x6 map (a window of 36, not a power of
    two) -> Flatten -> Linear."""
    return torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))


def round_trunc_pool_cnn() -> torch.nn.Sequential:
    """A Brevitas CNN whose average pool rounds (TruncAvgPool2d ROUND): finn-plus converts only FLOOR."""
    import brevitas.nn as qnn

    return torch.nn.Sequential(qnn.QuantIdentity(bit_width=8, return_quant_tensor=True),
                               qnn.QuantConv2d(1, 4, 3, padding=1, weight_bit_width=4, bias=False),
                               qnn.QuantReLU(bit_width=4, return_quant_tensor=True),
                               qnn.TruncAvgPool2d(kernel_size=8, stride=1, bit_width=4,
                                                  float_to_int_impl_type="ROUND"),
                               torch.nn.Flatten(), qnn.QuantLinear(4, 10, weight_bit_width=4, bias=True))
