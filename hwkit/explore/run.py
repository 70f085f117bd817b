"""Workers, trials and the chosen design of ``hwkit explore`` (Optuna is imported inside functions).

One study lives in one Optuna RDB storage: by default SQLite at ``OUT/explore.db``; with
``--storage postgresql://...`` any number of workers on any number of machines share it. A worker
loops: fail stale trials (heartbeat), stop when the budget of finished (complete + pruned) trials
is reached, wait while the remaining budget is held by running trials, else run one trial. A trial
first claims a budget slot (trials are numbered by the storage; a trial with ``budget`` unfailed
trials before it is dropped as FAIL "budget already reached"), samples its parameters, trains a
CQMLP variant (pruned after an epoch whose validation accuracy is hopeless), compiles it, and
stores everything in the trial's user attributes and under ``OUT/trials/<number>/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwkit.compress.cqmlp.train import TrainConfig, TrainResult
from hwkit.errors import HwkitError
from hwkit.explore.config import METRICS, ExploreConfig, ExploreError, hidden_widths, weight_kbit

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
MAX_FAILURES_IN_A_ROW = 3
"""A worker stops (with the last error) after this many failed trials in a row."""
POLL_S = 0.5
"""How often a waiting worker looks at the study again."""
OPEN_TRIES = 6
"""Attempts to open the storage and the study while other workers create them."""


@dataclass(frozen=True)
class TrialTrainConfig(TrainConfig):
    """TrainConfig plus the architecture choices a trial makes (hidden widths, activation bits)."""

    hidden: tuple[int, ...] | None = None
    """Hidden widths (None: the first ``depth`` of 256-128-64-32)."""
    act_bits: int | None = None
    """Activation bits (None: ``bits``)."""
    layer_bits: tuple[int, ...] | None = None
    """Weight bits per QuantLinear, head last (None: ``bits`` everywhere)."""
    layer_act_bits: tuple[int, ...] | None = None
    """Activation bits per QuantReLU (None: ``act_bits`` everywhere)."""

    def arch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of build_cqmlp, with the trial's widths and activation bits."""
        kw = super().arch_kwargs()
        if self.hidden is not None:
            kw["hidden"] = list(self.hidden)
        if self.act_bits is not None and self.act_bits != self.bits:
            kw["act_bits"] = self.act_bits
        if self.layer_bits is not None:
            kw["layer_bits"] = list(self.layer_bits)
        if self.layer_act_bits is not None:
            kw["layer_act_bits"] = list(self.layer_act_bits)
        return kw


class BudgetReached(Exception):
    """Raised inside a trial that started after the budget was already taken (it is marked FAIL)."""


@dataclass(frozen=True)
class WorkerResult:
    """What one worker did."""

    ran: int
    """Trials this worker finished (complete or pruned)."""
    failed: int
    """Trials of this worker that failed."""
    seconds: float
    """Wall time of the worker, data preparation included."""


def storage_url(out: Path, storage: str | None) -> str:
    """The storage URL: ``storage`` as given, or SQLite in ``out``."""
    if storage:
        if not storage.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg2://", "mysql")):
            raise ExploreError(f"--storage {storage!r}: expected an SQLAlchemy URL such as "
                               "postgresql://user@host:5432/db or sqlite:///path/explore.db")
        if storage.startswith("postgresql://"):
            # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; hwkit pins psycopg2-binary
            return "postgresql+psycopg2://" + storage[len("postgresql://"):]
        return storage
    return f"sqlite:///{(out / 'explore.db').resolve()}"


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def open_storage(url: str, cfg: ExploreConfig) -> Any:
    """An RDBStorage with heartbeats, so trials of killed workers are failed and do not block."""
    import optuna
    import sqlalchemy

    _quiet_optuna()
    # SQLite: several local workers share one file and wait for its lock
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(OPEN_TRIES):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=cfg.study.heartbeat_s,
                                              grace_period=cfg.study.grace_s)
        except sqlalchemy.exc.IntegrityError:
            # Workers starting together on a fresh database race to create optuna's tables: try again.
            if attempt == OPEN_TRIES - 1:
                raise ExploreError(f"--storage {_redact(url)}: could not create the study tables") from None
            time.sleep(0.5 * (attempt + 1))
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExploreError(f"--storage {_redact(url)}: cannot open the study storage ({first})") from None
    raise AssertionError("unreachable")


