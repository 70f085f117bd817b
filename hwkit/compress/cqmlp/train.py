"""Quantisation-aware training of the CQMLP CAN intrusion detector (``hwkit train cqmlp``).

Paper settings (Khandelwal & Shreejith, FPL 2023): Brevitas QAT, Adam, lr 1e-4, batch 128,
1000 epochs, keep the best-validation-loss model, 85:10:5 split. The paper says "binary
cross-entropy" with a 4-way softmax head; we use **CrossEntropy** on the logits (softmax +
negative log-likelihood), the multi-class loss that matches a softmax head.

Practical CPU defaults (see docs/cqmlp.md): per-output-channel weight scales, a one-cycle schedule
(linear warm-up over 15% of the steps to ``lr``, then cosine decay), lr 1e-3, batch 256, 10 epochs,
early stopping after 3 epochs without a better validation loss; the bundled example's recipe is in
examples/train_cqmlp.py. ``TrainConfig(schedule="constant", per_channel=False, lr=1e-4,
batch_size=128, epochs=1000)`` is the paper's schedule.

Distillation (docs/cqmlp.md, "Distillation and learned scales"): ``teacher`` (a trained CQMLP checkpoint,
normally the float twin) or ``distill`` (train the float twin first, ``model.teacher.pt``) adds
``kd_weight`` x T^2 x KL(teacher_T || student_T) to ``ce_weight`` x CE, with the teacher's logits computed
once per training window and cached for every epoch; ``feature_weight`` adds the MSE between the student's
and the teacher's hidden pre-activations (BatchNorm outputs, teacher run on the batch). ``init_from_teacher``
starts the student from the teacher's weights and anneals through ``pretrain_bits`` to ``bits``;
``weight_scaling="learned"`` learns the weight scales. ``device`` = cpu | cuda | auto.

Outputs, for ``--out model.pt``:

- ``model.pt``: a hwkit checkpoint (arch ``cqmlp``) of the best-validation-loss model, with golden
  inputs from the test split and meta (dataset, split, sizes, validation and test metrics);
- ``model.metrics.json``: the same metrics and the training history;
- ``model.png``: test confusion matrix and training curves;
- ``model.state.pt``: the training state after the last finished epoch (model, optimizer, epoch,
  best metric, history, RNG), which ``--resume`` continues from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hwkit.artifact import write_text_atomic
from hwkit.data.windows import CLASSES, DEFAULT_FRACTIONS, Split, Windows
from hwkit.errors import InputError

STATE_KEY = "hwkit_train_state"
TARGET_ACCURACY = 0.999
"""The paper's headline accuracy (99.9%); the time to first reach it on validation is recorded."""
EVAL_BATCH = 8192


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the ``paper`` values are in each field's note."""

    bits: int = 2
    """Weight and activation bit width (paper: 2; DSE over 2/3/4)."""
    depth: int = 4
    """Hidden layers taken from 256-128-64-32 (paper: 4)."""
    window: int = 4
    """Frames per input block, n (paper: 4 -> 40 input bytes)."""
    stride: int = 1
    """Window stride in frames (not stated in the paper; 1 = line-rate sliding window)."""
    split: str = "time"
    """time | random (paper: not stated, probably random)."""
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    """train/val/test fractions (paper: 0.85/0.10/0.05)."""
    epochs: int = 10
    """Maximum epochs (paper: 1000)."""
    batch_size: int = 256
    """Mini-batch size (paper: 128)."""
    lr: float = 1e-3
    """Adam learning rate (paper: 1e-4); the peak rate when ``schedule`` is ``onecycle``."""
    schedule: str = "onecycle"
    """constant | onecycle (linear warm-up over ``warmup`` of all steps to ``lr``, then cosine decay to ~0)."""
    warmup: float = 0.15
    """Fraction of the steps spent warming up (``onecycle`` only)."""
    weight_decay: float = 0.0
    """Adam L2 weight decay (paper: not stated; 0 = off)."""
    per_channel: bool = True
    """Per-output-channel weight scales (no extra learnable parameters)."""
    weight_scaling: str = "max"
    """Weight-scale statistic: max | mean absolute weight (``mean`` puts fewer ternary weights at 0)."""
    weight_values: str = "int"
    """int | full | pow2: the narrow symmetric b-bit grid (Brevitas default; ternary at 2 bits), every code of the
    b-bit type (at 2 bits {-2, -1, 0, 1}), or 0 and signed powers of two only (shift weights)."""
    patience: int = 3
    """Stop after this many epochs without a lower validation loss (0 = never stop early)."""
    pretrain_bits: tuple[int, ...] = ()
    """Progressive quantisation: before the ``epochs`` at ``bits``, train at each of these widths in turn (widest
    first, e.g. (8, 3)) for the matching ``pretrain_epochs``. Every stage starts from the previous stage's weights
    with a fresh Adam and its own one-cycle schedule (warm-up ``warmup`` in the first stage, at most
    ``STAGE_WARMUP`` in later ones). Only the final ``bits`` stage can be kept, stop early or reach the target.
    () = off."""
    pretrain_epochs: tuple[int, ...] = ()
    """Epochs of each ``pretrain_bits`` stage."""
    max_train_windows: int | None = None
    """Use a seeded random subset of the training windows of at most this size (None = all)."""
    seed: int = 0
    """Model initialisation, shuffling and subsampling seed."""
    threads: int = 1
    """torch intra-op threads. 1 is the fastest here for this small MLP, and 2 threads on a 2-core machine
    that is running anything else slow training down ~60x (measured: 26,000 vs 430 samples/s)."""
    teacher: str | None = None
    """Distillation: a trained CQMLP checkpoint (normally the float twin) whose logits teach this model."""
    distill: bool = False
    """Distillation from the float twin: train it first (``teacher_epochs``, written next to the output as
    ``*.teacher.pt`` and reused when it is already there for the same data and settings) unless ``teacher``
    names one."""
    teacher_epochs: int = 4
    """Epochs of the float twin that ``distill`` trains (same batch, lr and schedule)."""
    ce_weight: float = 1.0
    """Weight of the cross-entropy on the labels when distilling."""
    kd_weight: float = 1.0
    """Weight of the KL divergence to the teacher's temperature-softened outputs (times T^2, Hinton et al.)."""
    kd_temperature: float = 2.0
    """Softmax temperature T of the distillation term."""
    feature_weight: float = 0.0
    """Weight of hidden-feature matching: the mean squared error between the student's and the teacher's
    BatchNorm outputs (pre-activations) of every hidden layer, averaged over layers (0 = off)."""
    init_from_teacher: bool = False
    """Start from the teacher's weights (Linear and BatchNorm; the quantiser scales start from statistics of
    them), then train at ``pretrain_bits`` (annealing) and ``bits``."""
    float_twin: bool = False
    """Train the unquantised twin of the topology instead (the teacher that ``distill`` trains)."""
    init_from: str | None = None
    """Start from this trained CQMLP checkpoint (same topology, any width): every tensor whose name and shape match,
    quantiser scales included (a learned weight scale it lacks starts from statistics). Continues a finished model
    with another loss or schedule, e.g. a distillation tail after the bundled 2-bit run."""
    bn_recalibrate: int = 0
    """Before every validation, re-estimate the BatchNorm running statistics as the plain average over this many
    seeded training windows with the current weights (0 = off: the running averages of training, momentum 0.1)."""
    device: str = "cpu"
    """cpu | cuda | auto (cuda when torch sees a GPU)."""

    def arch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`hwkit.compress.cqmlp.model.build_cqmlp`."""
        kw: dict[str, Any] = {"bits": self.bits, "depth": self.depth, "window": self.window,
                              "n_classes": len(CLASSES)}
        if self.per_channel:
            kw["per_channel"] = True
        if self.weight_scaling != "max":
            kw["weight_scaling"] = self.weight_scaling
        if self.weight_values != "int":
            kw["weight_values"] = self.weight_values
        if self.float_twin:
            kw["float_twin"] = True
        return kw


# Settings that must match between a saved training state and a resumed run (others may change).
RESUME_FIXED = ("bits", "depth", "window", "stride", "split", "fractions", "batch_size", "max_train_windows", "seed",
                "per_channel", "weight_scaling", "weight_values", "pretrain_bits", "pretrain_epochs", "distill",
                "ce_weight", "kd_weight", "kd_temperature", "feature_weight", "init_from_teacher", "float_twin",
                "init_from")
SCHEDULES = ("constant", "onecycle")
DEVICES = ("cpu", "cuda", "auto")
_FIELD_DEFAULTS: dict[str, Any] = {"weight_scaling": "max", "weight_values": "int", "pretrain_bits": [],
                                   "pretrain_epochs": [], "distill": False, "ce_weight": 1.0, "kd_weight": 1.0,
                                   "kd_temperature": 2.0, "feature_weight": 0.0, "init_from_teacher": False,
                                   "float_twin": False, "init_from": None}
STAGE_WARMUP = 0.02
"""Warm-up fraction of every progressive-quantisation stage after the first (it starts from trained weights)."""


def stages_of(cfg: TrainConfig) -> list[tuple[int, int, float]]:
    """(bits, epochs, warm-up fraction) of every training stage: the ``pretrain_bits`` stages, then ``bits``."""
    pb, pe = tuple(cfg.pretrain_bits), tuple(cfg.pretrain_epochs)
    if len(pb) != len(pe):
        raise InputError(f"pretrain_bits {list(pb)} and pretrain_epochs {list(pe)} must have the same length")
    if any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8 for b in pb):
        raise InputError(f"pretrain_bits must be integers 1..8, got {list(pb)}")
    if any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in pe):
        raise InputError(f"pretrain_epochs must be integers >= 1, got {list(pe)}")
    return [(b, e, cfg.warmup if i == 0 else min(cfg.warmup, STAGE_WARMUP))
            for i, (b, e) in enumerate(zip((*pb, cfg.bits), (*pe, cfg.epochs), strict=True))]


def stage_at(stages: list[tuple[int, int, float]], epoch: int) -> tuple[int, int]:
    """(stage index, epochs before that stage) of 1-based global ``epoch``; epochs past the end are in the last."""
    before = 0
    for i, (_, e, _) in enumerate(stages[:-1]):
        if epoch <= before + e:
            return i, before
        before += e
    return len(stages) - 1, before


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total``."""
    if cfg.schedule == "constant" or total <= 0:
        return cfg.lr
    import math

    warm = max(1, int(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (0.04 + 0.96 * step / warm)
    frac = min(1.0, (step - warm) / max(1, total - warm))
    return cfg.lr * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * frac)))


