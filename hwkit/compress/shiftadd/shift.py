"""DeepShift shift layers for ``nn.Linear`` and ``nn.Conv2d``: weights ``s * 2**p`` (Q, PS), see docs/shiftadd.md.

Follows DeepShift (Elhoushi et al., CVPRW 2021; github.com/mostafaelhoushi/DeepShift, ``modules.py`` and
``modules_q.py``) as summarised in the shared reference:

* **Q mode** keeps a float weight ``W``; every forward pass clamps ``|W|`` into ``[2**pmin, 1]`` (in place on
  ``.data``, as DeepShift's ``clampabs``; exact zeros stay 0) and uses ``sign(W) * 2**round(log2|W|)`` with a
  straight-through gradient. ``pmin = -(2**(b-1) - 1)``.
* **PS mode** trains the shift ``P`` and sign ``S`` directly: ``W = 2**round(clamp(P, pmin, 0)) * sign(round(S))``
  (ternary sign: 0 when ``|S| < 0.5``), ``pmin = -(2**(b-1) - 2)`` (one code is the zero state). Gradients are
  straight-through for round/sign; ``dL/dS = dL/dW`` is *not* scaled by ``2**P`` (DeepShift's
  ``unsym_grad_mul``) and ``dL/dP = dL/dW * s * 2**P * ln 2``.

Rounding is in the log domain (switch at ``|w| = 2**(p+1/2)``), deterministic. There is no per-layer scale
(|w| <= 1; larger weights saturate), as in DeepShift. DeepShift's fixed-point rounding of activations and bias
(16.16 bits by default, a no-op in practice) is not applied: [VERIFY] choice — float activations, so the torch
model, the ONNX export and the dense reference agree exactly.

``ShiftLinear`` and ``ShiftConv2d`` share this weight machinery (``ShiftBase``); the conv layer runs
``F.conv2d`` with the original stride/padding/dilation/groups/bias (zero padding only; DeepShift's
``Conv2dShift``), with one ``s * 2**p`` per weight (no per-channel scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwkit.errors import InputError, UnsupportedLayerError

MODES = ("q", "ps")


@dataclass(frozen=True)
class ShiftConfig:
    """How weights become shifts."""

    mode: str = "ps"
    """``q`` (quantise a float weight) or ``ps`` (train shift and sign)."""
    weight_bits: int = 5
    """Bits per weight: 1 sign bit + (b-1) shift bits (DeepShift default 5)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"shift mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if not 2 <= self.weight_bits <= 8:
            raise InputError(f"shift weight_bits must be in 2..8, got {self.weight_bits}")
        if self.mode == "ps" and self.weight_bits < 3:
            raise InputError("ps mode needs weight_bits >= 3 (one shift code is the zero state)")

    @property
    def pmin(self) -> int:
        """The smallest shift exponent (the largest is 0)."""
        return -(2 ** (self.weight_bits - 1) - (2 if self.mode == "ps" else 1))


def round_pow2(w: Any, pmin: int) -> Any:
    """``sign(w) * 2**clamp(round(log2|w|), pmin, 0)``; exact zeros stay 0 (log-domain rounding, no gradient)."""
    import torch

    mag = w.abs().clamp(min=2.0 ** pmin, max=1.0)
    p = torch.round(torch.log2(mag)).clamp(pmin, 0)
    return torch.sign(w) * torch.pow(2.0, p)


class UnsymGradMul(torch.autograd.Function):
    """a * b with dL/da = g*b and dL/db = g (DeepShift ``ste.unsym_grad_mul``)."""

    @staticmethod
    def forward(ctx: Any, a: Any, b: Any) -> Any:
        ctx.save_for_backward(b)
        return a * b

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:
        (b,) = ctx.saved_tensors
        return g * b, g

class Ste(torch.autograd.Function):
    """Returns ``q`` (exactly) with the gradient passed straight to ``x``."""

    @staticmethod
    def forward(ctx: Any, x: Any, q: Any) -> Any:
        return q.clone()

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:
        return g, None