def _redact(url: str) -> str:
    """The URL without a password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else url
    return url


def _constraint_values(trial: Any) -> list[float]:
    values = trial.user_attrs.get("constraint_values")
    return [float(v) for v in values] if values else [1.0]


def make_sampler(cfg: ExploreConfig, worker_index: int = 0) -> Any:
    """The configured sampler; constraints go to NSGA-II/TPE so infeasible designs rank last."""
    import optuna

    seed = None if cfg.study.seed is None else cfg.study.seed + worker_index
    has_constraints = bool(cfg.constraints.fits or cfg.constraints.accuracy_min is not None or cfg.constraints.max)
    cons = _constraint_values if has_constraints else None
    if cfg.study.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=cfg.study.population, seed=seed, constraints_func=cons)
    if cfg.study.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=cons, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(cfg: ExploreConfig, url: str, worker_index: int = 0, create: bool = True) -> Any:
    """Create or load the study; refuse one that was created from a different config."""
    import optuna
    import sqlalchemy

    storage = open_storage(url, cfg)
    name = cfg.study_name()
    try:
        for attempt in range(OPEN_TRIES):
            try:
                if create:
                    study = optuna.create_study(storage=storage, study_name=name, directions=cfg.directions(),  # type: ignore[arg-type]
                                                sampler=make_sampler(cfg, worker_index), load_if_exists=True)
                else:
                    study = optuna.load_study(storage=storage, study_name=name,
                                              sampler=make_sampler(cfg, worker_index))
                break
            except sqlalchemy.exc.IntegrityError:  # two workers created the study at once: load it
                if attempt == OPEN_TRIES - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except KeyError:
        raise ExploreError(f"{_redact(url)}: no study named '{name}' (run `hwkit explore` first)") from None
    except ValueError as exc:
        raise ExploreError(f"{_redact(url)}: study '{name}' does not match {cfg.source} ({exc})") from None
    mine = cfg.fingerprint()
    theirs = study.user_attrs.get("hwkit_fingerprint")
    if theirs is None and create:
        study.set_user_attr("hwkit_fingerprint", mine)
        study.set_user_attr("hwkit_config", cfg.identity())
    elif theirs is not None and theirs != mine:
        old = study.user_attrs.get("hwkit_config", {})
        new = json.loads(json.dumps(cfg.identity()))
        diff = sorted(k for k in new if old.get(k) != new[k]) or ["?"]
        raise ExploreError(f"{cfg.source}: study '{name}' in {_redact(url)} was created from a different config "
                           f"({', '.join(diff)} differ); use another study.name or --study-name")
    if [d.name.lower() for d in study.directions] != cfg.directions():
        raise ExploreError(f"{cfg.source}: study '{name}' has directions "
                           f"{[d.name.lower() for d in study.directions]}, the config {cfg.directions()}")
    return study


def counts(study: Any) -> dict[str, int]:
    """Trials per state."""
    out = dict.fromkeys(STATES, 0)
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def check_target(cfg: ExploreConfig) -> Any:
    """The board, checked against the objectives (resources need an FPGA, energy needs power data)."""
    from hwkit.board import load_board

    board = load_board(cfg.target)
    if cfg.hardware == "none":
        return board
    if board.kind not in ("fpga", "cpu", "gpu"):
        raise ExploreError(f"{cfg.source}: target: '{board.name}' is a {board.kind} board; explore compiles for "
                           "fpga, cpu or gpu targets")
    needs_fpga = [o for o in (*cfg.objectives, *(m for m, _ in cfg.constraints.max))
                  if o in ("LUT", "BRAM_18K", "URAM", "DSP")]
    if cfg.constraints.fits:
        needs_fpga.append("constraints.fits")
    if needs_fpga and board.kind != "fpga":
        raise ExploreError(f"{cfg.source}: objectives: {', '.join(needs_fpga)} need an FPGA target, "
                           f"'{board.name}' is {board.kind}")
    if "energy_mj" in cfg.objectives and board.kind == "fpga" and board.power is None:
        raise ExploreError(f"{cfg.source}: objectives: energy_mj needs power data, and {board.source} has no "
                           "[power] table")
    return board


def prepare(cfg: ExploreConfig, log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """The data split every trial trains on (generated or read once per worker)."""
    from hwkit.compress.cqmlp.train import prepare_data

    base = TrainConfig(split=cfg.data.split, seed=cfg.data.seed)
    data_dir = Path(cfg.data.dir) if cfg.data.dir else None
    if data_dir is not None and not data_dir.is_dir():
        raise ExploreError(f"{cfg.source}: data.dir: {data_dir} is not a directory")
    split, desc = prepare_data(data_dir, None if data_dir else cfg.data.synthetic_seconds, base)
    s = split.sizes()
    log(f"data: {desc['name']}; {split.mode} split {s['train']:,} / {s['val']:,} / {s['test']:,} windows")
    return split, desc


def train_config(cfg: ExploreConfig, params: dict[str, Any]) -> TrialTrainConfig:
    """The training settings of a trial with ``params``."""
    depth = int(params["depth"])
    hidden = hidden_widths(depth, float(params["width_scale"]))
    layer_bits = layer_act_bits = None
    if "bits_out" in params:  # space.per_layer_bits
        layer_bits = (*(int(params[f"bits_h{i}"]) for i in range(1, depth + 1)), int(params["bits_out"]))
        layer_act_bits = tuple(int(params.get(f"act_bits_h{i}", params[f"bits_h{i}"])) for i in range(1, depth + 1))
        bits = act_bits = max(layer_bits)  # nominal (names and titles); the layers use their own widths
    else:
        bits = int(params["bits"])
        act_bits = int(params.get("act_bits", bits))
    t = cfg.train
    return TrialTrainConfig(
        bits=bits, depth=depth, split=cfg.data.split, epochs=t.epochs,
        batch_size=t.batch_size, lr=t.lr, patience=t.patience, max_train_windows=t.max_train_windows,
        seed=cfg.data.seed, threads=1, hidden=hidden, act_bits=act_bits, layer_bits=layer_bits,
        layer_act_bits=layer_act_bits, weight_values="pow2" if params.get("shiftadd") == "shift" else "int",
        # AMP slices weight rows; Brevitas per-channel weight scales have their shape fixed at construction,
        # so studies that prune train with per-tensor scales.
        per_channel=not cfg.space.amp_de)


def sample(trial: Any, cfg: ExploreConfig) -> dict[str, Any]:
    """Suggest every dimension of the space (fixed ones too, so params are complete)."""
    sp = cfg.space
    params: dict[str, Any] = {}
    if not sp.per_layer_bits:
        params["bits"] = trial.suggest_categorical("bits", list(sp.bits))
        if sp.act_bits is not None:
            params["act_bits"] = trial.suggest_categorical("act_bits", list(sp.act_bits))
    params["depth"] = trial.suggest_categorical("depth", list(sp.depth))
    if sp.per_layer_bits:
        # One parameter per layer position; a shallower trial leaves the deeper positions unset.
        for i in range(1, int(params["depth"]) + 1):
            params[f"bits_h{i}"] = trial.suggest_categorical(f"bits_h{i}", list(sp.bits))
            if sp.act_bits is not None:
                params[f"act_bits_h{i}"] = trial.suggest_categorical(f"act_bits_h{i}", list(sp.act_bits))
        params["bits_out"] = trial.suggest_categorical("bits_out", list(sp.bits))
    params["width_scale"] = trial.suggest_categorical("width_scale", list(sp.width_scale))
    if sp.target_fps is not None:
        params["target_fps"] = trial.suggest_categorical("target_fps", list(sp.target_fps))
    if sp.clock_ns is not None:
        params["clock_ns"] = trial.suggest_categorical("clock_ns", list(sp.clock_ns))
    if sp.amp_de is not None:
        params["amp_de"] = trial.suggest_categorical("amp_de", list(sp.amp_de))
    if sp.shiftadd is not None:
        params["shiftadd"] = trial.suggest_categorical("shiftadd", list(sp.shiftadd))
    return params


def amp_prune(checkpoint: Path, split: Any, delta_e: float, seed: int, out: Path) -> tuple[Path, dict[str, Any]]:
    """AMP-prune a trained CQMLP checkpoint (calibration: training windows; search: validation windows).

    Returns the pruned checkpoint (its ``hidden`` widths rewritten) and the prune report's summary.
    """
    import numpy as np
    import torch

    from hwkit.compress.amp.run import PruneData, configs_from, prune_model, save_pruned
    from hwkit.config import CompileSettings
    from hwkit.load import load_model

    loaded = load_model(checkpoint, CompileSettings())
    rng = np.random.default_rng(seed)
    tr = rng.choice(len(split.train.x), size=min(2048, len(split.train.x)), replace=False)
    va = rng.choice(len(split.val.x), size=min(1024, len(split.val.x)), replace=False)

    def t(a: Any, dtype: Any) -> Any:
        return torch.tensor(np.asarray(a), dtype=dtype)

    data = PruneData(t(split.train.x[tr], torch.float32), t(split.train.y[tr], torch.long),
                     t(split.val.x[va], torch.float32), t(split.val.y[va], torch.long),
                     t(split.test.x, torch.float32), t(split.test.y, torch.long),
                     f"CAN windows: {len(tr)} train (calibration), {len(va)} validation (search), test split")
    cfg, _ = configs_from({"delta_e": delta_e, "criterion": "ce"})
    pruned, report = prune_model(loaded.module, data, cfg)
    save_pruned(pruned, report, out, checkpoint, loaded)
    summary = {"widths": [b["width_after"] for b in report["blocks"]],
               "params_reduction": report["params"]["reduction"],
               "test_accuracy_after_prune": report["accuracy"]["after_prune"]}
    return out, summary


class _EpochWatch:
    """Training progress for a trial: records validation accuracy per epoch and prunes hopeless trials."""

    def __init__(self, trial: Any, threshold: float | None, after_epoch: int) -> None:
        self.trial, self.threshold, self.after_epoch = trial, threshold, after_epoch
        self.accuracies: list[float] = []

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        """Nothing to show."""

    def batches_done(self, n: int) -> None:
        """Nothing to show."""

    def note(self, text: str) -> None:
        """Nothing to show."""

    def stop(self) -> None:
        """Nothing to stop."""

    def epoch_done(self, row: dict[str, Any]) -> None:
        """Store the epoch's validation accuracy; raise TrialPruned when it is hopeless."""
        import optuna

        acc = float(row["val_accuracy"])
        self.accuracies.append(acc)
        if self.trial is not None:
            self.trial.set_user_attr("val_accuracy_by_epoch", self.accuracies)
        if self.threshold is not None and row["epoch"] >= self.after_epoch and acc < self.threshold:
            raise optuna.TrialPruned(f"epoch {row['epoch']}: validation accuracy {acc:.4f} < "
                                     f"{self.threshold:.4f} (accuracy_min - margin)")