class TrainProgress(Protocol):
    """What the trainer reports while it runs."""

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batches_done(self, n: int) -> None: ...
    def epoch_done(self, row: dict[str, Any]) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


class RichTrainProgress:
    """A rich progress bar per epoch and one line per finished epoch, on stderr."""

    def __init__(self) -> None:
        import sys

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=sys.stderr)
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=self.console, transient=True)
        self._task: Any = None
        self._progress.start()

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        """New bar for the epoch."""
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(f"epoch {epoch}/{epochs}", total=batches)

    def batches_done(self, n: int) -> None:
        """Advance."""
        self._progress.advance(self._task, n)

    def epoch_done(self, row: dict[str, Any]) -> None:
        """One summary line."""
        best = " [green]best[/]" if row["best"] else ""
        self._progress.console.print(
            f"  epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val acc {row['val_accuracy'] * 100:.3f}%  {row['samples_per_s']:,.0f} samples/s{best}", highlight=False)

    def note(self, text: str) -> None:
        """A line of text."""
        self._progress.console.print(text, highlight=False)

    def stop(self) -> None:
        """Finish."""
        self._progress.stop()


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...] = CLASSES,
                           ) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/FNR, benign FPR and the confusion matrix (rows = true)."""
    k = len(classes)
    cm = np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)
    total = int(cm.sum())
    per: dict[str, dict[str, float | int]] = {}
    for i, name in enumerate(classes):
        tp = int(cm[i, i])
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[name] = {"precision": precision, "recall": recall, "f1": f1,
                     "fnr": 1 - recall if support else 0.0, "support": support}
    benign = int(cm[0].sum())
    return {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "misclassified": int(total - np.trace(cm)),
        "samples": total,
        "per_class": per,
        "benign_fpr": float((benign - cm[0, 0]) / benign) if benign else 0.0,
        "benign_false_positives": int(benign - cm[0, 0]),
        "confusion": cm.tolist(),
        "classes": list(classes),
    }


def fingerprint(split: Split) -> str:
    """A hash of the split's windows and labels (a resumed run must see the same data)."""
    h = hashlib.sha256()
    for part in (split.train, split.val, split.test):
        h.update(np.ascontiguousarray(part.x).data)
        h.update(np.ascontiguousarray(part.y).data)
    return h.hexdigest()[:16]


