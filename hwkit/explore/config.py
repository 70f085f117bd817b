"""The ``hwkit explore`` config file (TOML): search space, objectives, constraints, study settings.

Every field is checked when the file is read; a bad one raises :class:`ExploreConfigError` naming
the file and the field (``explore.toml: space.bits: ...``). Nothing here imports optuna or torch.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hwkit.errors import InputError


class ExploreConfigError(InputError):
    """An explore config file is missing, malformed, or asks for something hwkit cannot do."""


class ExploreError(InputError):
    """An exploration cannot go on: a study that does not match the config, no design to pick, ..."""


HIDDEN_BASE: tuple[int, ...] = (256, 128, 64, 32)
"""CQMLP's hidden widths (the paper's); ``width_scale`` scales them, ``depth`` takes the first ones."""
IN_FEATURES = 40
"""4 CAN frames x 10 bytes."""
N_CLASSES = 4

# metric -> (direction, needs a compile, unit, what it is)
METRICS: dict[str, tuple[str, bool, str, str]] = {
    "accuracy": ("maximize", False, "fraction", "validation accuracy of the best-validation-loss model"),
    "weight_kbit": ("minimize", False, "kbit", "weight memory: weights x bits / 1000 (analytical)"),
    "LUT": ("minimize", True, "count", "LUTs (FINN estimate)"),
    "BRAM_18K": ("minimize", True, "count", "BRAM_18K blocks (FINN estimate)"),
    "URAM": ("minimize", True, "count", "URAM blocks (FINN estimate)"),
    "DSP": ("minimize", True, "count", "DSP slices (FINN estimate)"),
    "latency_ms": ("minimize", True, "ms", "latency (FINN critical-path estimate / measured p50 on CPU)"),
    "throughput_fps": ("maximize", True, "frames/s", "throughput (FINN estimate / measured on CPU)"),
    "energy_mj": ("minimize", True, "mJ/inference", "PL+PS energy per inference, single-shot (analytical model)"),
    "op_energy_pj": ("minimize", False, "pJ/inference", "arithmetic energy per inference from operation counts by "
                     "weight value (mult / shift / add, 45 nm table; analytical)"),
}
"""Everything a trial can be scored on."""

HARDWARE_MODES = ("finn-estimate", "none")
SAMPLERS = ("nsga2", "tpe", "random")

SHIFTADD_MODES = ("none", "shift")
"""ShiftAdd modes a trial can take: ordinary integer weights, or power-of-two (shift) integer weights."""
_FLOAT_ONLY = ("bcq", "moe", "ps", "q")
_NO_SHIFTADD = "use space.shiftadd = [\"none\", \"shift\"] (power-of-two integer weights, trained in the loop)"
_NOT_YET = {
    "layer_bits": "per-layer bit widths: set space.per_layer_bits = true (every layer then picks its own weight "
                  "width from space.bits and activation width from space.act_bits)",
    "amp": "use space.amp_de (a list of ΔE values; 0 = no pruning)",
    "shiftadd_mode": _NO_SHIFTADD,
}


@dataclass(frozen=True)
class Space:
    """The choices a trial samples from (each a non-empty tuple; one value = fixed)."""

    bits: tuple[int, ...] = (2,)
    """Weight bit width of every QuantLinear, 1..8."""
    act_bits: tuple[int, ...] | None = None
    """Activation bit width of every QuantReLU, 1..8 (None: the same as ``bits``)."""
    depth: tuple[int, ...] = (4,)
    """Hidden layers, taken from 256-128-64-32 (1..4)."""
    width_scale: tuple[float, ...] = (1.0,)
    """Factor on the hidden widths (rounded to a multiple of 4, at least 4)."""
    target_fps: tuple[float, ...] | None = None
    """FINN folding target, frames/s (None: minimal folding)."""
    clock_ns: tuple[float, ...] | None = None
    """Clock period, ns (None: the board's)."""
    amp_de: tuple[float, ...] | None = None
    """AMP pruning of the trained model's hidden layers at these ΔE values (0: no pruning; None: off)."""
    shiftadd: tuple[str, ...] | None = None
    """ShiftAdd modes: ``none`` (every integer of the b-bit grid) and ``shift`` (0 and signed powers of two within
    the b-bit type, trained with log-domain rounding: every multiplication becomes a shift)."""
    per_layer_bits: bool = False
    """Mixed precision: every QuantLinear picks its own weight width from ``bits`` (parameters ``bits_h1`` ..
    ``bits_h<depth>`` and ``bits_out``) and every QuantReLU its own activation width from ``act_bits``
    (``act_bits_h1`` ..; without ``act_bits`` each hidden layer's activations take its weight width)."""


@dataclass(frozen=True)
class DataSettings:
    """The training data (the same for every trial)."""

    synthetic_seconds: float = 60.0
    """Seconds of synthetic Car-Hacking-style traffic per file (used when ``dir`` is None)."""
    dir: str | None = None
    """A directory of real Car-Hacking files instead of synthetic data."""
    split: str = "time"
    """time | random (see docs/cqmlp.md)."""
    seed: int = 0
    """Data generation, subsampling, initialisation and shuffling seed."""


@dataclass(frozen=True)
class TrainSettings:
    """Training settings shared by every trial (hwkit.compress.cqmlp.train.TrainConfig fields)."""

    epochs: int = 4
    """Maximum epochs per trial."""
    batch_size: int = 256
    """Mini-batch size."""
    lr: float = 1e-3
    """Adam learning rate."""
    patience: int = 2
    """Early stop after this many epochs without a lower validation loss (0 = off)."""
    max_train_windows: int | None = 50_000
    """Seeded random subset of the training windows (None = all)."""


@dataclass(frozen=True)
class Constraints:
    """Which designs count (infeasible trials stay in the study but never reach the front)."""

    fits: bool = False
    """The design must fit the part (FINN estimate against the board's resources)."""
    accuracy_min: float | None = None
    """Lowest acceptable validation accuracy, 0..1."""
    max: tuple[tuple[str, float], ...] = ()
    """Upper limits on minimised metrics, from ``<metric>_max`` keys (e.g. LUT_max = 20000)."""


@dataclass(frozen=True)
class Pruning:
    """Stop hopeless trials early (the study is multi-objective, so hwkit applies this rule itself)."""

    after_epoch: int = 1
    """First epoch after which the rule applies."""
    margin: float = 0.10
    """Prune when validation accuracy < accuracy_min - margin (needs constraints.accuracy_min)."""


@dataclass(frozen=True)
class StudySettings:
    """The Optuna study."""

    name: str | None = None
    """Study name in the storage (default: the config file's stem)."""
    sampler: str = "nsga2"
    """nsga2 (NSGA-II, constraint-aware) | tpe (multi-objective TPE) | random."""
    population: int = 8
    """NSGA-II population per generation (>= 2)."""
    seed: int | None = None
    """Sampler seed (None: nondeterministic; each worker gets its own stream anyway)."""
    heartbeat_s: int = 10
    """A running trial records a heartbeat every this many seconds."""
    grace_s: int = 30
    """A running trial without a heartbeat for this long is failed (its worker died)."""


@dataclass(frozen=True)
class ExploreConfig:
    """One design-space exploration."""

    source: str
    """The config file it was read from."""
    model: str
    """The model family explored (only ``cqmlp`` today)."""
    target: str
    """Board name or board .toml (``hwkit boards``)."""
    hardware: str
    """finn-estimate: compile every trial for hardware metrics; none: accuracy and analytical cost only."""
    trials: int
    """Budget: finished (complete + pruned) trials in the study, all workers together."""
    objectives: tuple[str, ...]
    """Metric names from :data:`METRICS`; ``accuracy`` is always one of them."""
    space: Space
    data: DataSettings
    train: TrainSettings
    constraints: Constraints
    pruning: Pruning
    study: StudySettings

    def directions(self) -> list[str]:
        """Optuna directions, in objective order."""
        return [METRICS[o][0] for o in self.objectives]

    def study_name(self) -> str:
        """The study's name in the storage."""
        return self.study.name or Path(self.source).stem

    def fingerprint(self) -> str:
        """A hash of what makes trials comparable (a study must not mix two different explorations)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        """The settings that must match between workers and runs of one study."""
        d = asdict(self)
        return {k: d[k] for k in ("model", "target", "hardware", "objectives", "space", "data", "train",
                                  "constraints", "pruning")}


def _err(src: str, field: str, msg: str) -> ExploreConfigError:
    return ExploreConfigError(f"{src}: {field}: {msg}")


def _table(src: str, doc: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise _err(src, key, f"must be a table ([{key}]), got {type(value).__name__}")
    for k in value:
        dotted = f"{key}.{k}"
        if k in _NOT_YET:
            raise _err(src, dotted, _NOT_YET[k])
        if k not in allowed:
            raise _err(src, dotted, f"unknown field; known: {', '.join(sorted(allowed))}")
    return value


def _int(src: str, field: str, v: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise _err(src, field, f"must be an integer {rng}, got {v!r}")
    return v


def _num(src: str, field: str, v: Any, lo: float = 0.0, lo_open: bool = True, hi: float | None = None) -> float:
    ok = not isinstance(v, bool) and isinstance(v, int | float)
    if ok:
        ok = (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
    if not ok:
        bound = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
        raise _err(src, field, f"must be a number {bound}, got {v!r}")
    return float(v)


def _bool(src: str, field: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _err(src, field, f"must be true or false, got {v!r}")
    return v


def _shiftadd_mode(src: str, field: str, v: Any) -> str:
    if v in SHIFTADD_MODES:
        return str(v)
    if v in _FLOAT_ONLY:
        raise _err(src, field, f"{v!r} re-parameterises float models (`hwkit shiftadd --mode {v}`); trials train "
                   "integer Brevitas CQMLPs, where the ShiftAdd mode is 'shift' (power-of-two integer weights)")
    raise _err(src, field, f"must be one of {', '.join(SHIFTADD_MODES)}, got {v!r}")


def _choices(src: str, field: str, v: Any, check: Any) -> tuple[Any, ...]:
    values = v if isinstance(v, list) else [v]
    if not values:
        raise _err(src, field, "needs at least one value")
    if any(isinstance(x, list | dict) for x in values):
        raise _err(src, field, "must be a value or a flat list of values")
    out = tuple(check(src, f"{field}", x) for x in values)
    if len(set(out)) != len(out):
        raise _err(src, field, f"lists a value twice: {values!r}")
    return out


def load_config(path: str | Path) -> ExploreConfig:
    """Read and check ``path``; every error names the file and the field."""
    p = Path(path)
    src = str(path)
    if not p.is_file():
        raise ExploreConfigError(f"{src}: explore config not found")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ExploreConfigError(f"{src}: not valid TOML ({exc})") from None
    return parse_config(doc, src)


def parse_config(doc: dict[str, Any], src: str = "<config>") -> ExploreConfig:
    """Check a parsed TOML document (see :func:`load_config`)."""
    from hwkit.board import non_finite_field

    bad = non_finite_field(doc)
    if bad:
        raise _err(src, bad, "must be a finite number (TOML nan/inf are not accepted)")
    top = {"model", "target", "hardware", "trials", "objectives", "space", "data", "train", "constraints",
           "pruning", "study"}
    for k in doc:
        if k in _NOT_YET:
            raise _err(src, k, _NOT_YET[k])
        if k not in top:
            raise _err(src, k, f"unknown field; known: {', '.join(sorted(top))}")
    model = doc.get("model", "cqmlp")
    if model != "cqmlp":
        raise _err(src, "model", f"only 'cqmlp' can be explored today, got {model!r}")
    target = doc.get("target")
    if not isinstance(target, str) or not target:
        raise _err(src, "target", "required: a board name (see `hwkit boards`) or a board .toml path")
    hardware = doc.get("hardware", "finn-estimate")
    if hardware not in HARDWARE_MODES:
        raise _err(src, "hardware", f"must be one of {', '.join(HARDWARE_MODES)}, got {hardware!r}")
    trials = _int(src, "trials", doc.get("trials", 20), 1)

    objectives = doc.get("objectives", ["accuracy", "LUT"])
    if not isinstance(objectives, list) or not all(isinstance(o, str) for o in objectives):
        raise _err(src, "objectives", f"must be a list of metric names, got {objectives!r}")
    for o in objectives:
        if o not in METRICS:
            raise _err(src, "objectives", f"unknown metric {o!r}; known: {', '.join(METRICS)}")
        if hardware == "none" and METRICS[o][1]:
            raise _err(src, "objectives", f"{o!r} needs a compile; hardware = \"none\" gives only "
                       f"{', '.join(m for m, v in METRICS.items() if not v[1])}")
    if len(set(objectives)) != len(objectives):
        raise _err(src, "objectives", f"lists a metric twice: {objectives!r}")
    if "accuracy" not in objectives or len(objectives) < 2:
        raise _err(src, "objectives", "needs 'accuracy' and at least one cost metric, e.g. [\"accuracy\", \"LUT\"]")

    sp = _table(src, doc, "space", {f for f in Space.__dataclass_fields__})
    def bits(s: str, f: str, x: Any) -> int:
        return _int(s, f, x, 1, 8)

    def depth(s: str, f: str, x: Any) -> int:
        return _int(s, f, x, 1, len(HIDDEN_BASE))

    def pos(s: str, f: str, x: Any) -> float:
        return _num(s, f, x)

    def nonneg(s: str, f: str, x: Any) -> float:
        return _num(s, f, x, 0.0, False)

    def scale(s: str, f: str, x: Any) -> float:
        return _num(s, f, x, 0.0, True, 4.0)

    space = Space(
        bits=_choices(src, "space.bits", sp.get("bits", 2), bits),
        act_bits=_choices(src, "space.act_bits", sp["act_bits"], bits) if "act_bits" in sp else None,
        depth=_choices(src, "space.depth", sp.get("depth", 4), depth),
        width_scale=_choices(src, "space.width_scale", sp.get("width_scale", 1.0), scale),
        target_fps=_choices(src, "space.target_fps", sp["target_fps"], pos) if "target_fps" in sp else None,
        clock_ns=_choices(src, "space.clock_ns", sp["clock_ns"], pos) if "clock_ns" in sp else None,
        amp_de=_choices(src, "space.amp_de", sp["amp_de"], nonneg) if "amp_de" in sp else None,
        per_layer_bits=_bool(src, "space.per_layer_bits", sp.get("per_layer_bits", False)),
        shiftadd=_choices(src, "space.shiftadd", sp["shiftadd"], _shiftadd_mode) if "shiftadd" in sp else None,
    )
    if space.shiftadd and "shift" in space.shiftadd and min(space.bits) < 2:
        raise _err(src, "space.shiftadd", "'shift' needs weights of at least 2 bits (0 and +-2^k), "
                   f"space.bits has {min(space.bits)}")
    if hardware == "none" and (space.target_fps or space.clock_ns):
        raise _err(src, "space.target_fps" if space.target_fps else "space.clock_ns",
                   "only means something when trials compile (hardware = \"finn-estimate\")")

    dt = _table(src, doc, "data", {f for f in DataSettings.__dataclass_fields__})
    if "dir" in dt and not isinstance(dt["dir"], str):
        raise _err(src, "data.dir", f"must be a directory path, got {dt['dir']!r}")
    if dt.get("split", "time") not in ("time", "random"):
        raise _err(src, "data.split", f"must be 'time' or 'random', got {dt.get('split')!r}")
    data = DataSettings(
        synthetic_seconds=_num(src, "data.synthetic_seconds", dt.get("synthetic_seconds", 60.0)),
        dir=dt.get("dir"), split=dt.get("split", "time"), seed=_int(src, "data.seed", dt.get("seed", 0), 0))

    tr = _table(src, doc, "train", {f for f in TrainSettings.__dataclass_fields__})
    mtw = tr.get("max_train_windows", TrainSettings.max_train_windows)
    train = TrainSettings(
        epochs=_int(src, "train.epochs", tr.get("epochs", 4), 1),
        batch_size=_int(src, "train.batch_size", tr.get("batch_size", 256), 1),
        lr=_num(src, "train.lr", tr.get("lr", 1e-3)),
        patience=_int(src, "train.patience", tr.get("patience", 2), 0),
        max_train_windows=None if mtw == 0 else _int(src, "train.max_train_windows", mtw, 1),
    )

    maxes = {f"{m}_max" for m, v in METRICS.items() if v[0] == "minimize"}
    ct = _table(src, doc, "constraints", {"fits", "accuracy_min"} | maxes)
    fits = _bool(src, "constraints.fits", ct.get("fits", False))
    if fits and hardware == "none":
        raise _err(src, "constraints.fits", "needs a compile (hardware = \"finn-estimate\")")
    acc_min = ct.get("accuracy_min")
    if acc_min is not None:
        acc_min = _num(src, "constraints.accuracy_min", acc_min, 0.0, False, 1.0)
    limits = []
    for key in sorted(k for k in ct if k in maxes):
        metric = key[: -len("_max")]
        if hardware == "none" and METRICS[metric][1]:
            raise _err(src, f"constraints.{key}", "needs a compile (hardware = \"finn-estimate\")")
        limits.append((metric, _num(src, f"constraints.{key}", ct[key], 0.0, False)))
    constraints = Constraints(fits=fits, accuracy_min=acc_min, max=tuple(limits))

    pr = _table(src, doc, "pruning", {f for f in Pruning.__dataclass_fields__})
    pruning = Pruning(after_epoch=_int(src, "pruning.after_epoch", pr.get("after_epoch", 1), 1),
                      margin=_num(src, "pruning.margin", pr.get("margin", 0.10), 0.0, False, 1.0))
    if pr and acc_min is None:
        raise _err(src, "pruning", "prunes against constraints.accuracy_min, which is not set")

    st = _table(src, doc, "study", {f for f in StudySettings.__dataclass_fields__})
    name = st.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise _err(src, "study.name", f"must be a non-empty string, got {name!r}")
    sampler = st.get("sampler", "nsga2")
    if sampler not in SAMPLERS:
        raise _err(src, "study.sampler", f"must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    seed = st.get("seed")
    study = StudySettings(
        name=name, sampler=sampler, population=_int(src, "study.population", st.get("population", 8), 2),
        seed=None if seed is None else _int(src, "study.seed", seed, 0),
        heartbeat_s=_int(src, "study.heartbeat_s", st.get("heartbeat_s", 10), 1),
        grace_s=_int(src, "study.grace_s", st.get("grace_s", 30), 1),
    )
    if study.grace_s <= study.heartbeat_s:
        raise _err(src, "study.grace_s", f"must be longer than study.heartbeat_s ({study.heartbeat_s}), "
                   f"got {study.grace_s}")
    return ExploreConfig(src, model, target, hardware, trials, tuple(objectives), space, data, train, constraints,
                         pruning, study)


def hidden_widths(depth: int, width_scale: float) -> tuple[int, ...]:
    """The hidden widths of a trial: the first ``depth`` of 256-128-64-32, scaled, multiples of 4."""
    return tuple(max(4, 4 * round(w * width_scale / 4)) for w in HIDDEN_BASE[:depth])


def weight_kbit(hidden: tuple[int, ...], bits: int | Sequence[int]) -> float:
    """Weight memory in kbit: every QuantLinear weight at its bit width (``bits``: one for all layers or one
    per layer, head last); biases and thresholds not counted."""
    widths = (IN_FEATURES, *hidden, N_CLASSES)
    per = [bits] * (len(widths) - 1) if isinstance(bits, int) else list(bits)
    if len(per) != len(widths) - 1:
        raise ValueError(f"weight_kbit: {len(widths) - 1} layers but {len(per)} bit widths")
    return sum(a * b * w for a, b, w in zip(widths, widths[1:], per)) / 1000.0
