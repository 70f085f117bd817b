"""Flows as data, and the one runner that executes them.

A flow file (``flows/<name>.toml``) is an ordered list of passes::

    name = "finn-estimate"
    description = "..."
    board_kinds = ["fpga"]
    passes = ["export_qonnx", "finn.streamline", {name = "verify", label = "finn-streamlined"}]

The runner times each pass, checkpoints its artifact in ``<out>/passes/NN-<id>/``, resumes with
``--from``, stops with ``--to``, and skips a pass whose cache key (a hash chained from the model
file's content, the pass, its parameters, the settings and board it uses, and the tool versions)
matches its checkpoint. Passes do none of that themselves.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import shutil
import time
import tomllib
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Protocol, TextIO

from hwkit import __version__
from hwkit.artifact import ARTIFACT_FILE, Artifact, write_json_atomic
from hwkit.board import Board, non_finite_field
from hwkit.config import CompileSettings, Context
from hwkit.errors import FlowError, HwkitError, InputError, ToolError
from hwkit.registry import PassFn, PassSpec, from_function, resolve

PASSES_DIR = "passes"
_TOOL_DISTS = ("finn-plus", "qonnx", "brevitas", "torch", "onnx", "onnxruntime")


@dataclass(frozen=True)
class FlowStep:
    """One entry of a flow: a pass, its parameters and its position."""

    index: int
    """1-based position in the flow."""
    spec: PassSpec
    """The pass."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Parameters from the flow file (everything but ``name``)."""
    label: str | None = None
    """Distinguishes repeated passes (e.g. two ``verify`` steps)."""

    @property
    def id(self) -> str:
        """Stable identifier, e.g. ``04-finn.streamline`` or ``05-verify-finn-streamlined``."""
        base = f"{self.index:02d}-{self.spec.name}"
        return f"{base}-{self.label}" if self.label else base


@dataclass(frozen=True)
class Flow:
    """An ordered list of passes with the board kinds it can build for."""

    name: str
    """Flow name (the file name without .toml)."""
    description: str
    """One line for ``hwkit flows``."""
    board_kinds: tuple[str, ...]
    """Board kinds this flow targets."""
    steps: tuple[FlowStep, ...]
    """The passes in order."""
    source: str
    """Where it was read from."""
    requires: tuple[str, ...] = ()
    """External tools the flow needs before it starts (e.g. ``vivado``); checked before any work."""

    def find(self, ref: str) -> int:
        """Index (0-based) of the step named by ``ref``: a number, a step id, a pass name or label."""
        if ref.isdigit():
            i = int(ref) - 1
            if 0 <= i < len(self.steps):
                return i
        exact = [i for i, s in enumerate(self.steps) if ref in (s.id, s.label)]
        by_name = [i for i, s in enumerate(self.steps) if ref == s.spec.name or s.spec.name == f"finn.{ref}"]
        hits = exact or by_name
        if len(hits) == 1:
            return hits[0]
        ids = ", ".join(s.id for s in self.steps)
        if len(hits) > 1:
            raise FlowError(f"step '{ref}' is ambiguous in flow '{self.name}'; use one of: {ids}")
        raise FlowError(f"flow '{self.name}' has no step '{ref}'; steps: {ids}")


def _flows_dir() -> Path:
    return Path(str(resources.files("hwkit.flows")))


def flow_names() -> list[str]:
    """Names of the flows hwkit ships, sorted."""
    return sorted(p.stem for p in _flows_dir().glob("*.toml"))


def parse_flow(data: Mapping[str, Any], name: str, source: str) -> Flow:
    """Validate a flow table and resolve its passes through the registry."""
    bad = non_finite_field(dict(data))
    if bad:
        raise FlowError(f"{source}: field '{bad}' must be a finite number (TOML nan/inf are not accepted)")
    raw = data.get("passes")
    if not isinstance(raw, list) or not raw:
        raise FlowError(f"{source}: 'passes' must be a non-empty list")
    pass_params = data.get("pass_params", {})
    if not isinstance(pass_params, dict) or not all(isinstance(v, dict) for v in pass_params.values()):
        raise FlowError(f"{source}: 'pass_params' must be a table of tables keyed by pass-name prefix")
    steps = []
    for i, entry in enumerate(raw, start=1):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise FlowError(f"{source}: passes[{i - 1}] must be a pass name or a table with 'name'")
        params = {k: v for k, v in entry.items() if k != "name"}
        # [pass_params."<prefix>"] gives parameters to every pass whose name starts with the prefix
        # (e.g. the finn-plus outputs for every finn.<step>); a pass's own parameters win.
        for prefix, shared in pass_params.items():
            if entry["name"].startswith(prefix):
                params = {**shared, **params}
        label = entry.get("label")
        if label is not None and not isinstance(label, str):
            raise FlowError(f"{source}: passes[{i - 1}].label must be a string")
        steps.append(FlowStep(i, resolve(entry["name"]), params, label))
    kinds = data.get("board_kinds", [])
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise FlowError(f"{source}: 'board_kinds' must be a list of strings")
    requires = data.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise FlowError(f"{source}: 'requires' must be a list of strings")
    return Flow(name, str(data.get("description", "")), tuple(kinds), tuple(steps), source, tuple(requires))