def _prune_threshold(cfg: ExploreConfig) -> float | None:
    if cfg.constraints.accuracy_min is None:
        return None
    return cfg.constraints.accuracy_min - cfg.pruning.margin


def hardware_metrics(report: Any) -> dict[str, float | None]:
    """LUT/BRAM_18K/URAM/DSP, latency, throughput and energy of a compile report."""
    m: dict[str, float | None] = {k: r.used.value for k, r in report.resources.items()}
    perf = report.performance

    def pv(*names: str) -> float | None:
        for n in names:
            q = perf.get(n)
            if q is not None and q.value is not None:
                return float(q.value)
        return None

    m["latency_ms"] = pv("latency_ms", "latency_p50_ms")
    m["throughput_fps"] = pv("throughput_fps", "throughput_samples_per_s")
    rows = {e["name"]: e for e in report.energy}
    row = rows.get("PL+PS energy, single-shot") or rows.get("PL energy, single-shot")
    m["energy_mj"] = float(row["value"]) if row else pv("energy_per_inference_b1_mj")
    m["fits"] = None if report.fits is None else float(bool(report.fits))
    return m


def constraint_check(cfg: ExploreConfig, metrics: dict[str, Any]) -> tuple[list[float], list[str]]:
    """Constraint values (<= 0: met) and one line per violated constraint."""
    values: list[float] = []
    why: list[str] = []
    c = cfg.constraints
    if c.fits:
        ok = metrics.get("fits") == 1.0
        values.append(0.0 if ok else 1.0)
        if not ok:
            why.append("does not fit the part")
    if c.accuracy_min is not None:
        values.append(c.accuracy_min - float(metrics["accuracy"]))
        if values[-1] > 0:
            why.append(f"accuracy {metrics['accuracy']:.4f} < {c.accuracy_min}")
    for metric, limit in c.max:
        v = metrics.get(metric)
        values.append(1.0 if v is None else (float(v) - limit) / max(limit, 1e-12))
        if v is None or v > limit:
            why.append(f"{metric} {v} > {limit:g}")
    return values, why


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_design(cfg: ExploreConfig, params: dict[str, Any], split: Any, desc: dict[str, Any], trial_dir: Path,
                 trial: Any = None, compile_it: bool = True) -> dict[str, Any]:
    """Train (and compile) one design into ``trial_dir``; returns its metrics and artefact paths."""
    from hwkit.compress.cqmlp.train import train_cqmlp

    trial_dir.mkdir(parents=True, exist_ok=True)
    tcfg = train_config(cfg, params)
    threshold = _prune_threshold(cfg) if trial is not None else None
    watch = _EpochWatch(trial, threshold, cfg.pruning.after_epoch)
    t0 = time.perf_counter()
    result: TrainResult = train_cqmlp(split, tcfg, trial_dir / "model.pt", desc, watch)
    train_s = time.perf_counter() - t0
    acc = float(result.summary["metrics"]["val"]["accuracy"])
    metrics: dict[str, Any] = {
        "accuracy": acc, "test_accuracy": float(result.summary["metrics"]["test"]["accuracy"]),
        "weight_kbit": weight_kbit(tcfg.hidden or (), tcfg.layer_bits or tcfg.bits), "train_s": round(train_s, 3),
        "epochs_run": result.summary["epochs_run"], "hidden": list(tcfg.hidden or ()),
    }
    if trial is not None:
        trial.set_user_attr("metrics", metrics)
        if threshold is not None and acc < threshold:
            import optuna

            raise optuna.TrialPruned(f"after training: validation accuracy {acc:.4f} < {threshold:.4f}; not compiled")
    checkpoint = result.checkpoint
    if params.get("amp_de"):
        checkpoint, amp_summary = amp_prune(result.checkpoint, split, float(params["amp_de"]), cfg.data.seed,
                                            trial_dir / "pruned.pt")
        metrics.update(amp=amp_summary, hidden=amp_summary["widths"],
                       weight_kbit=weight_kbit(tuple(amp_summary["widths"]), tcfg.layer_bits or tcfg.bits))
        if amp_summary["test_accuracy_after_prune"] is not None:
            metrics["test_accuracy"] = float(amp_summary["test_accuracy_after_prune"])
            metrics["accuracy"] = _val_accuracy(checkpoint, split)
    metrics.update(op_counts(checkpoint))
    paths = {"dir": str(trial_dir.resolve()), "checkpoint": str(checkpoint.resolve()),
             "checkpoint_sha256": _sha256(checkpoint)}
    if cfg.hardware != "none" and compile_it:
        from hwkit.api import compile_model

        t0 = time.perf_counter()
        report = compile_model(checkpoint, cfg.target, trial_dir / "build",
                               target_fps=params.get("target_fps"), clock_ns=params.get("clock_ns"))
        metrics["compile_s"] = round(time.perf_counter() - t0, 3)
        metrics.update(hardware_metrics(report))
        paths["build"] = str((trial_dir / "build").resolve())
    return {"metrics": metrics, "paths": paths}


