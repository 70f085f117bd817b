"""ShiftAddLLM-style post-training binary-coded quantisation (BCQ) of nn.Linear layers, with a LUT-GEMV kernel.

``W ~ sum_i alpha_i * B_i`` with ``B_i in {-1,+1}``; see docs/shiftadd.md. Choices made here (reference:
GATECH-EIC/ShiftAddLLM as summarised in the shared notes):

* **Layout: ShiftAddLLM "Lat." mode** (the deployable one). A scale group is a block of 8 consecutive input
  columns x ``group_rows`` consecutive output rows; [VERIFY] the released code uses N/8 rows per block, here
  ``group_rows`` is a parameter (default 8). No incoherence processing (that is Acc. mode only).
* **Fitting** (``bcq_shift.py::quantize_shift``): greedy residual init, then ``rounds`` alternations of
  least-squares alpha (normal equations, solved exactly per group instead of with q CG steps), sort |alpha|
  descending, APoT rounding of alpha to ``apot_terms`` signed powers of two (greedy, log-domain; the residual
  signs are *kept*, so the kernel's alpha equals the fitted one), and the exact nearest codeword for B (all
  2**q candidates enumerated instead of the binary search: the same minimiser). With ``rounds = 0`` the greedy
  alpha is APoT-rounded once and B re-solved (the reference code leaves it in float then).
* **Error compensation** (``shiftaddllm.py::fasterquant``): GPTQ/OBS column-sequential feedback with
  ``H = X^T X`` from calibration inputs (in GPTQ's lazy-batch form: per column inside blocks of 128 columns,
  one matmul for the columns after a block), damping ``percdamp * mean(diag H)``, dead columns zeroed; the block
  alpha is fitted at the block's first column on the already-updated weights, then each column's B is
  re-solved with that alpha. No ``act_order`` permutation (it would permute the kernel's input chunks).
* **Bit allocation** (``opt_analysis.py``): ``Z = W / diag(U)`` per column, ``score = ||Z||_F * std(Z)**2``;
  layers sorted by score ascending get bits by the parameter-weighted cumulative proportions ``mix``
  (default 0/0.8/0.2 for 1/2/3 bits); a layer's bits are chosen at the midpoint of its parameter span.
* Layers are quantised in order; each one's calibration inputs come from the model with the earlier layers
  already quantised (the GPTQ sequential pipeline).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from hwkit.compress.hooks import run_hooked
from hwkit.errors import InputError

MU = 8
"""Inputs per LUT chunk (ShiftAddLLM/LUT-GEMV mu = 8: a 256-entry table per chunk)."""


@dataclass(frozen=True)
class BCQConfig:
    """Post-training binary-coded quantisation settings."""

    bits: int = 3
    """Binary planes per weight q (1..4); 0: per-layer allocation from the sensitivity score with ``mix``."""
    group_rows: int = 8
    """Output rows sharing a scale within one 8-column block."""
    rounds: int = 20
    """Alternating refinement rounds (ShiftAddLLM default 50, "20 works too")."""
    apot_terms: int | None = 3
    """Signed powers of two per scale (None: float scales)."""
    percdamp: float = 0.01
    """Hessian damping as a fraction of mean(diag H)."""
    compensate: bool = True
    """GPTQ-style column error compensation (False: BCQ on the weights alone)."""
    mix: tuple[float, float, float] = (0.0, 0.8, 0.2)
    """Parameter proportions given 1, 2, 3 bits when ``bits == 0`` (lowest-score layers get the fewest)."""

    def __post_init__(self) -> None:
        if not 0 <= self.bits <= 4:
            raise InputError(f"bcq bits must be in 0..4 (0: allocate), got {self.bits}")
        if self.group_rows < 1 or self.rounds < 0 or self.percdamp < 0:
            raise InputError("bcq needs group_rows >= 1, rounds >= 0 and percdamp >= 0")
        if self.apot_terms is not None and not 1 <= self.apot_terms <= 4:
            raise InputError(f"apot_terms must be in 1..4 or None, got {self.apot_terms}")
        if len(self.mix) != 3 or any(p < 0 for p in self.mix) or abs(sum(self.mix) - 1) > 1e-6:
            raise InputError(f"mix must be three non-negative proportions summing to 1, got {self.mix}")


def apot(a: Any, terms: int) -> Any:
    """Greedy sum of ``terms`` signed powers of two approximating ``a`` (log-domain rounding, signs kept)."""
    import torch

    res, out = a.clone(), torch.zeros_like(a)
    for _ in range(terms):
        nz = res != 0
        e = torch.round(torch.log2(torch.where(nz, res.abs(), torch.ones_like(res))))
        t = torch.where(nz, torch.sign(res) * torch.pow(2.0, e), torch.zeros_like(res))
        out, res = out + t, res - t
    return out


def _signs(q: int, like: Any) -> Any:
    import torch

    idx = torch.arange(2 ** q)
    return (((idx[:, None] >> torch.arange(q)[None, :]) & 1) * 2 - 1).to(like.dtype)  # [2^q, q]


def nearest_codes(w: Any, alpha: Any) -> Any:
    """B in {-1,+1} minimising |w - B alpha| per element: w [G, g], alpha [G, q] -> B [G, g, q] (exact)."""
    s = _signs(alpha.shape[1], alpha)
    vals = alpha @ s.T  # [G, 2^q]
    idx = (w[:, :, None] - vals[:, None, :]).abs().argmin(dim=2)
    return s[idx]


def fit_bcq(w: Any, q: int, rounds: int, apot_terms: int | None) -> tuple[Any, Any]:
    """Alternating BCQ of each row of ``w`` [G, g]: returns alpha [G, q] (descending) and B [G, g, q]."""
    import torch

    r = w.clone()
    bs, al = [], []
    for _ in range(q):
        b = torch.where(r >= 0, 1.0, -1.0).to(w.dtype)
        a = r.abs().mean(dim=1)
        r = r - a[:, None] * b
        bs.append(b)
        al.append(a)
    alpha, b = torch.stack(al, 1), torch.stack(bs, 2)
    eye = torch.eye(q, dtype=w.dtype)
    for _ in range(rounds):
        gram = b.transpose(1, 2) @ b + 1e-9 * eye
        rhs = (b.transpose(1, 2) @ w[:, :, None])[:, :, 0]
        alpha = torch.linalg.solve(gram, rhs).abs().sort(dim=1, descending=True).values
        if apot_terms is not None:
            alpha = apot(alpha, apot_terms)
        b = nearest_codes(w, alpha)
    if rounds == 0 and apot_terms is not None:
        alpha = apot(alpha, apot_terms)
        b = nearest_codes(w, alpha)
    return alpha, b


def hessian(x: Any) -> Any:
    """``X^T X / n`` in float64 from calibration inputs [n, K]."""
    x = x.reshape(-1, x.shape[-1]).double()
    return x.T @ x / max(len(x), 1)


def _chol_factor(h: Any, w: Any, percdamp: float) -> tuple[Any, Any]:
    """Damped H, dead columns handled; returns (U = chol(H^-1) upper, W with dead columns zeroed)."""
    import torch

    h = h.clone()
    w = w.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += percdamp * torch.mean(torch.diag(h)) * torch.eye(len(h), dtype=h.dtype)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(hinv, upper=True), w


def sensitivity(w: Any, h: Any, percdamp: float = 0.01) -> float:
    """ShiftAddLLM's criterion ``||Z||_F * std(Z)**2`` with ``Z = W / diag(U)`` column-wise."""
    import torch

    u, w = _chol_factor(h, w.double(), percdamp)
    z = w / torch.diag(u)[None, :]
    return float(z.norm() * z.std() ** 2)