def load_flow(ref: str) -> Flow:
    """A shipped flow by name, or a flow file by path."""
    if ref.endswith(".toml") or "/" in ref:
        path = Path(ref)
        if not path.is_file():
            raise FlowError(f"{ref}: flow file not found")
    else:
        path = _flows_dir() / f"{ref}.toml"
        if not path.is_file():
            names = ", ".join(flow_names())
            raise FlowError(f"unknown flow '{ref}'; known flows: {names}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise FlowError(f"{path}: malformed TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise FlowError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except OSError as exc:
        raise FlowError(f"{path}: cannot read flow file ({exc.strerror})") from None
    return parse_flow(data, path.stem, str(path))


def flow_from_functions(name: str, fns: Sequence[PassFn | str]) -> Flow:
    """A flow built in Python from pass names and plain functions (for API callers)."""
    steps = []
    for i, fn in enumerate(fns, start=1):
        spec = resolve(fn) if isinstance(fn, str) else from_function(fn)
        steps.append(FlowStep(i, spec))
    return Flow(name, "built in Python", (), tuple(steps), "<python>")


@functools.cache
def tool_versions() -> dict[str, str]:
    """Versions of hwkit and the toolchain, read from package metadata (no imports)."""
    out = {"hwkit": __version__}
    for dist in _TOOL_DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


@functools.cache
def hwkit_source_digest() -> str:
    """Hash of hwkit's own code and data files: editing hwkit invalidates checkpoints it made."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    boards = Path(str(resources.files("hwkit.boards")))
    # device presets feed passes (the analog backend) without being part of a board file's text
    files = sorted([*root.rglob("*.py"), *_flows_dir().glob("*.toml"), *root.glob("schemas/*.json"),
                    *boards.glob("devices/*.toml")])
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


_ARCH_TREE_LIMIT = 2000
"""Most files hashed for one ``--arch`` package; a larger tree is not hashed (no caching)."""


def arch_source_digest(ref: str) -> str | None:
    """Hash of the source that ``--arch module:callable`` builds from, or None when it cannot be hashed.

    A top-level module is one file; a module inside a package brings the whole tree of its package
    (its siblings and data files, e.g. brevitas_examples/bnn_pynq with its cfg/*.ini). Code imported
    from elsewhere is not covered; an installed package's version is part of every key already when it
    is one of the tool distributions.
    """
    from importlib.util import find_spec

    from hwkit.models import ensure_cwd_importable

    ensure_cwd_importable()
    mod_name = ref.partition(":")[0]
    try:
        spec = find_spec(mod_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    origin = Path(spec.origin)
    package = bool(spec.submodule_search_locations)
    if "." not in mod_name and not package:
        root, files = origin.parent, [origin]
    else:
        # a top-level package or a module inside one: that package's directory; a subpackage: the
        # package that holds it (siblings and data files, e.g. bnn_pynq/cfg/*.ini)
        root = origin.parent.parent if package and "." in mod_name else origin.parent
        files = []
        for f in sorted(root.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
                files.append(f)
                if len(files) > _ARCH_TREE_LIMIT:
                    return None
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes; for a directory (a Hugging Face model), of every file's relative name and bytes."""
    h = hashlib.sha256()
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            h.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class Progress(Protocol):
    """What the runner reports while it works (the CLI shows it with rich)."""

    def start(self, total: int) -> None: ...
    def pass_started(self, step: FlowStep) -> None: ...
    def pass_done(self, step: FlowStep, seconds: float, cached: bool) -> None: ...
    def stop(self, ok: bool) -> None: ...


class NullProgress:
    """Reports nothing (--quiet, --json, the Python API)."""

    def start(self, total: int) -> None:
        """Nothing."""

    def pass_started(self, step: FlowStep) -> None:
        """Nothing."""

    def pass_done(self, step: FlowStep, seconds: float, cached: bool) -> None:
        """Nothing."""

    def stop(self, ok: bool) -> None:
        """Nothing."""


@dataclass(frozen=True)
class PassRecord:
    """How one step went: for the report and ``time_per_pass``."""

    id: str
    """Step id."""
    name: str
    """Pass name."""
    seconds: float
    """Wall time of the pass (0 when served from its checkpoint)."""
    cached: bool
    """True when the checkpoint was reused."""
    key: str
    """The step's cache key."""


@dataclass
class Runner:
    """Runs a flow over an initial artifact with checkpoints, caching and resume."""

    flow: Flow
    board: Board
    settings: CompileSettings
    out_dir: Path
    progress: Progress = field(default_factory=NullProgress)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("hwkit"))

    def _key(self, prev: str, step: FlowStep, versions: Mapping[str, Any]) -> str:
        uses = step.spec.uses
        settings = self.settings.as_dict()
        used = settings if uses is None else {k: settings[k] for k in uses if k in settings}
        board = self.board.cache_facts() if uses is None or "board" in uses else None
        arch = used.get("arch") if "arch" in used else None
        if arch:
            # the code --arch names is part of the model: editing it must invalidate the export
            used = {**used, "arch_source": arch_source_digest(str(arch)) or f"uncacheable-{uuid.uuid4()}"}
        return _digest(prev, step.spec.name, step.label, dict(step.params), used, board, versions)

    def step_keys(self, initial_key: str) -> list[str]:
        """The cache key of every step, chained from ``initial_key`` (the model file's digest)."""
        versions = {**tool_versions(), "hwkit-source": hwkit_source_digest()}
        keys, k = [], initial_key
        for step in self.flow.steps:
            k = self._key(k, step, versions)
            keys.append(k)
        return keys

    def step_dir(self, step: FlowStep) -> Path:
        """Checkpoint directory of a step."""
        return self.out_dir / PASSES_DIR / step.id

    def _cached(self, step: FlowStep, key: str) -> Artifact | None:
        f = self.step_dir(step) / ARTIFACT_FILE
        if not f.is_file():
            return None
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if data.get("key") != key:
            return None
        return Artifact.from_json(data["artifact"], self.out_dir)

    def run(
        self,
        initial: Artifact,
        initial_key: str,
        from_step: str | None = None,
        to_step: str | None = None,
    ) -> tuple[Artifact, list[PassRecord]]:
        """Run the flow; returns the last artifact and one record per executed step."""
        steps = self.flow.steps
        first_forced = self.flow.find(from_step) if from_step else len(steps)
        last = self.flow.find(to_step) if to_step else len(steps) - 1
        if last < first_forced and from_step:
            raise FlowError(f"--from {from_step} comes after --to {to_step}")
        keys = self.step_keys(initial_key)[: last + 1]

        # Walk from the end: the last step whose checkpoint is valid is where work resumes.
        art = initial
        resume_at = 0
        for i in range(min(first_forced, last + 1) - 1, -1, -1):
            hit = self._cached(steps[i], keys[i])
            if hit is not None:
                art, resume_at = hit, i + 1
                break
        if from_step and resume_at < first_forced:
            prev = steps[first_forced - 1].id if first_forced > 0 else None
            if prev is not None:
                raise FlowError(
                    f"cannot resume from '{steps[first_forced].id}': no valid checkpoint for the step before it "
                    f"('{prev}') in {self.out_dir}; run without --from first"
                )

        records = [PassRecord(s.id, s.spec.name, 0.0, True, keys[i]) for i, s in enumerate(steps[:resume_at])]
        self.progress.start(last + 1)
        ok = False
        try:
            for step in steps[:resume_at]:
                self.progress.pass_done(step, 0.0, True)
            for i in range(resume_at, last + 1):
                step = steps[i]
                art = self._run_step(step, art, keys[i])
                records.append(PassRecord(step.id, step.spec.name, art.meta["_seconds"], False, keys[i]))
                self.progress.pass_done(step, art.meta["_seconds"], False)
            ok = True
        finally:
            self.progress.stop(ok)
        return art, records

    def _run_step(self, step: FlowStep, art: Artifact, key: str) -> Artifact:
        work = self.step_dir(step)
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        ctx = Context(self.board, self.settings, self.out_dir, work, step.params, self.log.getChild(step.id))
        self.progress.pass_started(step)
        self.log.info("pass %s: start", step.id)
        t0 = time.perf_counter()
        try:
            with _captured(work / "pass.log"):
                out = step.spec.fn(art, ctx)
        except HwkitError as exc:
            self.log.error("pass %s failed: %s", step.id, exc)
            raise type(exc)(f"pass {step.id}: {exc}") from exc
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
                raise ToolError(f"pass {step.id} failed: {type(exc).__name__}: {exc} "
                                f"(tool output: {work / 'pass.log'}; --debug shows the traceback)") from exc
            from hwkit.outdir import os_error_message

            raise InputError(f"pass {step.id}: {os_error_message(exc.filename or work, exc)}") from exc
        except Exception as exc:
            self.log.exception("pass %s failed", step.id)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ToolError(
                f"pass {step.id} failed: {type(exc).__name__}: {first} "
                f"(tool output: {work / 'pass.log'}; --debug shows the traceback)"
            ) from exc
        seconds = time.perf_counter() - t0
        if not isinstance(out, Artifact):
            raise ToolError(f"pass {step.id} returned {type(out).__name__}, not an Artifact")
        out = out.evolve(_seconds=seconds)
        record = {"key": key, "pass": step.spec.name, "artifact": out.to_json(self.out_dir)}
        write_json_atomic(work / ARTIFACT_FILE, record)
        self.log.info("pass %s: done in %.3f s", step.id, seconds)
        return out



@contextlib.contextmanager
def _captured(log_path: Path) -> Iterator[None]:
    """Send what a tool prints (stdout, stderr, Python warnings) to the pass's log file."""
    with log_path.open("a", encoding="utf-8") as f, contextlib.redirect_stdout(f), \
            contextlib.redirect_stderr(f), warnings.catch_warnings():
        warnings.simplefilter("default")
        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            f.write(f"{filename}:{lineno}: {category.__name__}: {message}\n")

        warnings.showwarning = show
        yield
