"""The Python API; the CLI builds the same arguments and calls :func:`compile_model`."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hwkit.artifact import Artifact, thaw
from hwkit.board import Board, load_board
from hwkit.config import CompileSettings
from hwkit.errors import FlowError, InputError, ModelLoadError
from hwkit.flow import Flow, NullProgress, PassRecord, Progress, Runner, file_digest, load_flow, tool_versions
from hwkit.outdir import OutDir, claim
from hwkit.registry import PassFn
from hwkit.report import REPORT_FILES, PassTiming, Report, build_report


def resolve_settings(board: Board, **overrides: object) -> CompileSettings:
    """Settings for ``board`` with the given overrides (None means "board default")."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    if "clock_ns" not in clean and board.clock_ns is not None:
        clean["clock_ns"] = board.clock_ns
    for key, flag, lo, hi in (("clock_ns", "--clock-ns", 0.0, 1e6), ("target_fps", "--target-fps", 1.0, 1e12)):
        value = clean.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not lo <= value <= hi or value == 0:
            where = f"{board.source}: clock_ns" if key == "clock_ns" and overrides.get(key) is None else flag
            rng = f"0 < x <= {hi:g}" if key == "clock_ns" else f"{lo:g} <= x <= {hi:g}"
            raise InputError(f"{where} must be a finite number with {rng}, got {value!r}")
        clean[key] = float(value)  # 5 and 5.0 are the same setting (and the same cache key)
    for key, flag, lo, hi in (("golden_batch", "--golden-batch", 1, 65536), ("seed", "--seed", 0, 2**32 - 1)):
        value = clean.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
            raise InputError(f"{flag} must be an integer in [{lo}, {hi}], got {value!r}")
    shape = clean.get("input_shape")
    if shape is not None:
        if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise InputError(f"--input-shape must be positive integers, got {shape!r}")
        clean["input_shape"] = tuple(shape)
    return CompileSettings(**clean)  # type: ignore[arg-type]


def flow_for(board: Board, flow: str | Flow | Sequence[str | PassFn] | None) -> Flow:
    """The flow to run: ``flow`` (a name, a Flow or pass functions) or the board's default, checked against it."""
    if isinstance(flow, Flow):
        resolved = flow
    elif flow is None or isinstance(flow, str):
        name = flow or board.default_flow
        resolved = load_flow(name)
    else:
        from hwkit.flow import flow_from_functions

        resolved = flow_from_functions("custom", flow)
    if resolved.board_kinds and board.kind not in resolved.board_kinds:
        raise FlowError(
            f"flow '{resolved.name}' builds for {'/'.join(resolved.board_kinds)} boards; "
            f"target '{board.name}' is a {board.kind} board"
        )
    return resolved


def compile_model(
    model: str | Path,
    target: str | Board,
    out_dir: str | Path = "build",
    flow: str | Flow | Sequence[str | PassFn] | None = None,
    from_step: str | None = None,
    to_step: str | None = None,
    progress: Progress | None = None,
    force: bool = False,
    adjust: Callable[[Flow], Flow] | None = None,
    **settings: object,
) -> Report:
    """Compile ``model`` for ``target``; writes ``out_dir``/report.{json,md} and returns the report.

    ``settings`` are :class:`~hwkit.config.CompileSettings` fields (``clock_ns``, ``target_fps``,
    ``input_shape``, ``input_dtype``, ``arch``, ``arch_kwargs``, ``trust_pickle``, ``golden_batch``,
    ``seed``); None or absent means the default. ``out_dir`` must be new, empty or an earlier hwkit
    output directory unless ``force`` (see :mod:`hwkit.outdir`); a failed run removes only what it created.

    With no ``flow``, the board's default flow may be replaced by one the exported graph needs
    (hwkit/backends/finn/select.py: e.g. finn-recipes for residual or depthwise CNNs); the report's
    ``flow`` and a note say which and why. ``adjust`` is applied to whichever flow runs (the CLI's
    ``--finn-option``/``--exporter``/``--runs``).
    """
    board = target if isinstance(target, Board) else load_board(target)
    resolved_flow = flow_for(board, flow)
    auto = flow is None
    if adjust is not None:
        resolved_flow = adjust(resolved_flow)
    cfg = resolve_settings(board, **settings)
    if resolved_flow.requires:
        from hwkit.doctor import require_tools

        require_tools(resolved_flow.requires, resolved_flow.name)  # before any work or directory
    model_path = Path(model).resolve()
    if not model_path.is_file() and not (model_path / "config.json").is_file():  # a Hugging Face directory is a model
        raise ModelLoadError(f"{model}: model file not found" if not model_path.is_dir()
                             else f"{model}: a directory without config.json (not a Hugging Face model directory)")
    owned = claim(out_dir, "compile", force=force, legacy_markers=(".hwkit.lock",))
    with _build_lock(owned.path):
        return _compile_locked(model_path, owned, board, resolved_flow, cfg, from_step, to_step, progress,
                               (adjust or _same) if auto else None)