def op_counts(checkpoint: Path) -> dict[str, Any]:
    """Arithmetic of the trained design by weight value (mult / shift / add) and its energy (45 nm table)."""
    from hwkit.compress.shiftadd.intops import IntOps, model_int_ops
    from hwkit.config import CompileSettings
    from hwkit.load import load_model

    ops = sum(model_int_ops(load_model(checkpoint, CompileSettings()).module).values(), IntOps())
    return {"op_energy_pj": round(ops.energy_pj(), 3),
            "ops": {"int_mult": ops.int_mult, "shift": ops.shift, "int_add": ops.int_add}}


def _val_accuracy(checkpoint: Path, split: Any) -> float:
    """Validation accuracy of a checkpoint (after pruning, the trained model's number no longer holds)."""
    import numpy as np
    import torch

    from hwkit.config import CompileSettings
    from hwkit.load import load_model

    module = load_model(checkpoint, CompileSettings()).module
    with torch.no_grad():
        pred = module(torch.tensor(np.asarray(split.val.x), dtype=torch.float32)).argmax(1).numpy()
    return float(np.mean(pred == np.asarray(split.val.y)))


def make_objective(cfg: ExploreConfig, study: Any, split: Any, desc: dict[str, Any], out: Path,
                   log: Callable[[str], None]) -> Callable[[Any], tuple[float, ...]]:
    """The Optuna objective of this worker."""
    import optuna

    alive = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING,
             optuna.trial.TrialState.WAITING)
    worker = {"host": socket.gethostname(), "pid": os.getpid()}

    def objective(trial: Any) -> tuple[float, ...]:
        trial.set_user_attr("worker", worker)
        ahead = sum(1 for t in study.get_trials(deepcopy=False, states=alive) if t.number < trial.number)
        if ahead >= cfg.trials:
            trial.set_user_attr("error", "budget already reached by other workers")
            raise BudgetReached()
        params = sample(trial, cfg)
        trial_dir = out / "trials" / str(trial.number)
        trial.set_user_attr("dir", str(trial_dir.resolve()))
        try:
            built = build_design(cfg, params, split, desc, trial_dir, trial)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("pruned", str(exc))
            log(f"trial {trial.number} pruned: {exc}")
            raise
        except HwkitError as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            log(f"trial {trial.number} failed: {exc}")
            raise
        metrics = built["metrics"]
        values, why = constraint_check(cfg, metrics)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("paths", built["paths"])
        trial.set_user_attr("constraint_values", values)
        trial.set_user_attr("violations", why)
        missing = [o for o in cfg.objectives if metrics.get(o) is None]
        if missing:
            msg = f"the compile gave no value for {', '.join(missing)}"
            trial.set_user_attr("error", msg)
            raise ExploreError(f"trial {trial.number}: {msg}")
        shown = ", ".join(f"{o} {_fmt(metrics[o])}" for o in cfg.objectives)
        log(f"trial {trial.number} {params}: {shown}" + (f" (infeasible: {'; '.join(why)})" if why else ""))
        return tuple(float(metrics[o]) for o in cfg.objectives)

    return objective


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_worker(cfg: ExploreConfig, out: Path, url: str, log: Callable[[str], None] = lambda s: None,
               worker_index: int = 0) -> WorkerResult:
    """Run trials until the study holds ``cfg.trials`` finished (complete + pruned) trials."""
    import optuna

    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    check_target(cfg)
    study = open_study(cfg, url, worker_index)
    c = counts(study)
    if c["COMPLETE"] + c["PRUNED"] >= cfg.trials:
        log(f"study '{cfg.study_name()}' already has {c['COMPLETE'] + c['PRUNED']} finished trials "
            f"(budget {cfg.trials})")
        return WorkerResult(0, 0, time.perf_counter() - t_start)
    split, desc = prepare(cfg, log)
    objective = make_objective(cfg, study, split, desc, out, log)
    ran = failed = in_a_row = 0
    last_error = ""
    while True:
        optuna.storages.fail_stale_trials(study)
        fail_orphans(study, cfg.study.grace_s)
        c = counts(study)
        finished = c["COMPLETE"] + c["PRUNED"]
        if finished >= cfg.trials:
            break
        if finished + c["RUNNING"] + c["WAITING"] >= cfg.trials:
            time.sleep(POLL_S)  # the rest of the budget is held by running trials: wait for them (or their death)
            continue
        before = len(study.get_trials(deepcopy=False))
        study.optimize(objective, n_trials=1, catch=(HwkitError, BudgetReached), gc_after_trial=False)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        mine = [t for t in study.get_trials(deepcopy=False)[before:] if t.user_attrs.get("worker") == me]
        last = mine[-1] if mine else None
        if last is None or last.user_attrs.get("error") == "budget already reached by other workers":
            continue
        if last.state.name == "FAIL":
            failed += 1
            in_a_row += 1
            last_error = last.user_attrs.get("error", "unknown error")
            if in_a_row >= MAX_FAILURES_IN_A_ROW:
                raise ExploreError(f"{in_a_row} trials in a row failed; the last: {last_error}")
        else:
            ran += 1
            in_a_row = 0
    return WorkerResult(ran, failed, time.perf_counter() - t_start)