def make_shift_linear(in_features: int, out_features: int, bias: bool, cfg: ShiftConfig) -> Any:
    """A :class:`ShiftLinear`."""
    return ShiftLinear(in_features, out_features, bias, cfg)


def make_shift_conv2d(in_channels: int, out_channels: int, kernel_size: Any, cfg: ShiftConfig, stride: Any = 1,
                      padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True) -> Any:
    """A :class:`ShiftConv2d` (the arguments of ``nn.Conv2d``; zero padding only)."""
    return ShiftConv2d(in_channels, out_channels, kernel_size, cfg, stride, padding, dilation, groups, bias)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, tuple | list) else (int(v), int(v))


class ShiftBase(nn.Module):
    """The Q/PS weight machinery shared by the shift layers: a weight of any shape that is ``s * 2**p``.

    Subclasses set their own attributes, call :meth:`_init_shift` with the dense weight shape and implement
    ``forward`` (with :meth:`quantised_weight`) and ``to_dense`` (the plain torch layer of the same geometry).
    """

    cfg: ShiftConfig

    def _init_shift(self, shape: tuple[int, ...], bias: bool, cfg: ShiftConfig) -> None:
        self.cfg = cfg
        if cfg.mode == "q":
            self.weight = nn.Parameter(torch.empty(shape))
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        else:
            self.shift = nn.Parameter(torch.empty(shape).uniform_(cfg.pmin, 0))
            self.sign = nn.Parameter(torch.empty(shape).uniform_(-1, 1))
        fan_in = math.prod(shape[1:])
        self.bias = nn.Parameter(torch.empty(shape[0]).uniform_(-1, 1) / math.sqrt(fan_in)) if bias else None

    def _load_dense(self, dense: Any) -> Any:
        """Take a pretrained layer's weights: Q copies W; PS sets P = round(log2|W|), S = sign(W)."""
        w, cfg = dense.weight.detach().float(), self.cfg
        with torch.no_grad():
            if cfg.mode == "q":
                self.weight.copy_(w)
            else:
                self.shift.copy_(torch.round(torch.log2(w.abs().clamp(min=2.0 ** (cfg.pmin - 1))))
                                 .clamp(cfg.pmin, 0))
                self.sign.copy_(torch.sign(w))
            if dense.bias is not None and self.bias is not None:
                self.bias.copy_(dense.bias.detach().float())
        return self

    def quantised_weight(self) -> Any:
        """The weight actually used: exact signed powers of two (or 0), with STE gradients."""
        pmin = self.cfg.pmin
        if self.cfg.mode == "q":
            with torch.no_grad():  # DeepShift clampabs: in place, zeros stay zero
                s = torch.sign(self.weight.data)
                self.weight.data.copy_(s * self.weight.data.abs().clamp(2.0 ** pmin, 1.0))
            wq = round_pow2(self.weight, pmin)
            return Ste.apply(self.weight, wq.detach())
        with torch.no_grad():
            self.shift.data.clamp_(pmin, 0)
        p = Ste.apply(self.shift, torch.round(self.shift).detach())
        s = Ste.apply(self.sign, torch.sign(torch.round(self.sign)).detach())
        return UnsymGradMul.apply(torch.pow(2.0, p), s)

    def codes(self) -> tuple[Any, Any]:
        """(sign in {-1,0,1}, p in [pmin, 0]) as int8 tensors of the weight's shape; p is 0 where sign is 0."""
        with torch.no_grad():
            w = self.quantised_weight()
            sign = torch.sign(w).to(torch.int8)
            p = torch.where(w == 0, torch.zeros_like(w), torch.log2(w.abs().clamp(min=2.0 ** self.cfg.pmin)))
            return sign, torch.round(p).to(torch.int8)

    def _dense_with(self, dense: Any) -> Any:
        """``dense`` (a fresh torch layer of this geometry) holding the exact power-of-two weights."""
        with torch.no_grad():
            dense.weight.copy_(self.quantised_weight())
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        return dense

    def _cfg_repr(self) -> str:
        return f"mode={self.cfg.mode}, weight_bits={self.cfg.weight_bits}, p in [{self.cfg.pmin}, 0]"

