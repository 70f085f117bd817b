"""Hardware-aware training on synapse devices, deployment by programming conductances, analog inference.

* :func:`hardware_aware_train` trains any model whose weights live in ``nn.Linear`` layers (a
  three-layer perceptron or a deeper MLP): every step reads W from the conductance pairs (with read
  noise), back-propagates in float, and turns dW = -lr * grad into pulses with an
  :class:`~hwkit.compress.synapse.device.UpdateRule`. Biases (if any) are digital and updated in float.
  Mini-batch SGD (``batch_size``; 1 = per-sample hardware BP) with a fixed learning rate.
* :func:`to_analog` programs a trained float model onto devices (open loop or closed-loop write-verify,
  with write noise) and replaces
  each ``nn.Linear`` with :class:`AnalogLinear`: DAC-quantised inputs, crossbar tiles of ``rows``
  inputs, read noise, per-tile ADC quantisation of the partial sums, digital accumulation and bias.
* :func:`evaluate_instances` repeats that over N device instances (new d2d sample, new programming)
  and returns the mean and spread of accuracy.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hwkit.compress.synapse.device import DeviceModel, DifferentialArray, UpdateRule, WriteVerify


def build_mlp(sizes: Sequence[int], activation: str = "relu", bias: bool = True) -> Any:
    """A float MLP of nn.Linear layers, e.g. ``sizes=[64, 32, 10]`` (a three-layer perceptron).

    Usable as ``--arch hwkit.compress.synapse.train:build_mlp --arch-kwargs '{"sizes": [64, 32, 10]}'``.
    """
    from torch import nn

    acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    if activation not in acts:
        raise ValueError(f"activation must be one of {', '.join(acts)}, got {activation!r}")
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(acts[activation]())
    return nn.Sequential(*layers)


def linear_layers(model: Any) -> list[tuple[str, Any]]:
    """(qualified name, module) of every nn.Linear in ``model``, in definition order."""
    from torch import nn

    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def accuracy(model: Any, x: Any, y: Any) -> float:
    """Top-1 accuracy of ``model`` on (x, y)."""
    import torch

    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean().item())


# ---------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    """Hardware-aware training settings."""

    rule: UpdateRule = field(default_factory=UpdateRule)
    """How dW becomes pulses (rule 'software' trains the float weights: the reference)."""
    lr: float = 0.1
    """Fixed SGD learning rate."""
    epochs: int = 5
    """Passes over the training set."""
    batch_size: int = 8
    """Samples per update (1 = per-sample hardware BP)."""
    beta: float = 1.0
    """Weight of a full-range conductance difference: w in [-beta, beta]."""
    read_noise_in_training: bool = True
    """Read W with the device's read noise on every forward/backward."""
    seed: int = 0
    """Seed for d2d sampling, initialisation, shuffling and noise."""


@dataclass(frozen=True)
class TrainResult:
    """What a training run did."""

    test_accuracy_per_epoch: tuple[float, ...]
    """Test accuracy after each epoch (read without noise)."""
    final_test_accuracy: float
    """Last entry of the above."""
    samples_per_s: float
    """Training samples processed per second of wall time (updates included)."""
    pulses: int
    """Total programming pulses applied (training updates and refreshes)."""
    refreshes: int
    """Device pairs refreshed (unidirectional rule)."""
    seconds: float
    """Wall time of training."""