def _evaluate(model: Any, w: Windows, device: Any = "cpu") -> tuple[float, np.ndarray]:
    import torch

    model.eval()
    preds = []
    loss = 0.0
    with torch.no_grad():
        for i in range(0, len(w), EVAL_BATCH):
            xb = torch.from_numpy(w.x[i:i + EVAL_BATCH]).float().to(device)
            yb = torch.from_numpy(w.y[i:i + EVAL_BATCH]).to(device)
            logits = model(xb)
            loss += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            preds.append(logits.argmax(1).cpu().numpy())
    return loss / max(len(w), 1), np.concatenate(preds) if preds else np.zeros(0, np.int64)


def resolve_device(name: str) -> Any:
    """The torch device for ``--device cpu|cuda|auto`` (auto: cuda when torch sees a GPU, else cpu)."""
    import torch

    if name not in DEVICES:
        raise InputError(f"device must be one of {DEVICES}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA GPU here (use --device cpu or auto)")
    return torch.device(name)


def load_teacher(path: Path, window: int) -> Any:
    """A trained CQMLP checkpoint (float twin or quantised) as an eval-mode module; read with
    ``weights_only=True`` (no pickled code)."""
    import pickle

    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no teacher checkpoint there (train one with --distill or hwkit train cqmlp)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("arch") != "cqmlp" or "state_dict" not in ckpt:
        raise InputError(f"{path}: not a hwkit CQMLP checkpoint (arch 'cqmlp' with a state_dict)")
    kwargs = dict(ckpt.get("arch_kwargs") or {})
    if int(kwargs.get("window", 4)) != window:
        raise InputError(f"{path}: the teacher reads {kwargs.get('window', 4)}-frame windows, this run {window}")
    try:
        teacher = build_cqmlp(**kwargs)
        teacher.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: cannot rebuild the teacher ({str(exc).splitlines()[0][:160]})") from None
    return teacher.eval()


def teacher_outputs(teacher: Any, x: np.ndarray, device: Any = "cpu") -> Any:
    """The teacher's logits for every window of ``x`` (uint8), computed once (float32 tensor, n x classes)."""
    import torch

    teacher.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), EVAL_BATCH):
            out.append(teacher(torch.from_numpy(x[i:i + EVAL_BATCH]).float().to(device)).float())
    return torch.cat(out) if out else torch.zeros(0)