class ShiftLinear(ShiftBase):
    """A Linear layer whose weights are ``s * 2**p`` (DeepShift Q or PS mode)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, cfg: ShiftConfig) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_shift((out_features, in_features), bias, cfg)

    @classmethod
    def from_linear(cls, lin: Any, cfg: ShiftConfig) -> Any:
        """Convert a pretrained Linear: Q copies W; PS sets P = round(log2|W|), S = sign(W)."""
        return cls(lin.in_features, lin.out_features, lin.bias is not None, cfg)._load_dense(lin)

    def forward(self, x: Any) -> Any:
        return nn.functional.linear(x, self.quantised_weight(), self.bias)

    def to_dense(self) -> Any:
        """An nn.Linear with the exact power-of-two weights."""
        return self._dense_with(nn.Linear(self.in_features, self.out_features, bias=self.bias is not None))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._cfg_repr()}"

class ShiftConv2d(ShiftBase):
    """A Conv2d layer (zero padding) whose weights are ``s * 2**p`` (DeepShift Q or PS mode)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, cfg: ShiftConfig, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise InputError(f"channels ({in_channels}, {out_channels}) must be divisible by groups {groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self._init_shift((out_channels, in_channels // groups, *self.kernel_size), bias, cfg)

    @classmethod
    def from_conv(cls, conv: Any, cfg: ShiftConfig) -> Any:
        """Convert a pretrained Conv2d (same stride/padding/dilation/groups/bias; ``padding_mode='zeros'``)."""
        if conv.padding_mode != "zeros":
            raise UnsupportedLayerError(f"shift Conv2d supports padding_mode='zeros' only, got "
                                        f"'{conv.padding_mode}'")
        return cls(conv.in_channels, conv.out_channels, conv.kernel_size, cfg, conv.stride, conv.padding,
                   conv.dilation, conv.groups, conv.bias is not None)._load_dense(conv)

    def forward(self, x: Any) -> Any:
        return nn.functional.conv2d(x, self.quantised_weight(), self.bias, self.stride, self.padding,
                                    self.dilation, self.groups)

    def to_dense(self) -> Any:
        """An nn.Conv2d with the exact power-of-two weights."""
        return self._dense_with(nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                          self.padding, self.dilation, self.groups, bias=self.bias is not None))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, {self._cfg_repr()}")


def is_shift(m: Any) -> bool:
    """True for a shift layer (:class:`ShiftLinear` or :class:`ShiftConv2d`)."""
    return isinstance(m, ShiftBase)


def is_shift_conv(m: Any) -> bool:
    """True for a :class:`ShiftConv2d`."""
    return isinstance(m, ShiftConv2d)


def _check_float(model: Any) -> None:
    for name, m in model.named_modules():
        if type(m).__module__.startswith("brevitas."):
            raise UnsupportedLayerError(f"shiftadd works on float nn.Linear/nn.Conv2d models; '{name}' is a Brevitas "
                                        f"{type(m).__name__} (convert a float model)")


