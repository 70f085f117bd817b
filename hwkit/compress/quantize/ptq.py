"""Post-training quantisation and short QAT with Brevitas's own tools.

PTQ (``brevitas.graph.calibrate``, ``brevitas.graph.gptq``): activation scales from calibration
statistics (``calibration_mode``), then optionally GPTQ on the weights (``gptq_mode``), then bias
correction (``bias_correction_mode``). GPTQ and bias correction are kept only when they do not
lower the held-out score (accuracy with labels, agreement with the float model without). QAT
fine-tunes the calibrated model for a few epochs with distillation from the float model.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

GPTQ_SAMPLES = 512
"""Samples GPTQ sees. With more (e.g. 1,024 in batches of 64) brevitas 0.13.4's gptq_mode left the
rounding of a digits MLP unchanged (weights of dead inputs zeroed, nothing else); with 512 it works."""


@dataclass(frozen=True)
class QuantSettings:
    """How to quantise (the recipe holds the bit widths)."""

    method: str = "ptq"
    """ptq | qat (PTQ, then ``qat_epochs`` of distillation-driven training)."""
    weight_method: str = "auto"
    """auto (GPTQ when it helps on the held-out split) | gptq | none."""
    bias_correction: str = "auto"
    """auto (when it helps) | on | off."""
    qat_epochs: int = 3
    """QAT epochs (method qat)."""
    qat_lr: float = 1e-3
    """QAT peak learning rate (cosine schedule, Adam)."""
    qat_temperature: float = 2.0
    """Distillation temperature."""
    batch_size: int = 64
    """Calibration / training batch."""
    calib_samples: int = 1024
    """At most this many calibration samples for PTQ."""
    seed: int = 0
    """Shuffling seed for QAT."""


@dataclass
class Score:
    """How close a model is on a split: accuracy (labels) or top-1 agreement, and output MSE to float."""

    accuracy: float | None
    agreement: float
    mse: float

    def key(self) -> tuple[float, float]:
        """Larger is better."""
        return (self.accuracy if self.accuracy is not None else self.agreement, -self.mse)


@dataclass
class PtqLog:
    """What the PTQ/QAT steps did (for the report)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    timing_s: dict[str, float] = field(default_factory=dict)


def batches(x: Any, bs: int) -> Iterator[Any]:
    """``x`` in consecutive batches of ``bs``."""
    for i in range(0, len(x), bs):
        yield x[i:i + bs]


def outputs(model: nn.Module, x: Any, bs: int = 256) -> Any:
    """The model's outputs on ``x`` (eval, no grad)."""
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(b) for b in batches(x, bs)])


def score(model: nn.Module, x: Any, y: Any, reference: Any) -> Score:
    """:class:`Score` of ``model`` on ``x`` against labels ``y`` (or None) and the float outputs ``reference``."""
    out = outputs(model, x)
    acc = None if y is None else float((out.argmax(1) == y).float().mean())
    agree = float((out.argmax(1) == reference.argmax(1)).float().mean()) if out.dim() > 1 else math.nan
    return Score(acc, agree, float(((out - reference) ** 2).mean()))


def calibrate(q: nn.Module, x: Any, bs: int) -> None:
    """Activation scales from statistics of ``x`` (``brevitas.graph.calibrate.calibration_mode``)."""
    import torch
    from brevitas.graph.calibrate import calibration_mode

    q.eval()
    with torch.no_grad(), calibration_mode(q):
        for b in batches(x, bs):
            q(b)


def gptq(q: nn.Module, x: Any, bs: int) -> None:
    """GPTQ weight rounding layer by layer (``brevitas.graph.gptq.gptq_mode``), quantised activations on."""
    import torch
    from brevitas.graph.gptq import gptq_mode

    q.eval()
    with torch.no_grad(), gptq_mode(q, use_quant_activations=True, create_weight_orig=False) as g:
        for _ in range(g.num_layers):
            for b in batches(x, bs):
                g.model(b)
            g.update()


def bias_correction(q: nn.Module, x: Any, bs: int) -> list[str]:
    """Bias correction (``brevitas.graph.calibrate.bias_correction_mode``); returns layers that got a new bias."""
    import torch
    from brevitas.graph.calibrate import bias_correction_mode

    from hwkit.compress.quantize.recipe import quant_layers

    before = {n for n, m in quant_layers(q) if m.bias is None}
    q.eval()
    with torch.no_grad(), bias_correction_mode(q):
        for b in batches(x, bs):
            q(b)
    return sorted(n for n, m in quant_layers(q) if n in before and m.bias is not None)