def fail_orphans(study: Any, grace_s: float) -> list[int]:
    """Fail RUNNING trials whose worker died between creating them and starting them.

    The heartbeat covers a trial from the moment its objective runs, and the objective's first act is
    to record its worker. A trial still without a worker after ``grace_s`` therefore has no heartbeat
    and never will, and ``fail_stale_trials`` cannot see it.
    """
    from datetime import datetime

    import optuna

    failed = []
    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if "worker" in t.user_attrs or t.datetime_start is None:
            continue
        if (now - t.datetime_start).total_seconds() > grace_s:
            try:  # the note first: a finished trial takes no more attributes
                study._storage.set_trial_user_attr(t._trial_id, "error", "its worker died before it started")
                if study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
                    failed.append(t.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker got there first
    return failed


def trial_rows(study: Any, cfg: ExploreConfig) -> list[dict[str, Any]]:
    """Every trial of the study as a plain dict (for the summary, the front and --best)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        metrics = dict(ua.get("metrics") or {})
        if t.values is not None:
            metrics.update({o: v for o, v in zip(cfg.objectives, t.values)})
        rows.append({
            "number": t.number, "state": t.state.name, "params": dict(t.params), "metrics": metrics,
            "feasible": t.state.name == "COMPLETE" and not ua.get("violations"),
            "violations": list(ua.get("violations") or []), "worker": ua.get("worker"),
            "dir": ua.get("dir"), "paths": ua.get("paths"), "error": ua.get("error"), "pruned": ua.get("pruned"),
            "val_accuracy_by_epoch": ua.get("val_accuracy_by_epoch"),
            "started_utc": t.datetime_start.isoformat() if t.datetime_start else None,
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start else None,
        })
    return rows


def export_best(cfg: ExploreConfig, out: Path, rows: list[dict[str, Any]], pick: int | None,
                log: Callable[[str], None] = lambda s: None) -> tuple[dict[str, Any], Any]:
    """Copy the chosen design to ``out/best/`` and compile it; returns (choice record, report)."""
    from hwkit.api import compile_model
    from hwkit.explore.front import BEST_RULE, pick_best

    if pick is not None:
        chosen = next((r for r in rows if r["number"] == pick), None)
        if chosen is None:
            raise ExploreError(f"--pick {pick}: the study has no trial {pick}")
        if chosen["state"] != "COMPLETE":
            raise ExploreError(f"--pick {pick}: trial {pick} is {chosen['state']}, not COMPLETE")
        rule = f"--pick {pick}"
    else:
        chosen = pick_best(rows, cfg.objectives)
        if chosen is None:
            raise ExploreError(f"study '{cfg.study_name()}': no complete trial meets the constraints; nothing to pick")
        rule = BEST_RULE
    best = out / "best"
    best.mkdir(parents=True, exist_ok=True)
    paths = chosen.get("paths") or {}
    ckpt = Path(paths.get("checkpoint", "")) if paths.get("checkpoint") else None
    retrained = not (ckpt is not None and ckpt.is_file() and _sha256(ckpt) == paths.get("checkpoint_sha256"))
    if retrained:
        # Trained on another machine (shared storage): retrain here from the same parameters and seed.
        log(f"trial {chosen['number']}: checkpoint not on this machine; retraining it from its parameters")
        split, desc = prepare(cfg, log)
        built = build_design(cfg, chosen["params"], split, desc, best / "train", compile_it=False)
        ckpt = Path(built["paths"]["checkpoint"])
    assert ckpt is not None
    shutil.copy2(ckpt, best / "model.pt")
    trial_build = Path(paths["build"]) if paths.get("build") else None
    if not retrained and trial_build is not None and trial_build.is_dir() and not (best / "build").exists():
        shutil.copytree(trial_build, best / "build", symlinks=True)  # the compile is then served from its cache
    report = compile_model(best / "model.pt", cfg.target, best / "build",
                           target_fps=chosen["params"].get("target_fps"), clock_ns=chosen["params"].get("clock_ns"))
    record = {"trial": chosen["number"], "rule": rule, "params": chosen["params"], "metrics": chosen["metrics"],
              "objectives": list(cfg.objectives), "retrained": retrained,
              "model": str((best / "model.pt").resolve()), "build": str((best / "build").resolve()),
              "fits": report.fits}
    (best / "choice.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return record, report


def objective_table(cfg: ExploreConfig) -> list[tuple[str, str, str]]:
    """(metric, direction, description) of the objectives."""
    return [(o, METRICS[o][0], METRICS[o][3]) for o in cfg.objectives]