def linear_names(model: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """Names of the plain nn.Linear modules (in module order), minus ``skip``."""
    from torch import nn

    return [n for n, m in model.named_modules() if type(m) is nn.Linear and n not in skip]


def conv_names(model: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """Names of the plain nn.Conv2d modules (in module order), minus ``skip``."""
    from torch import nn

    return [n for n, m in model.named_modules() if type(m) is nn.Conv2d and n not in skip]


def set_module(model: Any, name: str, new: Any) -> None:
    """Replace the submodule called ``name`` (dotted) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def convert(model: Any, cfg: ShiftConfig, skip: tuple[str, ...] = ()) -> Any:
    """Replace every plain nn.Linear and nn.Conv2d (except ``skip``) by a shift layer converted from its weights,
    in place. A Conv2d with a padding mode other than 'zeros' stays dense (see :func:`conv_names`)."""
    _check_float(model)
    lin_cls, conv_cls = ShiftLinear, ShiftConv2d
    names = linear_names(model, skip)
    conv = [n for n in conv_names(model, skip) if model.get_submodule(n).padding_mode == "zeros"]
    if not names and not conv:
        raise UnsupportedLayerError("the model has no nn.Linear or nn.Conv2d layer to convert to shifts")
    for n in names:
        set_module(model, n, lin_cls.from_linear(model.get_submodule(n), cfg))
    for n in conv:
        set_module(model, n, conv_cls.from_conv(model.get_submodule(n), cfg))
    return model


def materialise(model: Any) -> Any:
    """Replace each shift layer by an nn.Linear / nn.Conv2d holding its exact power-of-two weights (fp32), in place.

    The result has the original architecture's state-dict keys, so it loads where the float model did, and
    exports to ONNX as ordinary Gemm/MatMul/Conv (weights are exact powers of two in fp32: every product is exact).
    """
    for n, m in list(model.named_modules()):
        if is_shift(m):
            set_module(model, n, m.to_dense())
    return model


@dataclass(frozen=True)
class IntegerWeight:
    """A shift weight as an integer tensor times a power-of-two scale (for FINN / QONNX ``Quant``)."""

    values: Any
    """int32 array: ``sign * 2**(p - pmin)``."""
    scale: float
    """``2**pmin``: weight = values * scale."""
    bit_width: int
    """Signed integer width holding the values: ``1 - pmin + 1`` (the +1 for 2**-pmin itself)."""


def integer_weight(layer: Any) -> IntegerWeight:
    """``sign * 2**p`` with p in [pmin, 0] as integers in ``[-2**-pmin, 2**-pmin]`` times ``2**pmin``.

    The width is ``-pmin + 2`` signed bits (PS 5-bit: p >= -14 -> INT16; Q 5-bit: p >= -15 -> INT17). A FINN MVAU
    would instead implement the shift itself; this is the narrowest *integer-multiply* equivalent.
    """
    import numpy as np

    sign, p = layer.codes()
    pmin = layer.cfg.pmin
    vals = sign.numpy().astype(np.int64) * (2 ** (p.numpy().astype(np.int64) - pmin))
    return IntegerWeight(vals.astype(np.int32), float(2.0 ** pmin), -pmin + 2)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning a converted model on labelled data."""

    epochs: int = 10
    lr: float = 1e-3
    """Peak learning rate (DeepShift from pretrained: 0.001)."""
    batch_size: int = 64
    optimizer: str = "radam"
    """``radam`` (DeepShift README: PS needs RAdam) or ``sgd`` (momentum 0.9)."""
    seed: int = 0


def finetune(model: Any, x: Any, y: Any, cfg: FinetuneConfig) -> list[float]:
    """Cross-entropy fine-tuning with a cosine schedule; returns the mean training loss per epoch."""
    import torch

    if cfg.optimizer not in ("radam", "sgd"):
        raise InputError(f"optimizer must be radam or sgd, got '{cfg.optimizer}'")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.RAdam(params, lr=cfg.lr) if cfg.optimizer == "radam"
           else torch.optim.SGD(params, lr=cfg.lr, momentum=0.9))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.epochs, 1))
    g = torch.Generator().manual_seed(cfg.seed)
    losses = []
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=g)
        tot, n = 0.0, 0
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            if len(idx) < 2:
                continue
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            tot, n = tot + float(loss.detach()) * len(idx), n + len(idx)
        sched.step()
        losses.append(tot / max(n, 1))
    model.eval()
    return losses