def hardware_aware_train(model: Any, dev: DeviceModel, x_train: Any, y_train: Any, x_test: Any, y_test: Any,
                         cfg: TrainConfig) -> tuple[Any, TrainResult]:
    """Train a copy of ``model`` with its nn.Linear weights on differential device pairs.

    Initialisation: the model's own initial weights, clipped to [-beta, beta], programmed open-loop (around
    mid range on both devices for the bidirectional rule; on one device from Gmin for unidirectional).
    Returns the trained model (weights = the final noiseless conductance read) and a :class:`TrainResult`.
    """
    import torch
    from torch import nn

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = copy.deepcopy(model).train()
    layers = linear_layers(net)
    software = cfg.rule.rule == "software"
    arrays: list[DifferentialArray] = []
    if not software:
        for _, lin in layers:
            arr = DifferentialArray(dev, tuple(lin.weight.shape), cfg.beta, gen)
            arr.program(lin.weight.detach().clamp(-cfg.beta, cfg.beta),
                        centred=cfg.rule.rule == "bidirectional")
            arrays.append(arr)

    def load_weights(noise: bool) -> None:
        with torch.no_grad():
            for (_, lin), arr in zip(layers, arrays):
                lin.weight.copy_(arr.weights(noise).to(lin.weight.dtype))

    n, accs = len(x_train), []
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        net.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            if not software:
                load_weights(cfg.read_noise_in_training)
            net.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x_train[idx]), y_train[idx]).backward()
            with torch.no_grad():
                for p in net.parameters():
                    if p.grad is None:
                        continue
                    if software or not any(p is lin.weight for _, lin in layers):
                        p.add_(p.grad, alpha=-cfg.lr)  # software reference / digital biases
                for (_, lin), arr in zip(layers, arrays):
                    arr.update(-cfg.lr * lin.weight.grad, cfg.rule)
        if not software:
            load_weights(False)
        net.eval()
        accs.append(accuracy(net, x_test, y_test))
    seconds = time.perf_counter() - t0
    result = TrainResult(tuple(accs), accs[-1], n * cfg.epochs / seconds,
                         sum(a.pulses for a in arrays), sum(a.refreshes for a in arrays), seconds)
    return net.eval(), result


# ------------------------------------------------------------------------------------ analog inference


@dataclass(frozen=True)
class CrossbarConfig:
    """Peripheral precision and array size of the analog target."""

    rows: int = 128
    """Inputs (word lines) per crossbar tile; a layer with more inputs is split into row tiles."""
    cols: int = 128
    """Physical columns per tile (a weight uses two: G+ and G-)."""
    adc_bits: int | None = 8
    """ADC resolution of each tile's column currents (None: ideal)."""
    dac_bits: int | None = 8
    """Input DAC resolution (None: ideal)."""


def _quant(x: Any, fs: float, bits: int | None, signed: bool) -> Any:
    import torch

    if bits is None or fs <= 0:
        return x
    levels = (2 ** (bits - 1) - 1) if signed else (2 ** bits - 1)
    lo = -fs if signed else 0.0
    return torch.round(x.clamp(lo, fs) / fs * levels) / levels * fs


class AnalogLinear(nn.Module):
    """nn.Linear on a crossbar: DAC -> row tiles (read noise) -> ADC per tile -> digital sum + bias."""

    def __init__(self, lin: Any, arr: DifferentialArray, xbar: CrossbarConfig, dac_fs: float, dac_signed: bool,
                 adc_fs: list[float], read_noise: bool, gen: Any, program_stats: dict[str, int]) -> None:
        super().__init__()
        self.arr, self.xbar, self.dac_fs, self.dac_signed = arr, xbar, dac_fs, dac_signed
        self.adc_fs, self.read_noise, self.gen = adc_fs, read_noise, gen
        self.bias = None if lin.bias is None else nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.program_stats = program_stats

    def forward(self, x: Any) -> Any:
        dev = self.arr.dev
        xq = _quant(x.to(torch.float64), self.dac_fs, self.xbar.dac_bits, self.dac_signed)
        gh = self.arr.conductance()
        out = torch.zeros(x.shape[0], self.out_features, dtype=torch.float64)
        for t, s in enumerate(range(0, self.in_features, self.xbar.rows)):
            sl = slice(s, s + self.xbar.rows)
            xt, gp, gm = xq[:, sl], gh[0][:, sl], gh[1][:, sl]
            y = xt @ (gp - gm).T
            if self.read_noise and dev.read_noise > 0:
                # sum_j x_j G_ij (1 + s xi_ij): the Gaussian sum has variance s^2 sum_j x_j^2 G_ij^2
                var = (xt ** 2) @ ((dev.gmin_norm + gp) ** 2 + (dev.gmin_norm + gm) ** 2).T
                y = y + dev.read_noise * var.sqrt() * torch.randn(y.shape, generator=self.gen,
                                                                  dtype=y.dtype)
            out = out + _quant(y, self.adc_fs[t], self.xbar.adc_bits, True)
        out = self.arr.beta * out
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.to(x.dtype)