def allocate_bits(scores: dict[str, float], sizes: dict[str, int], mix: tuple[float, float, float]) -> dict[str, int]:
    """Bits per layer: ascending score order, parameter-weighted cumulative proportions for 1/2/3 bits."""
    total = sum(sizes.values())
    bounds = [mix[0], mix[0] + mix[1], 1.0 + 1e-12]
    out, seen = {}, 0
    for name in sorted(scores, key=lambda n: scores[n]):
        mid = (seen + sizes[name] / 2) / total
        out[name] = next(b + 1 for b, edge in enumerate(bounds) if mid <= edge)
        seen += sizes[name]
    return out


@dataclass(frozen=True)
class QuantisedLinear:
    """A BCQ-quantised weight in the kernel layout."""

    codes: Any
    """uint8 [C, N, q]: bit j of codes[c, n, i] is B_i[n, 8c + j] == +1."""
    alpha: Any
    """float32 [C, ceil(N / group_rows), q]."""
    in_features: int
    group_rows: int

    def dequantise(self) -> Any:
        """The dense weight [N, in_features] the codes and scales stand for (float32)."""
        import torch

        c, n, q = self.codes.shape
        bits = ((self.codes.long()[..., None] >> torch.arange(MU)) & 1) * 2 - 1  # [C, N, q, 8]
        rows = torch.arange(n) // self.group_rows
        a = self.alpha[:, rows, :]  # [C, N, q]
        w = (a[..., None] * bits.float()).sum(dim=2)  # [C, N, 8]
        return w.permute(1, 0, 2).reshape(n, c * MU)[:, : self.in_features].contiguous()