def _try(step: str, mode: str, q: nn.Module, fn: Callable[[nn.Module], Any], judge: Callable[[nn.Module], Score],
         log: PtqLog) -> tuple[nn.Module, Any]:
    """Run ``fn`` on a copy of ``q``; keep it when ``mode`` is on, or auto and the held-out score is not lower."""
    if mode in ("none", "off"):
        log.steps.append({"step": step, "applied": False, "why": "disabled"})
        return q, None
    before = judge(q)
    cand = copy.deepcopy(q)
    t0 = time.perf_counter()
    result = fn(cand)
    log.timing_s[step] = time.perf_counter() - t0
    after = judge(cand)
    keep = mode in ("on", "gptq") or after.key() >= before.key()
    log.steps.append({"step": step, "applied": keep, "val_before": before.__dict__, "val_after": after.__dict__,
                      "why": "requested" if mode in ("on", "gptq") else
                      ("held-out score not lower" if keep else "held-out score lower; left out")})
    return (cand, result) if keep else (q, None)


def qat(q: nn.Module, teacher: nn.Module, x: Any, y: Any, val: Callable[[nn.Module], Score], cfg: QuantSettings,
        log: PtqLog, say: Callable[[str], None]) -> nn.Module:
    """Quantisation-aware training with distillation from the float ``teacher``; keeps the best held-out epoch."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(cfg.seed)
    soft = outputs(teacher, x)
    best, best_key, best_epoch = copy.deepcopy(q.state_dict()), val(q).key(), 0
    opt = torch.optim.Adam(q.parameters(), lr=cfg.qat_lr)
    steps = cfg.qat_epochs * math.ceil(len(x) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.qat_lr, total_steps=max(steps, 1), pct_start=0.1)
    t = cfg.qat_temperature
    t0 = time.perf_counter()
    history = []
    for epoch in range(1, cfg.qat_epochs + 1):
        q.train()
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            out = q(x[idx])
            loss = F.kl_div(F.log_softmax(out / t, 1), F.softmax(soft[idx] / t, 1), reduction="batchmean") * t * t
            if y is not None:
                loss = 0.5 * loss + 0.5 * F.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        s = val(q)
        history.append({"epoch": epoch, "train_loss": total / len(x), "val": s.__dict__})
        shown = (f"accuracy {s.accuracy * 100:.2f} %" if s.accuracy is not None
                 else f"agreement {s.agreement * 100:.2f} %")
        say(f"QAT epoch {epoch}: loss {total / len(x):.4f}, held-out {shown}")
        if s.key() > best_key:
            best, best_key, best_epoch = copy.deepcopy(q.state_dict()), s.key(), epoch
    q.load_state_dict(best)
    q.eval()
    log.timing_s["qat"] = time.perf_counter() - t0
    log.steps.append({"step": "qat", "applied": True, "epochs": cfg.qat_epochs, "best_epoch": best_epoch,
                      "why": "distillation from the float model" + (" + cross-entropy" if y is not None else ""),
                      "history": history})
    return q


def run_ptq(float_model: nn.Module, recipe: Any, calib_x: Any, calib_y: Any, val_x: Any, val_y: Any,
            cfg: QuantSettings, say: Callable[[str], None] = lambda _s: None) -> tuple[nn.Module, Any, PtqLog]:
    """Quantise ``float_model`` under ``recipe``: rewrite, calibrate, GPTQ/bias correction (as configured), QAT.

    Returns the quantised module, the recipe (with the layers bias correction added a bias to) and the log.
    """
    from dataclasses import replace

    from hwkit.compress.quantize.recipe import quantize_float

    log = PtqLog()
    t0 = time.perf_counter()
    q = quantize_float(float_model, recipe)
    log.timing_s["rewrite"] = time.perf_counter() - t0
    ref_val = outputs(float_model, val_x)

    def judge(m: nn.Module) -> Score:
        return score(m, val_x, val_y, ref_val)

    cx = calib_x[: cfg.calib_samples]
    t0 = time.perf_counter()
    calibrate(q, cx, cfg.batch_size)
    log.timing_s["calibrate"] = time.perf_counter() - t0
    log.steps.append({"step": "calibrate", "applied": True, "samples": len(cx), "val_after": judge(q).__dict__,
                      "why": "activation scales from calibration statistics"})
    say(f"calibrated on {len(cx)} samples")
    q, _ = _try("gptq", {"auto": "auto", "gptq": "gptq", "none": "none"}[cfg.weight_method], q,
                lambda m: gptq(m, cx[:GPTQ_SAMPLES], cfg.batch_size), judge, log)
    q, added = _try("bias_correction", cfg.bias_correction, q, lambda m: bias_correction(m, cx, cfg.batch_size),
                    judge, log)
    if added:
        recipe = replace(recipe, added_bias=tuple(added))
    if cfg.method == "qat" and cfg.qat_epochs > 0:
        q = qat(q, float_model, calib_x, calib_y, judge, cfg, log, say)
    return q.eval(), recipe, log