def _same(flow: Flow) -> Flow:
    return flow


@contextlib.contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """One compile per build directory at a time (a second one would overwrite checkpoints)."""
    with (out / ".hwkit.lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{out}: another hwkit compile is using this build directory") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _compile_locked(
    model_path: Path, owned: OutDir, board: Board, resolved_flow: Flow, cfg: CompileSettings,
    from_step: str | None, to_step: str | None, progress: Progress | None,
    auto: Callable[[Flow], Flow] | None = None,
) -> Report:
    out = owned.path
    for stale in REPORT_FILES:  # a failed re-run must not leave the previous run's report looking current
        (out / stale).unlink(missing_ok=True)

    log = logging.getLogger("hwkit")
    handler = logging.FileHandler(out / "hwkit.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    digest = file_digest(model_path)
    initial = Artifact(stage="model-file", path=model_path)
    note = None
    try:
        probed: list[PassRecord] = []
        if auto is not None:
            resolved_flow, note, probed, from_step = _auto_flow(
                resolved_flow, board, cfg, out, log, initial, digest, from_step, to_step, auto,
                progress or NullProgress())
        runner = Runner(resolved_flow, board, cfg, out, progress or NullProgress(), log)
        final, records = runner.run(initial, digest, from_step, to_step)
        # the export ran in the probe: report its real time, not the checkpoint hit
        records = [next((p for p in probed if p.key == r.key), r) for r in records]
    except InputError:
        log.removeHandler(handler)
        handler.close()
        owned.rollback()  # bad input: leave nothing this run created, touch nothing that was there
        raise
    finally:
        log.removeHandler(handler)
        handler.close()

    if note:
        final = final.evolve(warnings=[note, *final.meta.get("warnings", ())])
    model_meta = thaw(final.meta.get("model", {}))
    model_meta.update(path=str(model_path), sha256=digest)
    report = build_report(
        dict(final.meta), model_meta, board, cfg.as_dict(), resolved_flow.name,
        [PassTiming(r.id, round(r.seconds, 4), r.cached) for r in records], tool_versions(),
    )
    report.write(out)
    return report


def _auto_flow(
    default: Flow, board: Board, cfg: CompileSettings, out: Path, log: logging.Logger, initial: Artifact,
    digest: str, from_step: str | None, to_step: str | None, adjust: Callable[[Flow], Flow], progress: Progress,
) -> tuple[Flow, str | None, list[PassRecord], str | None]:
    """Run ``default`` up to its QONNX export (checkpointed: the chosen flow reuses it) and pick the flow
    the exported graph needs (hwkit/backends/finn/select.py). Returns the flow, the note saying why (None:
    the default), the records of the passes that ran, and the ``--from`` step left for the main run."""
    idx = next((i for i, s in enumerate(default.steps) if s.spec.name == "export_qonnx"), None)
    if idx is None:
        return default, None, [], from_step
    from hwkit.backends.finn.select import choose_flow

    forced = from_step if from_step and _index(default, from_step) <= idx else None
    art, records = Runner(default, board, cfg, out, progress, log).run(initial, digest, forced, str(idx + 1))
    ran = [r for r in records if not r.cached]
    chosen, note = default, None
    choice = choose_flow(art.path, default.name) if art.path is not None and art.path.suffix == ".onnx" else None
    if choice is not None:
        log.info("%s", choice.reason)
        say = getattr(progress, "note", None)  # the console shows it now, before the long part of the build
        if callable(say):
            say(choice.reason)
        chosen, note = adjust(flow_for(board, choice.flow)), choice.reason
    if forced:
        # the probe re-ran the passes --from asked for; the rest of the flow re-runs after them
        stop = _index(chosen, to_step) if to_step else len(chosen.steps) - 1
        from_step = str(idx + 2) if idx + 1 < len(chosen.steps) and stop > idx else None
    return chosen, note, ran, from_step


def _index(flow: Flow, ref: str) -> int:
    """Position of ``ref`` in ``flow`` (a large number when the flow has no such step)."""
    try:
        return flow.find(ref)
    except FlowError:
        return 1 << 30


def design_hash(model: Path, target: str, flow: str, vivado: str, **settings: Any) -> str:
    """sha256 over the model file, the flow, settings, board facts, tool versions, hwkit's code and Vivado.

    It is the last step's checkpoint key of hwkit's runner (the same chain that decides what a re-run
    may reuse), extended with the Vivado version, which the Python-side key does not see.
    """
    import hashlib

    from hwkit.flow import Runner

    board = load_board(target)
    resolved = flow_for(board, flow)
    cfg = resolve_settings(board, **settings)
    runner = Runner(resolved, board, cfg, Path("."))
    last = runner.step_keys(file_digest(model))[-1]
    return hashlib.sha256(f"{last}|vivado={vivado}|part={board.part}".encode()).hexdigest()