def quantise_weight(w: Any, h: Any | None, bits: int, cfg: BCQConfig) -> QuantisedLinear:
    """BCQ of one weight [N, K] (Lat. layout), with GPTQ compensation when ``h`` is given and ``cfg.compensate``."""
    import torch

    n, k = w.shape
    kp = -(-k // MU) * MU
    wd = torch.zeros(n, kp, dtype=torch.float64)
    wd[:, :k] = w.detach().double()
    comp = cfg.compensate and h is not None
    if comp and h is not None:
        hp = torch.zeros(kp, kp, dtype=torch.float64)
        hp[:k, :k] = h
        u, wd = _chol_factor(hp, wd, cfg.percdamp)
    g = cfg.group_rows
    ng = -(-n // g)
    rows = torch.arange(n) // g
    chunks = kp // MU
    codes = torch.zeros(chunks, n, bits, dtype=torch.uint8)
    alphas = torch.zeros(chunks, ng, bits, dtype=torch.float64)
    block = 128  # GPTQ's lazy batch updates: feedback inside a block of columns, one matmul for the rest
    err_blk = torch.zeros(0)
    for c in range(chunks):
        cols = slice(c * MU, (c + 1) * MU)
        if comp and (c * MU) % block == 0:
            b0, b1 = c * MU, min(kp, c * MU + block)
            err_blk = torch.zeros(n, b1 - b0, dtype=torch.float64)
        full = n // g
        if full:
            alphas[c, :full] = fit_bcq(wd[: full * g, cols].reshape(full, g * MU), bits, cfg.rounds,
                                       cfg.apot_terms)[0]
        if ng > full:  # a shorter last group, fitted on its own rows
            alphas[c, full:] = fit_bcq(wd[full * g:, cols].reshape(1, -1), bits, cfg.rounds, cfg.apot_terms)[0]
        alpha = alphas[c]
        a_rows = alpha[rows]  # [N, q]
        for j in range(MU):
            col = c * MU + j
            wk = wd[:, col]
            b = nearest_codes(wk[:, None], a_rows)[:, 0, :]  # [N, q]
            codes[c] |= ((b > 0).to(torch.uint8) << j)
            if comp:
                qk = (b * a_rows).sum(dim=1)
                err = (wk - qk) / u[col, col]
                wd[:, col + 1:b1] -= err[:, None] * u[col, col + 1:b1][None, :]
                err_blk[:, col - b0] = err
        if comp and (c + 1) * MU == b1 and b1 < kp:
            wd[:, b1:] -= err_blk @ u[b0:b1, b1:]
    return QuantisedLinear(codes, alphas.float(), k, g)


class BCQLinear(nn.Module):
    """A Linear layer stored as binary codes + (power-of-two) scales.

    Forward (:func:`forward_path` picks one; CPU, float32, no autograd, not while exporting or tracing): the
    LUT-GEMV kernel (:meth:`lut_forward`), the int8 GEMM of PyTorch's x86 quantized engine on the dequantised
    weight with SmoothQuant-style input scaling from the calibration ranges (:meth:`int8_forward`), or the
    dequantised dense weight (everything else, and always with ``set_lut_mode("off")``). ``lut_calls`` and
    ``int8_calls`` count the forwards that ran each kernel.
    """

    codes: torch.Tensor
    """uint8 codes [C, N, q] (buffer)."""
    alpha: torch.Tensor
    """Scales (buffer)."""
    weight: torch.Tensor
    """The dequantised weight [N, K] (non-persistent buffer)."""
    act_absmax: torch.Tensor | None
    """Largest |input| per input column seen in calibration [K] (non-persistent buffer; None: not recorded)."""

    def __init__(self, qw: QuantisedLinear, bias: Any, apot_terms: int | None) -> None:
        super().__init__()
        self.register_buffer("codes", qw.codes)
        self.register_buffer("alpha", qw.alpha)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        self.in_features = qw.in_features
        self.out_features = qw.codes.shape[1]
        self.bits = qw.codes.shape[2]
        self.group_rows = qw.group_rows
        self.apot_terms = apot_terms
        self.register_buffer("weight", qw.dequantise(), persistent=False)
        self.register_buffer("act_absmax", None, persistent=False)
        self.lut_calls = 0
        self.int8_calls = 0

    def quantised(self) -> QuantisedLinear:
        return QuantisedLinear(self.codes, self.alpha, self.in_features, self.group_rows)

    def set_act_range(self, absmax: Any) -> None:
        """Record the calibration input range (largest |x| per input column, [in_features]) the int8 path scales
        by; ``None`` forgets it (the layer then runs int8 only with ``set_lut_mode("int8")``, unscaled)."""
        if absmax is not None:
            absmax = torch.as_tensor(absmax, dtype=torch.float32).detach().clone().reshape(-1)
            if absmax.numel() != self.in_features or not bool(torch.isfinite(absmax).all()):
                raise InputError(f"an activation range needs {self.in_features} finite values, "
                                 f"got {absmax.numel()}")
            absmax = absmax.abs()
        self.act_absmax = absmax
        _INT8.pop(self, None)

    def forward(self, x: Any) -> Any:
        path = forward_path(self, x)
        if path == "lut":
            self.lut_calls += 1
            shape = x.shape
            y = self.lut_forward(x.reshape(-1, shape[-1]))
            return y.reshape(*shape[:-1], self.out_features)
        if path == "int8":
            self.int8_calls += 1
            return self.int8_forward(x)
        return nn.functional.linear(x, self.weight, self.bias)

    def int8_forward(self, x: Any) -> Any:
        """The layer as an int8 GEMM (``torch.ops.quantized.linear_dynamic``; fbgemm/oneDNN on x86).

        The weight is the dequantised BCQ weight times a per-input-column factor ``d`` (SmoothQuant,
        ``d = absmax_x ** INT8_ALPHA / absmax_w ** (1 - INT8_ALPHA)`` from :meth:`set_act_range`; ``d = 1`` without
        a range), rounded to int8 with one scale per output row; the input is divided by ``d`` and quantised per
        call to 7-bit unsigned with one scale for the whole tensor (``reduce_range``, as PyTorch does on x86). Packed
        once per module (kept outside it, like the LUT kernel's layout). Approximate: see docs/shiftadd.md section 9.
        """
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 0:
            return nn.functional.linear(x, self.weight, self.bias)
        packed = _INT8.get(self)
        if packed is None:
            packed = _INT8[self] = _int8_pack(self)
        w, inv_d = packed
        x2 = x2 * inv_d if inv_d is not None else x2.contiguous()
        return torch.ops.quantized.linear_dynamic(x2, w, True).reshape(*shape[:-1], self.out_features)

    def lut_forward(self, x: Any) -> Any:
        """The same layer through the LUT-GEMV kernel (one batch-1 call per row of ``x``).

        ``group_rows % 8 == 0``: the packed kernel of ``hwkit.compress.shiftadd.lutgemv`` (packed on the first
        call and
        cached per module); otherwise the scalar numba kernel ``lut_gemm``.
        """
        import numpy as np
        import torch

        xn = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
        if self.group_rows % 8 == 0:
            from hwkit.compress.shiftadd import lutgemv

            gemv = _GEMV.get(self)
            if gemv is None:  # kept outside the module so that deepcopy/pickle of the model are unaffected
                gemv = _GEMV[self] = lutgemv.LUTGemv(lutgemv.pack(self.codes.numpy(), self.alpha.numpy(),
                                                                  self.group_rows, self.in_features))
            y = gemv.rows(xn) if xn.ndim == 2 else gemv.matmul(xn)
        else:
            y = lut_gemm(xn, self.codes.numpy(), self.alpha.numpy(), self.group_rows)
        if self.bias is not None:
            y = y + self.bias.detach().numpy()
        return torch.from_numpy(y)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_rows={self.group_rows}, apot_terms={self.apot_terms}")


LUT_MODES = ("auto", "on", "int8", "off")
LUT_MAX_ROWS = 64
"""Most rows (tokens x batch) a forward sends through the LUT kernel; larger inputs use the dense weight."""
INT8_ROWS = (8, 2048)
"""Rows (tokens x batch) for which ``auto`` runs the int8 GEMM on an AVX2 CPU: where it measured faster than fp32 for
MiniLM's FFN shapes and made the whole encoder faster on this project's AVX2 machine (docs/shiftadd.md section 9)."""
INT8_MIN_WEIGHTS = 384 * 384
"""Smallest layer (in x out features) ``auto`` runs as int8: smaller products were not measured faster."""
INT8_ALPHA = 0.85
"""SmoothQuant migration strength of the int8 path (0: no input scaling, 1: all of the input range to the weight)."""
_LUT: dict[str, Any] = {"mode": "auto"}


def set_lut_mode(mode: str) -> str:
    """How BCQ layers compute their forward; returns the previous mode.

    ``auto`` (default): the fast path where one was measured faster than fp32: the AVX-512 LUT kernel (up to
    ``LUT_MAX_ROWS`` rows) on CPUs with AVX-512; on AVX2 CPUs the int8 GEMM for layers of at least
    ``INT8_MIN_WEIGHTS`` weights with a calibration range (``hwkit shiftadd`` records one) at ``INT8_ROWS`` rows;
    else the dense weight. ``on``: the LUT kernel whenever it applies (also the scalar numba kernel without AVX-512).
    ``int8``: the int8 GEMM at any row count (also for layers without a range). ``off``: always the dense dequantised
    weight (exact). ``HWKIT_BCQ_LUT`` sets the initial mode.
    """
    if mode not in LUT_MODES:
        raise InputError(f"BCQ LUT mode must be one of {', '.join(LUT_MODES)}, got {mode!r}")
    old = _LUT["mode"]
    _LUT["mode"] = mode
    return old


@contextmanager
def forward_mode(mode: str) -> Iterator[None]:
    """``mode`` (see :func:`set_lut_mode`; ``HWKIT_BCQ_LUT`` ignored) for the ``with`` block, restored afterwards
    (also on error). hwkit's own calibration and checks run under ``forward_mode("off")``: the BCQ model's exact
    output is the dense dequantised one."""
    if mode not in LUT_MODES:
        raise InputError(f"BCQ LUT mode must be one of {', '.join(LUT_MODES)}, got {mode!r}")
    old = (_LUT["mode"], _LUT.get("forced", False))
    _LUT["mode"], _LUT["forced"] = mode, True
    try:
        yield
    finally:
        _LUT["mode"], _LUT["forced"] = old


def lut_mode() -> str:
    """The current BCQ forward mode (see :func:`set_lut_mode`)."""
    import os

    env = os.environ.get("HWKIT_BCQ_LUT")
    if _LUT["mode"] == "auto" and env in LUT_MODES and not _LUT.get("forced"):
        return str(env)
    return _LUT["mode"]


def _onnx_exporting() -> bool:
    """``torch.onnx.is_in_onnx_export()`` without its two imports per call (a BCQ forward asks on every call)."""
    flags = _LUT.get("onnx_flags")
    if flags is None:
        try:
            from torch.onnx._internal.exporter import _flags
            from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

            flags = _LUT["onnx_flags"] = (_flags, GLOBALS)
        except ImportError:  # pragma: no cover - another torch layout: the public (slower) call
            flags = _LUT["onnx_flags"] = ()
    if not flags:  # pragma: no cover
        return bool(torch.onnx.is_in_onnx_export())
    return bool(flags[1].in_onnx_export or flags[0]._is_onnx_exporting)


def _plain_eager() -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting() or _onnx_exporting():
        return False
    if torch.compiler.is_compiling():
        return False
    return _DISPATCH_MODE is None or _DISPATCH_MODE() is None  # not under FlopCounterMode, fake tensors, ...


_DISPATCH_MODE: Any
try:
    from torch.utils._python_dispatch import _get_current_dispatch_mode as _DISPATCH_MODE
except ImportError:  # pragma: no cover - older torch
    _DISPATCH_MODE = None


def forward_path(m: Any, x: Any) -> str:
    """Which computation ``m``'s forward on ``x`` runs: ``"lut"``, ``"int8"`` or ``"dense"`` (see
    :func:`set_lut_mode`)."""
    if type(x) is not torch.Tensor or not x.is_cpu or x.dtype != torch.float32:
        return "dense"
    mode = lut_mode()
    if mode == "off":
        return "dense"
    if torch.is_grad_enabled() and (x.requires_grad or (m.bias is not None and m.bias.requires_grad)):
        return "dense"
    if not _plain_eager() or x.ndim < 1 or x.shape[-1] != m.in_features:
        return "dense"
    rows = x.numel() // max(m.in_features, 1)
    if mode == "int8":
        return "int8" if _int8_ok() else "dense"
    if mode == "on":
        return "lut" if rows <= LUT_MAX_ROWS else "dense"
    if _has_avx512():  # auto
        return "lut" if m.group_rows % 8 == 0 and rows <= LUT_MAX_ROWS else "dense"
    if (m.act_absmax is not None and INT8_ROWS[0] <= rows <= INT8_ROWS[1]
            and m.in_features * m.out_features >= INT8_MIN_WEIGHTS and _cpu_capability() == "AVX2" and _int8_ok()):
        return "int8"
    return "dense"


def lut_applies(m: Any, x: Any) -> bool:
    """Whether ``m``'s forward on ``x`` runs the LUT kernel (see ``BCQLinear``)."""
    return forward_path(m, x) == "lut"


def _cpu_capability() -> str:
    if "cap" not in _LUT:
        import torch

        _LUT["cap"] = str(torch.backends.cpu.get_cpu_capability())
    return str(_LUT["cap"])


def _int8_ok() -> bool:
    """PyTorch's quantized engine can run ``linear_dynamic`` here (x86: fbgemm/onednn)."""
    if "int8" not in _LUT:
        import torch

        _LUT["int8"] = torch.backends.quantized.engine in ("x86", "fbgemm", "onednn")
    return bool(_LUT["int8"])


def _int8_pack(m: Any) -> tuple[Any, Any]:
    """(packed int8 weight + bias, 1/d per input column or None) for :meth:`BCQLinear.int8_forward`."""
    import warnings

    import torch

    w = m.weight.detach().float()
    inv_d = None
    if m.act_absmax is not None:
        ax = m.act_absmax.clamp(min=1e-6)
        aw = w.abs().amax(dim=0).clamp(min=1e-6)
        d = (ax ** INT8_ALPHA / aw ** (1 - INT8_ALPHA)).clamp(1e-4, 1e4)
        w = w * d[None, :]
        inv_d = (1.0 / d).contiguous()
    scale = (w.abs().amax(dim=1).double() / 127).clamp(min=1e-12)
    with warnings.catch_warnings():  # PyTorch marks quantized tensor creation deprecated (still the x86 int8 path)
        warnings.simplefilter("ignore")
        qw = torch.quantize_per_channel(w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)
        bias = None if m.bias is None else m.bias.detach().float().contiguous()
        packed = torch.ops.quantized.linear_prepack(qw, bias)
    return packed, inv_d


def observe_ranges(model: Any, inputs: Iterable[Any]) -> int:
    """Record every BCQ layer's input range (largest |x| per column) over ``inputs`` for the int8 path: each item
    is a dict of keyword inputs, a tuple of positional inputs or one tensor; the model runs dense. Returns the
    number of BCQ layers updated."""
    import torch

    from hwkit.compress.hooks import forward_hooks

    layers = [m for m in model.modules() if is_bcq(m)]
    seen: dict[Any, Any] = {}

    def hook(mod: Any, i: Any, _o: Any) -> None:
        a = i[0].detach().reshape(-1, mod.in_features).abs().amax(dim=0)
        seen[mod] = a if mod not in seen else torch.maximum(seen[mod], a)

    with forward_hooks([(m, hook) for m in layers]), torch.no_grad(), forward_mode("off"):
        for item in inputs:
            if isinstance(item, dict):
                model(**item)
            elif isinstance(item, tuple):
                model(*item)
            else:
                model(item)
    for m in layers:
        if m in seen:
            m.set_act_range(seen[m])
    return len(seen)


def _has_avx512() -> bool:
    if "avx512" not in _LUT:
        from hwkit.compress.shiftadd import lutgemv

        _LUT["avx512"] = lutgemv.has_avx512()
    return bool(_LUT["avx512"])


_KERNEL: Any = None
_GEMV: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_INT8: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def is_bcq(m: Any) -> bool:
    """True for a BCQLinear module."""
    return isinstance(m, BCQLinear)


def _kernel() -> Any:
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import numba
    import numpy as np

    @numba.njit(cache=False, boundscheck=False)
    def gemv(x: Any, codes: Any, alpha: Any, group_rows: int, out: Any) -> None:  # pragma: no cover - jitted
        chunks, n, q = codes.shape
        lut = np.empty(256, dtype=np.float32)
        for c in range(chunks):
            base = np.float32(0.0)
            for j in range(8):
                base -= x[c * 8 + j]
            lut[0] = base
            for b in range(1, 256):  # lut[b] = sum_j (bit j of b ? +x_j : -x_j), built incrementally
                low = b & (-b)
                j = 0
                while (1 << j) != low:
                    j += 1
                lut[b] = lut[b ^ low] + np.float32(2.0) * x[c * 8 + j]
            for r in range(n):
                g = r // group_rows
                acc = np.float32(0.0)
                for i in range(q):
                    acc += alpha[c, g, i] * lut[codes[c, r, i]]
                out[r] += acc

    _KERNEL = gemv
    return gemv


def lut_gemm(x: Any, codes: Any, alpha: Any, group_rows: int) -> Any:
    """``x @ W^T`` for BCQ codes (uint8 [C, N, q]) and scales via the scalar LUT-GEMV kernel, row by row.

    The reference kernel: any ``group_rows``, one 256-entry table per 8-input chunk. The fast kernel for
    ``group_rows % 8 == 0`` is ``hwkit.compress.shiftadd.lutgemv`` (``BCQLinear.lut_forward`` uses it).
    """
    import numpy as np

    gemv = _kernel()
    x2 = np.atleast_2d(x).astype(np.float32, copy=False)
    chunks = codes.shape[0]
    xp = np.zeros((x2.shape[0], chunks * MU), dtype=np.float32)
    xp[:, : x2.shape[1]] = x2
    out = np.zeros((x2.shape[0], codes.shape[1]), dtype=np.float32)
    for t in range(x2.shape[0]):
        gemv(xp[t], codes, alpha, group_rows, out[t])
    return out if np.ndim(x) == 2 else out[0]


def _token_rows(model: Any, x: Any, pairs: list[tuple[Any, Any]], batch: int = 32) -> None:
    """Run a token set (:class:`hwkit.data.tokens.Tokens`) in dynamically padded batches; each hook in ``pairs``
    gets ``f(rows)`` with the layer's input rows of the real (unpadded) tokens only."""
    import torch

    from hwkit.compress.hooks import forward_hooks

    state: dict[str, Any] = {}

    def wrap(f: Any) -> Any:
        def hook(_m: Any, i: Any, _o: Any) -> None:
            a = i[0].detach()
            mask = state["mask"]
            if a.ndim == 3 and mask is not None and mask.shape == a.shape[:2]:
                f(a[mask.bool()])
            else:
                f(a.reshape(-1, a.shape[-1]))
        return hook

    with forward_hooks([(m, wrap(f)) for m, f in pairs]), torch.no_grad():
        for b in x.batches(batch):
            state["mask"] = b.get("attention_mask")
            model(**b)


def _inputs_of(model: Any, name: str, x: Any) -> Any:
    import torch

    got: list[Any] = []
    if hasattr(x, "batches"):
        _token_rows(model, x, [(model.get_submodule(name), got.append)])
        return torch.cat(got)
    run_hooked(model, x, [(model.get_submodule(name), lambda _m, i, _o: got.append(i[0].detach()))])
    return torch.cat([g.reshape(-1, g.shape[-1]) for g in got])


def _hessians_of_all(model: Any, names: list[str], x: Any) -> dict[str, Any]:
    """``hessian`` of every named layer's inputs from one forward pass (``X^T X`` accumulated in the hooks)."""

    acc: dict[str, list[Any]] = {n: [0, 0] for n in names}

    def add(n: str, rows: Any) -> None:
        xi = rows.reshape(-1, rows.shape[-1]).double()
        acc[n][0] = acc[n][0] + xi.T @ xi
        acc[n][1] += len(xi)

    if hasattr(x, "batches"):
        _token_rows(model, x, [(model.get_submodule(n), lambda r, n=n: add(n, r)) for n in names])
    else:
        run_hooked(model, x, [(model.get_submodule(n), lambda _m, i, _o, n=n: add(n, i[0].detach())) for n in names])
    return {n: hs / max(cnt, 1) for n, (hs, cnt) in acc.items()}


def quantise_model(model: Any, calib_x: Any, cfg: BCQConfig, skip: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """BCQ every plain nn.Linear of ``model`` in place (sequentially); returns (model, per-layer report). Each BCQ
    layer records its calibration input range (:meth:`BCQLinear.set_act_range`, for the int8 path); the
    calibration passes run the already-quantised layers dense (exact)."""
    with forward_mode("off"):
        return _quantise_model(model, calib_x, cfg, skip)


def _quantise_model(model: Any, calib_x: Any, cfg: BCQConfig, skip: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    import torch

    from hwkit.compress.shiftadd.shift import _check_float, linear_names, set_module

    _check_float(model)
    model.eval()
    names = linear_names(model, skip)
    if not names:
        raise InputError("the model has no nn.Linear layer to quantise")
    scores, sizes = {}, {}
    first = _hessians_of_all(model, names, calib_x)  # of the unquantised model, one forward pass
    for n in names:
        lin = model.get_submodule(n)
        scores[n] = sensitivity(lin.weight.detach(), first.pop(n), cfg.percdamp)
        sizes[n] = lin.weight.numel()
    bits = allocate_bits(scores, sizes, cfg.mix) if cfg.bits == 0 else {n: cfg.bits for n in names}
    cls = BCQLinear
    layers = []
    for n in names:
        lin = model.get_submodule(n)
        x = _inputs_of(model, n, calib_x)
        w = lin.weight.detach().float()
        qw = quantise_weight(w, hessian(x), bits[n], cfg)
        new = cls(qw, lin.bias, cfg.apot_terms)
        new.set_act_range(x.abs().amax(dim=0))
        with torch.no_grad():
            ref = x @ w.T
            out = x @ new.weight.T
        mem = weight_memory(int(w.shape[0]), int(w.shape[1]), bits[n], cfg.group_rows)
        layers.append({"name": n, "shape": list(w.shape), "bits": bits[n], "score": scores[n],
                       "weight_rel_error": float((w - new.weight).norm() / w.norm()),
                       "output_rel_error": float((ref - out).norm() / ref.norm().clamp(min=1e-12)),
                       "calib_rows": len(x), "weight_bytes": mem["total_bytes"], "fp32_bytes": mem["fp32_bytes"],
                       "memory_reduction": mem["reduction_vs_fp32"]})
        set_module(model, n, new)
    nbits = sum(bits[n] * sizes[n] for n in names) / sum(sizes.values())
    total = sum(lay["weight_bytes"] for lay in layers)
    fp32 = sum(lay["fp32_bytes"] for lay in layers)
    memory = {"weight_bytes": total, "fp32_bytes": fp32, "reduction_vs_fp32": 1 - total / fp32,
              "note": "binary codes + fp32 scales of the quantised Linear layers; bias and other layers not counted"}
    return model, {"config": asdict(cfg), "layers": layers, "avg_bits": nbits, "memory": memory}


def attach_codes(model: Any, codes: dict[str, Any]) -> Any:
    """Put BCQ layers back into a model saved with materialised weights (``hwkit shiftadd`` output) from its
    ``*.codes.pt`` (``torch.load(path, weights_only=True)``), so the forward runs the LUT kernel / int8 GEMM again
    (with the calibration input ranges where the file has them). The bias comes from the model's Linear; returns
    the model (changed in place)."""
    from torch import nn

    from hwkit.compress.shiftadd.shift import set_module

    cls = BCQLinear
    for name, c in codes.items():
        if "alpha" not in c:
            continue
        try:
            lin = model.get_submodule(name)
        except AttributeError:
            raise InputError(f"BCQ codes for '{name}', which is not in the model") from None
        if not isinstance(lin, nn.Linear):
            raise InputError(f"BCQ codes for '{name}', which is not an nn.Linear")
        k = int(c.get("in_features", lin.in_features))
        g = int(c.get("group_rows", -(-lin.out_features // c["alpha"].shape[1])))
        if (k, c["codes"].shape[1]) != (lin.in_features, lin.out_features):
            raise InputError(f"BCQ codes for '{name}' do not fit its shape {list(lin.weight.shape)}")
        ap = c.get("apot_terms")
        new = cls(QuantisedLinear(c["codes"], c["alpha"], k, g), lin.bias, None if ap is None else int(ap))
        if c.get("act_absmax") is not None:
            try:
                new.set_act_range(c["act_absmax"])
            except InputError as e:
                raise InputError(f"BCQ codes for '{name}': {e}") from None
        set_module(model, name, new)
    return model


def weight_memory(out_features: int, in_features: int, bits: int, group_rows: int = 8,
                  scale_bits: int = 32) -> dict[str, Any]:
    """Bytes of a BCQ weight (codes + scales) vs fp32; see ``hwkit.compress.shiftadd.lutgemv.weight_memory``."""
    from hwkit.compress.shiftadd import lutgemv

    return lutgemv.weight_memory(out_features, in_features, bits, group_rows, scale_bits)