def _layer_inputs(model: Any, x: Any) -> dict[str, Any]:
    from hwkit.compress.hooks import layer_inputs

    return layer_inputs(model, x, linear_layers(model))


def layer_betas(model: Any) -> dict[str, float]:
    """beta per nn.Linear for deployment: the layer's largest |w| (the full device range maps onto it)."""
    return {n: max(float(lin.weight.detach().abs().max()), 1e-12) for n, lin in linear_layers(model)}


def to_analog(model: Any, dev: DeviceModel, xbar: CrossbarConfig, calib_x: Any, seed: int = 0,
              program: str = "open-loop", read_noise: bool = True, verify: WriteVerify | None = None) -> Any:
    """A copy of the float ``model`` with every nn.Linear programmed onto a fresh device instance.

    ``program``: open-loop | write-verify (closed loop with ``verify``) | exact (see
    :meth:`DifferentialArray.program`); each analog layer keeps its programming counts in ``program_stats``.
    DAC and ADC full scales are calibrated on ``calib_x`` with the float model (largest |input| per layer,
    largest |partial sum| per row tile), as a designer would fix them once per chip.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    net = copy.deepcopy(model).eval()
    inputs = _layer_inputs(net, calib_x)
    betas = layer_betas(net)
    for name, lin in linear_layers(net):
        x = inputs[name].to(torch.float64)
        signed = bool((x < 0).any())
        dac_fs = float(x.abs().max()) or 1.0
        xq = _quant(x, dac_fs, xbar.dac_bits, signed)
        wn = lin.weight.detach().to(torch.float64) / betas[name]
        adc_fs = []
        for s in range(0, lin.in_features, xbar.rows):
            y = xq[:, s:s + xbar.rows] @ wn[:, s:s + xbar.rows].T
            adc_fs.append(float(y.abs().max()) or 1.0)
        arr = DifferentialArray(dev, tuple(lin.weight.shape), betas[name], gen)
        stats = arr.program(lin.weight.detach(), program, verify=verify)
        new = AnalogLinear(lin, arr, xbar, dac_fs, signed, adc_fs, read_noise, gen, stats)
        parent = net
        *path, last = name.split(".")
        for p in path:
            parent = getattr(parent, p)
        setattr(parent, last, new)
    return net


def analog_arrays(net: Any) -> list[tuple[str, DifferentialArray, Any]]:
    """(name, array, analog layer) of every AnalogLinear in a model made by :func:`to_analog`."""
    return [(n, m.arr, m) for n, m in net.named_modules() if isinstance(m, AnalogLinear)]


def programming_stats(net: Any) -> dict[str, int]:
    """Programming counts of a model made by :func:`to_analog`, summed over its layers."""
    total: dict[str, int] = {}
    for _, _, layer in analog_arrays(net):
        for k, v in layer.program_stats.items():
            total[k] = total.get(k, 0) + int(v)
    total["pairs"] = sum(arr.g[0].numel() for _, arr, _ in analog_arrays(net))
    return total


def evaluate_instances(model: Any, dev: DeviceModel, xbar: CrossbarConfig, x: Any, y: Any, n_instances: int,
                       calib_x: Any | None = None, seed: int = 0, program: str = "open-loop",
                       verify: WriteVerify | None = None) -> dict[str, Any]:
    """Accuracy of ``model`` deployed on ``n_instances`` independent device instances.

    ``program`` / ``verify`` as in :func:`to_analog`. Also returns the mean programming counts per instance
    (``programming``: pulses, verify pulses, reads, pairs left outside the tolerance) and the rms weight
    error after programming in units of each layer's beta (noiseless read).
    """
    import statistics

    accs, counts, errs = [], [], []
    for k in range(n_instances):
        net = to_analog(model, dev, xbar, x if calib_x is None else calib_x, seed=seed + k, program=program,
                        verify=verify)
        accs.append(accuracy(net, x, y))
        counts.append(programming_stats(net))
        sq = n = 0.0
        for (_, lin), (_, arr, _) in zip(linear_layers(model), analog_arrays(net)):
            d = (arr.weights() - lin.weight.detach().to(arr.g.dtype)) / arr.beta
            sq, n = sq + float(d.pow(2).sum()), n + d.numel()
        errs.append(math.sqrt(sq / n))
    prog = {key: statistics.fmean(c[key] for c in counts) for key in counts[0]}
    return {"accuracies": accs, "mean": statistics.fmean(accs),
            "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0, "min": min(accs), "max": max(accs),
            "instances": n_instances, "program": program, "programming": prog,
            "weight_rms_error": statistics.fmean(errs)}


def digits_split(seed: int = 0, scale: bool = True) -> tuple[Any, Any, Any, Any]:
    """scikit-learn digits as float tensors: 75/25 stratified split (the bundled example's split).

    ``scale``: pixels 0..16 divided by 16 (inputs in [0, 1]).
    """
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    if scale:
        x = x / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(x_tr), torch.tensor(y_tr), f(x_te), torch.tensor(y_te)


SKLEARN_TABULAR = ("iris", "wine", "breast_cancer")
"""Real tabular data sets bundled with scikit-learn (no download) that :func:`tabular_split` loads."""


def tabular_split(name: str, seed: int = 0, test_size: float = 0.2, clip: float = 3.0) -> tuple[Any, Any, Any, Any]:
    """A scikit-learn bundled tabular data set (iris, wine, breast_cancer) as float tensors, inputs in [0, 1].

    Stratified split (``test_size``, ``random_state=seed``). Each feature is standardised with the *training*
    split's mean and std, clipped to +-``clip`` std and mapped linearly onto [0, 1] (z = -clip -> 0, 0 -> 0.5,
    +clip -> 1): the same non-negative input range as :func:`digits_split`'s pixels / 16.
    """
    import numpy as np
    import torch
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if name not in SKLEARN_TABULAR:
        raise ValueError(f"data set must be one of {', '.join(SKLEARN_TABULAR)}, got {name!r}")
    if clip <= 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    mu, sd = x_tr.mean(0), x_tr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    scale = lambda a: np.clip(((a - mu) / sd + clip) / (2 * clip), 0.0, 1.0)  # noqa: E731
    f = lambda a: torch.tensor(scale(a), dtype=torch.float32)  # noqa: E731
    return f(x_tr), torch.tensor(y_tr), f(x_te), torch.tensor(y_te)


def train_float(model: Any, x: Any, y: Any, epochs: int = 30, lr: float = 0.1, batch_size: int = 8,
                seed: int = 0) -> Any:
    """Plain SGD in float (the software reference used by benchmarks and tests)."""
    cfg = TrainConfig(rule=UpdateRule(rule="software"), lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
    net, _ = hardware_aware_train(model, DeviceModel("software"), x, y, x[:1], y[:1], cfg)
    return net


def crossbar_tiles(in_features: int, out_features: int, xbar: CrossbarConfig) -> tuple[int, int]:
    """(row tiles, column tiles) a layer needs; a weight column takes two physical columns."""
    return math.ceil(in_features / xbar.rows), math.ceil(2 * out_features / xbar.cols)