def distill_loss(logits: Any, labels: Any, teacher_logits: Any, ce_weight: float = 1.0, kd_weight: float = 1.0,
                 temperature: float = 2.0) -> Any:
    """``ce_weight`` x CE(labels) + ``kd_weight`` x T^2 x KL(teacher_T || student_T), the softened-softmax
    distillation loss of Hinton et al. (T^2 keeps the gradient scale independent of T)."""
    import torch.nn.functional as F  # noqa: N812

    loss = ce_weight * F.cross_entropy(logits, labels) if ce_weight else logits.new_zeros(())
    if kd_weight:
        t = float(temperature)
        kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1), reduction="batchmean",
                      log_target=True)
        loss = loss + kd_weight * t * t * kl
    return loss


def feature_taps(model: Any) -> tuple[list[Any], list[Any]]:
    """Forward hooks on every BatchNorm1d of ``model``: (list the outputs land in, hook handles)."""
    from torch import nn

    feats: list[Any] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: feats.append(out))
               for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    return feats, handles


def feature_loss(student: list[Any], teacher: list[Any]) -> Any:
    """Mean over hidden layers of the MSE between student and teacher pre-activations."""
    import torch.nn.functional as F  # noqa: N812

    if len(student) != len(teacher) or not student:
        raise InputError(f"feature matching needs the same hidden layers: student {len(student)}, "
                         f"teacher {len(teacher)}")
    return sum(F.mse_loss(s, t.detach()) for s, t in zip(student, teacher, strict=True)) / len(student)


def golden_from(w: Windows, per_class: int = 64) -> np.ndarray:
    """Up to ``per_class`` test windows of every class present (uint8 values as float32), spread over
    each class's windows and interleaved class by class, so that the first few (``hwkit compile``
    verifies the first ``--golden-batch``, default 32) already cover every class."""
    picks = []
    for c in range(len(CLASSES)):
        where = np.flatnonzero(w.y == c)
        if len(where) > per_class:
            where = where[np.linspace(0, len(where) - 1, per_class).astype(np.int64)]
        picks.append(where)
    idx = [int(p[i]) for i in range(per_class) for p in picks if i < len(p)]
    return w.x[np.asarray(idx, np.int64)].astype(np.float32)


@dataclass(frozen=True)
class TrainResult:
    """The outcome of a training run."""

    checkpoint: Path
    """The hwkit checkpoint (best validation loss)."""
    metrics_path: Path
    """metrics.json next to it."""
    plot_path: Path | None
    """The PNG (None if matplotlib failed to draw)."""
    state_path: Path
    """The training state for --resume."""
    summary: dict[str, Any]
    """Everything in metrics.json."""


def paths_for(out: Path) -> tuple[Path, Path, Path]:
    """(metrics.json, png, state) paths that go with checkpoint ``out``."""
    stem = out.with_suffix("")
    return Path(f"{stem}.metrics.json"), Path(f"{stem}.png"), Path(f"{stem}.state.pt")


def _state_problem(state: Any) -> str | None:
    """What is wrong with a loaded training state (a field missing, of the wrong type or not finite), or None."""
    import torch

    if not isinstance(state, dict) or state.get(STATE_KEY) != 1:
        return f"missing '{STATE_KEY}': 1"

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    checks: list[tuple[str, bool]] = [
        ("config", isinstance(state.get("config"), dict)),
        ("data_fingerprint", isinstance(state.get("data_fingerprint"), str)),
        ("epoch", count(state.get("epoch"))), ("bad_epochs", count(state.get("bad_epochs"))),
        ("samples", count(state.get("samples"))),
        ("train_s", isinstance(state.get("train_s"), int | float) and not isinstance(state.get("train_s"), bool)
         and math.isfinite(state["train_s"]) and state["train_s"] >= 0),
        ("model", isinstance(state.get("model"), dict)
         and all(isinstance(v, torch.Tensor) for v in state["model"].values())),
        ("optimizer", isinstance(state.get("optimizer"), dict)),
        ("rng", isinstance(state.get("rng"), torch.Tensor) and state["rng"].dtype == torch.uint8),
        ("history", isinstance(state.get("history"), list) and all(isinstance(r, dict) for r in state["history"])),
        ("best", isinstance(state.get("best"), dict) and isinstance(state["best"].get("val_loss"), float)
         and not math.isnan(state["best"]["val_loss"]) and count(state["best"].get("epoch"))),
        ("time_to_target", state.get("time_to_target") is None or isinstance(state.get("time_to_target"), dict)),
    ]
    for name, ok in checks:
        if not ok:
            return f"field '{name}' is missing, of the wrong type or not a finite number"
    for name, t in state["model"].items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"tensor 'model.{name}' holds non-finite values (NaN/Inf)"
    return None


def read_state(path: Path) -> dict[str, Any]:
    """Load a training state for --resume and check every field it holds (before any work starts)."""
    import torch

    if not path.is_file():
        raise InputError(f"{path}: no training state to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only loading runs no code; a damaged file surfaces as many types
        text = str(exc).strip().splitlines()
        raise InputError(f"{path}: not a readable training state ({text[0][:120] if text else type(exc).__name__})"
                         ) from None
    problem = _state_problem(state)
    if problem:
        raise InputError(f"{path}: not a usable hwkit training state ({problem})")
    return dict(state)


def _load_state(path: Path, cfg: TrainConfig, fp: str) -> dict[str, Any]:
    state = read_state(path)
    saved = state["config"]
    for name in RESUME_FIXED:
        now = getattr(cfg, name)
        then = saved.get(name, _FIELD_DEFAULTS.get(name))  # states saved before a field existed used its default
        if (list(now) if isinstance(now, tuple) else now) != (list(then) if isinstance(then, tuple) else then):
            raise InputError(f"{path}: cannot resume, '{name}' was {then!r} in the saved run and is {now!r} now")
    if state["data_fingerprint"] != fp:
        raise InputError(f"{path}: cannot resume, the data differ from the saved run's "
                         f"(fingerprint {state['data_fingerprint']} vs {fp})")
    return state


def _plot(path: Path, test: dict[str, Any], history: list[dict[str, Any]], title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
    cm = np.asarray(test["confusion"])
    ax0.imshow(np.log10(cm + 1), cmap="Blues")
    ax0.set_xticks(range(len(CLASSES)), CLASSES)
    ax0.set_yticks(range(len(CLASSES)), CLASSES)
    ax0.set_xlabel("predicted")
    ax0.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax0.text(j, i, f"{cm[i, j]:,}", ha="center", va="center", fontsize=8,
                     color="white" if cm[i, j] > cm.max() / 10 else "black")
    ax0.set_title(f"test confusion (accuracy {test['accuracy'] * 100:.3f}%)")
    ep = [r["epoch"] for r in history]
    ax1.plot(ep, [r["train_loss"] for r in history], label="train loss")
    ax1.plot(ep, [r["val_loss"] for r in history], label="val loss")
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax2 = ax1.twinx()
    ax2.plot(ep, [100 * r["val_accuracy"] for r in history], "g.-", label="val accuracy %")
    ax2.set_ylabel("val accuracy %")
    ax1.legend(loc="upper left")
    ax2.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def train_cqmlp(split: Split, cfg: TrainConfig, out: Path, data_desc: dict[str, Any],
                progress: TrainProgress | None = None, resume: Path | None = None) -> TrainResult:
    """Train, validate every epoch, keep the best-validation-loss model, stop early, test, save."""
    import torch

    from hwkit.compress.cqmlp.model import build_cqmlp, count_learnable

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics_path, plot_path, state_path = paths_for(out)
    if len(split.train) == 0 or len(split.val) == 0 or len(split.test) == 0:
        raise InputError(f"too little data to train: split sizes {split.sizes()}")
    train_w = split.train
    if cfg.max_train_windows is not None and len(train_w) > cfg.max_train_windows:
        pick = np.random.default_rng(cfg.seed).choice(len(train_w), cfg.max_train_windows, replace=False)
        train_w = train_w.take(np.sort(pick))
    if cfg.init_from is not None and cfg.init_from_teacher:
        raise InputError("--init-from and --init-from-teacher both set the starting weights; give one")
    fp = fingerprint(split)
    device = resolve_device(cfg.device)
    teacher_path = _teacher_for(split, cfg, out, data_desc, progress, fp)

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    stages = stages_of(cfg)

    def build(bits: int) -> Any:
        try:
            return build_cqmlp(**replace(cfg, bits=bits).arch_kwargs())
        except ValueError as exc:  # bits out of range, pow2 weights below 2 bits, ...
            raise InputError(f"cannot build the CQMLP: {exc}") from None

    model = build(cfg.bits)  # checks the final model's settings first
    stage = 0
    if stages[0][0] != cfg.bits:
        model = build(stages[0][0])
    if cfg.schedule not in SCHEDULES:
        raise InputError(f"schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")
    teacher: Any = None
    if teacher_path is not None:
        teacher = load_teacher(teacher_path, cfg.window)
        if cfg.init_from_teacher:
            init_from(model, teacher, teacher_path)
    elif cfg.init_from_teacher:
        raise InputError("--init-from-teacher needs a teacher (--teacher FILE or --distill)")
    if cfg.init_from is not None:
        init_from_checkpoint(model, Path(cfg.init_from))
    recal_x = None
    if cfg.bn_recalibrate:
        k = min(cfg.bn_recalibrate, len(train_w))
        # in random order: batches of consecutive windows would miss the variance between stretches of a capture
        recal_x = train_w.x[np.random.default_rng(cfg.seed + 1).choice(len(train_w), k, replace=False)]
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_loss": float("inf"), "epoch": 0, "state_dict": None, "val_accuracy": 0.0}
    start_epoch, bad_epochs, train_s, samples = 0, 0, 0.0, 0
    time_to_target: dict[str, Any] | None = None
    if resume is not None:
        state = _load_state(resume, cfg, fp)
        stage = stage_at(stages, max(1, int(state["epoch"])))[0]
        if stages[stage][0] != stages[0][0]:
            model = build(stages[stage][0]).to(device)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            text = str(exc).strip().splitlines()
            raise InputError(f"{resume}: the saved model, optimiser or RNG state does not fit this run "
                             f"({text[0][:120] if text else type(exc).__name__})") from None
        for group in opt.param_groups:
            group["lr"] = cfg.lr
        history, best = list(state["history"]), dict(state["best"])
        start_epoch, bad_epochs = int(state["epoch"]), int(state["bad_epochs"])
        train_s, samples = float(state["train_s"]), int(state["samples"])
        time_to_target = state.get("time_to_target")
        if progress:
            progress.note(f"resuming after epoch {start_epoch} (best val loss {best['val_loss']:.5f} "
                          f"at epoch {best['epoch']})")

    x_train = torch.from_numpy(train_w.x).to(device)
    y_train = torch.from_numpy(train_w.y).to(device)
    n = len(train_w)
    t_logits = None
    t_feats: list[Any] = []
    s_feats: list[Any] = []
    if teacher is not None:
        teacher.to(device)
        t0 = time.perf_counter()
        t_logits = teacher_outputs(teacher, train_w.x, device)  # once per window, reused every epoch
        if progress:
            t_acc = float((t_logits.argmax(1).cpu().numpy() == train_w.y).mean())
            progress.note(f"teacher {teacher_path}: logits of {n:,} training windows cached in "
                          f"{time.perf_counter() - t0:.1f} s (teacher training accuracy {t_acc * 100:.3f}%)")
        if cfg.feature_weight:
            t_feats, _ = feature_taps(teacher)
    batches = (n + cfg.batch_size - 1) // cfg.batch_size
    total_epochs = sum(e for _, e, _ in stages)  # a resumed run with more epochs stretches the last stage's schedule
    meta_base = {
        "dataset": data_desc.get("name", "CAN windows"), "data": data_desc, "split": split.describe(),
        "train_windows_used": n, "classes": list(CLASSES), "learnable_parameters": count_learnable(model),
        "config": _plain(asdict(cfg)), "data_fingerprint": fp, "device": str(device),
        "loss": (f"{cfg.ce_weight:g} x CrossEntropy + {cfg.kd_weight:g} x T^2 x KL(teacher || student) at T = "
                 f"{cfg.kd_temperature:g}" + (f" + {cfg.feature_weight:g} x hidden-feature MSE"
                                              if cfg.feature_weight else "")
                 if teacher is not None else "CrossEntropy (softmax head)"),
    }
    if teacher_path is not None:
        meta_base["teacher"] = str(teacher_path)
    stopped = "max epochs"
    for epoch in range(start_epoch + 1, total_epochs + 1):
        if cfg.patience and bad_epochs >= cfg.patience:
            stopped = f"early stop: no better val loss for {cfg.patience} epochs"
            break
        now, before = stage_at(stages, epoch)
        if now != stage:  # next progressive-quantisation stage: the same weights at the next width, a fresh Adam
            narrower = build(stages[now][0]).to(device)
            narrower.load_state_dict(model.state_dict())
            model, stage = narrower, now
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            if progress:
                progress.note(f"stage {stage + 1}/{len(stages)}: {stages[stage][0]}-bit weights and activations")
        stage_cfg = replace(cfg, warmup=stages[stage][2])
        stage_steps = stages[stage][1] * batches
        final = stage == len(stages) - 1  # only the model at the target width is kept, stops early or is timed
        model.train()
        taps: list[Any] = []
        if cfg.feature_weight and teacher is not None:  # hooks only while training (not in evaluation)
            s_feats, taps = feature_taps(model)
        if progress:
            progress.epoch_started(epoch, total_epochs, batches)
        perm = torch.randperm(n, generator=gen)
        t0 = time.perf_counter()
        loss_sum = 0.0
        for b in range(batches):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            if device.type != "cpu":
                idx = idx.to(device)
            xb, yb = x_train[idx].float(), y_train[idx]
            for group in opt.param_groups:
                group["lr"] = lr_at(stage_cfg, (epoch - 1 - before) * batches + b, stage_steps)
            opt.zero_grad(set_to_none=True)
            s_feats.clear()
            logits = model(xb)
            if t_logits is None:
                loss = torch.nn.functional.cross_entropy(logits, yb)
            else:
                loss = distill_loss(logits, yb, t_logits[idx], cfg.ce_weight, cfg.kd_weight, cfg.kd_temperature)
                if cfg.feature_weight:
                    t_feats.clear()
                    with torch.no_grad():
                        teacher(xb)
                    loss = loss + cfg.feature_weight * feature_loss(s_feats, t_feats)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            if progress and (b % 20 == 19 or b == batches - 1):
                progress.batches_done(20 if b % 20 == 19 else (b % 20) + 1)
        dt = time.perf_counter() - t0
        for h in taps:
            h.remove()
        s_feats.clear()
        train_s += dt
        samples += n
        if recal_x is not None:
            recalibrate_bn(model, recal_x, device)
        val_loss, val_pred = _evaluate(model, split.val, device)
        val_acc = float((val_pred == split.val.y).mean())
        improved = final and val_loss < best["val_loss"]
        row = {"epoch": epoch, "train_loss": loss_sum / n, "val_loss": val_loss, "val_accuracy": val_acc,
               "samples_per_s": n / dt, "train_s": train_s, "lr_end": opt.param_groups[0]["lr"], "best": improved,
               "bits": stages[stage][0]}
        history.append(row)
        if final and time_to_target is None and val_acc >= TARGET_ACCURACY:
            time_to_target = {"epoch": epoch, "train_s": train_s, "samples": samples}
        if improved:
            best = {"val_loss": val_loss, "epoch": epoch, "val_accuracy": val_acc,
                    "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            bad_epochs = 0
            _save_checkpoint(out, cfg, best, split, meta_base | {"best_epoch": epoch, "val_loss": val_loss,
                                                                  "val_accuracy": val_acc})
        elif final:
            bad_epochs += 1
        state_tmp = state_path.with_name(f".{state_path.name}.tmp")  # a reader never sees half a state
        torch.save({STATE_KEY: 1, "config": _plain(asdict(cfg)), "data_fingerprint": fp, "epoch": epoch,
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": gen.get_state(),
                    "best": best, "history": history, "bad_epochs": bad_epochs, "train_s": train_s,
                    "samples": samples, "time_to_target": time_to_target}, state_tmp)
        os.replace(state_tmp, state_path)
        if progress:
            progress.epoch_done(row)
    else:
        if cfg.patience and bad_epochs >= cfg.patience:
            stopped = f"early stop: no better val loss for {cfg.patience} epochs"

    if best["state_dict"] is None:
        raise InputError(f"nothing to save: the run already finished {start_epoch} epochs (raise --epochs)")
    model.load_state_dict(best["state_dict"])
    _, test_pred = _evaluate(model, split.test, device)
    _, val_pred = _evaluate(model, split.val, device)
    test_m = classification_metrics(split.test.y, test_pred)
    val_m = classification_metrics(split.val.y, val_pred)
    summary = meta_base | {
        "best_epoch": best["epoch"], "epochs_run": len(history), "stopped": stopped,
        "metrics": {"val": val_m, "test": test_m},
        "train_samples_per_s": samples / train_s if train_s else 0.0, "train_s": train_s,
        "time_to_val_accuracy_999": time_to_target, "history": history,
    }
    meta = {k: v for k, v in summary.items() if k != "history"}
    # the HTML report draws meta["metrics"]["confusion_matrix"] with meta["metrics"]["classes"] (test split)
    meta["metrics"] = {"split": "test", "accuracy": test_m["accuracy"], "samples": test_m["samples"],
                       "confusion_matrix": test_m["confusion"], "classes": test_m["classes"],
                       "benign_fpr": test_m["benign_fpr"], "val": val_m, "test": test_m}
    _save_checkpoint(out, cfg, best, split, meta)
    write_text_atomic(metrics_path, json.dumps(_plain(summary), indent=2) + "\n")
    kind = "float twin" if cfg.float_twin else f"w{cfg.bits}a{cfg.bits}"
    title = f"CQMLP {kind} depth {cfg.depth}, {split.mode} split, {len(split.test):,} test windows"
    drawn = _plot(plot_path, test_m, history, title)
    return TrainResult(out, metrics_path, drawn, state_path, _plain(summary))


def init_from(model: Any, teacher: Any, where: Path | str = "teacher") -> None:
    """Copy the teacher's Linear and BatchNorm tensors into ``model`` (same topology); the quantiser scales
    are left out, so they start from statistics of the copied weights (and of the first batches)."""
    src = teacher.state_dict()
    dst = model.state_dict()
    wrong = [k for k, v in src.items() if k not in dst or tuple(dst[k].shape) != tuple(v.shape)]
    if wrong:
        raise InputError(f"{where}: the teacher's layers do not match this CQMLP's ({', '.join(wrong[:3])})")
    model.load_state_dict({k: v for k, v in src.items()}, strict=False)


def init_from_checkpoint(model: Any, path: Path) -> None:
    """Copy every tensor of the CQMLP checkpoint ``path`` whose name and shape match into ``model`` (weights, biases,
    BatchNorm, quantiser scales); read with ``weights_only=True``. Every Linear weight must match."""
    src = load_teacher(path, _window_of(model)).state_dict()
    dst = model.state_dict()
    wrong = [k for k, v in dst.items() if k.endswith(".weight") and (k not in src or src[k].shape != v.shape)]
    if wrong:
        raise InputError(f"{path}: its layers do not match this CQMLP's ({', '.join(wrong[:3])})")
    # keys the model does not list yet are Brevitas' activation scales, created on their first statistics pass:
    # loading them sets them (and ends that pass)
    model.load_state_dict({k: v for k, v in src.items() if k not in dst or src[k].shape == dst[k].shape},
                          strict=False)


def _window_of(model: Any) -> int:
    from hwkit.compress.cqmlp.model import FRAME_BYTES

    first = next(m for m in model.modules() if hasattr(m, "in_features"))
    return int(first.in_features) // FRAME_BYTES


def recalibrate_bn(model: Any, x: np.ndarray, device: Any = "cpu", batch: int = 4096) -> None:
    """Re-estimate every BatchNorm1d's running mean and variance as the plain average over the windows ``x`` (uint8)
    with the model's current weights (training-mode batch statistics, no gradient); leaves ``model`` in eval mode.
    ``x`` should be in random order: the variance is averaged within batches.

    During quantisation-aware training the 2-bit weights keep flipping between levels, so the momentum averages
    lag the final weights; re-estimating them is free accuracy (docs/cqmlp.md)."""
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    model.eval()
    momenta = [b.momentum for b in bns]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # cumulative average
        b.train()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                model(torch.from_numpy(x[i:i + batch]).float().to(device))
    finally:
        for b, mo in zip(bns, momenta, strict=True):
            b.momentum = mo
        model.eval()


def _teacher_for(split: Split, cfg: TrainConfig, out: Path, data_desc: dict[str, Any],
                 progress: TrainProgress | None, fp: str) -> Path | None:
    """The teacher checkpoint of a distilling run: ``cfg.teacher``, or (``distill``) the float twin next to
    ``out``, trained here unless one for the same data is already there."""
    import torch

    if cfg.teacher is not None:
        return Path(cfg.teacher)
    if not cfg.distill:
        return None
    if cfg.float_twin:
        raise InputError("--distill trains a float twin as teacher; a float twin cannot distil from itself")
    path = out.with_name(out.with_suffix("").name + ".teacher.pt")
    tcfg = replace(cfg, float_twin=True, distill=False, teacher=None, init_from_teacher=False,
                   epochs=cfg.teacher_epochs, pretrain_bits=(), pretrain_epochs=(), patience=0,
                   feature_weight=0.0, weight_scaling="max")
    if path.is_file():
        try:
            meta = torch.load(path, map_location="cpu", weights_only=True).get("meta", {})
        except Exception:  # noqa: BLE001  # unreadable: retrain it
            meta = {}
        same = {k: v for k, v in _plain(asdict(tcfg)).items() if k not in ("device", "threads")}
        saved = {k: v for k, v in dict(meta.get("config") or {}).items() if k in same}
        if meta.get("data_fingerprint") == fp and meta.get("epochs_run") == cfg.teacher_epochs and saved == same:
            if progress:
                progress.note(f"float twin: reusing {path} (same data and settings, {cfg.teacher_epochs} epochs)")
            return path
    if progress:
        progress.note(f"float twin: training the teacher for {cfg.teacher_epochs} epochs -> {path}")
    train_cqmlp(split, tcfg, path, data_desc, progress)
    return path


def _save_checkpoint(out: Path, cfg: TrainConfig, best: dict[str, Any], split: Split, meta: dict[str, Any]) -> None:
    import torch

    ckpt = {
        "hwkit_checkpoint": 1, "arch": "cqmlp", "arch_kwargs": cfg.arch_kwargs(),
        "state_dict": best["state_dict"], "input_shape": [1, 10 * cfg.window], "input_dtype": "UINT8",
        "golden_inputs": torch.from_numpy(golden_from(split.test)), "meta": _plain(meta),
    }
    tmp = out.with_name(out.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out)


def _plain(obj: Any) -> Any:
    """Only plain JSON-able values (numpy scalars and tuples converted), for meta and JSON."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_from(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from the non-None entries of ``values`` that name its fields."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names and v is not None})


def prepare_data(data_dir: Path | None, synthetic_s: float | None, cfg: TrainConfig, synthetic_dir: Path | None = None,
                 strict: bool = False, progress: TrainProgress | None = None) -> tuple[Split, dict[str, Any]]:
    """Read a Car-Hacking directory (or generate a synthetic one and read it back), window and split."""
    import tempfile

    from hwkit.data.synth import SynthConfig, write_synthetic_dataset
    from hwkit.data.windows import load_directory, split_windows

    desc: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hwkit-can-") as tmp:
        if data_dir is None:
            assert synthetic_s is not None
            target = Path(synthetic_dir) if synthetic_dir else Path(tmp)
            scfg = SynthConfig(duration_s=synthetic_s, seed=cfg.seed)
            if progress:
                progress.note(f"generating synthetic Car-Hacking data: {synthetic_s:g} s per file, seed {cfg.seed}")
            try:
                infos = write_synthetic_dataset(target, scfg)
            except ValueError as exc:  # e.g. too few seconds for the intrusion windows
                raise InputError(f"synthetic data of {synthetic_s:g} s per file: {exc}") from None
            desc = {"name": f"synthetic Car-Hacking-style ({synthetic_s:g} s per file, seed {cfg.seed})",
                    "synthetic": {"duration_s": synthetic_s, "seed": cfg.seed,
                                  "files": {k: v.to_json() for k, v in infos.items()}}}
            data_dir = target
        else:
            desc = {"name": f"Car-Hacking directory {data_dir}"}
        files, skipped = load_directory(Path(data_dir), strict=strict)
    for f in files:
        if progress:
            progress.note("  " + f.report.summary())
    desc["files"] = [f.report.to_json() | {"class": CLASSES[f.label]} for f in files]
    desc["skipped"] = skipped
    try:
        split = split_windows(files, cfg.window, cfg.stride, cfg.split, cfg.fractions, cfg.seed)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return split, desc
