"""Output directories hwkit owns: a marker file, refusal of foreign directories, and a rollback that
removes only what the current run created.

The rule (issue 15): hwkit never removes or changes a file the user had. An output directory is
either new (hwkit creates it and writes :data:`MARKER`), empty, or carries the marker of an earlier
hwkit run. A non-empty directory without the marker is refused with one line (exit 2) unless the
caller passes ``force=True``; even then :meth:`OutDir.rollback` removes only the entries that were
not there when the directory was claimed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hwkit.errors import InputError

MARKER = ".hwkit-output"
"""File written into every output directory hwkit claims; its presence means "hwkit wrote this"."""


def os_error_message(path: Path | str, exc: OSError) -> str:
    """One line naming ``path`` and what the operating system said (disk full, read-only, ...)."""
    reason = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
              errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
              errno.ENOTDIR: "a parent is not a directory", errno.EEXIST: "exists",
              errno.EDQUOT: "disk quota exceeded"}.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return f"{path}: cannot write ({reason})"


@dataclass
class OutDir:
    """A claimed output directory and what the current run added to it."""

    path: Path
    kind: str
    created: Path | None = None  # the top-most directory this run created (itself or an ancestor)
    before: frozenset[str] = field(default_factory=frozenset)  # entries present when claimed

    def rollback(self) -> None:
        """Remove what this run created, and nothing else."""
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
            return
        with contextlib.suppress(OSError):
            for entry in self.path.iterdir():
                if entry.name in self.before:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def is_hwkit_dir(path: Path) -> bool:
    """True when ``path`` is a directory an earlier hwkit run wrote (it has the marker)."""
    return (path / MARKER).is_file()


def claim(path: str | Path, kind: str, force: bool = False, legacy_markers: tuple[str, ...] = ()) -> OutDir:
    """Take ``path`` as an output directory for a ``kind`` run (compile, train, prune, ...).

    Creates it (and missing parents) when absent. An existing directory must be empty, carry
    :data:`MARKER`, or carry one of ``legacy_markers`` (entries an hwkit build of an earlier version
    always had); otherwise :class:`InputError` unless ``force``. Every OS failure (a parent that is
    a file, a read-only file system, a full disk) is one :class:`InputError` naming the path.
    """
    try:
        out = Path(path).resolve()
        present = out.exists() or out.is_symlink()
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
        raise InputError(os_error_message(path, exc) if isinstance(exc, OSError) else f"{path}: {exc}") from None
    if present:
        if not out.is_dir():
            raise InputError(f"{path}: exists and is not a directory")
        try:
            entries = frozenset(e.name for e in out.iterdir())
        except OSError as exc:
            raise InputError(os_error_message(path, exc)) from None
        ours = MARKER in entries or any(m in entries for m in legacy_markers)
        if entries and not ours and not force:
            raise InputError(
                f"{path}: directory exists, is not empty and was not written by hwkit; "
                "choose another --out, empty it, or pass --force (hwkit then adds to it and never removes "
                "what was there)"
            )
        result = OutDir(out, kind, None, entries)
    else:
        result = OutDir(out, kind, _make_dirs(out, path), frozenset())
    try:
        if not (out / MARKER).exists():
            (out / MARKER).write_text(json.dumps({"tool": "hwkit", "kind": kind, "created": time.time()}) + "\n",
                                      encoding="utf-8")
    except OSError as exc:
        result.rollback()
        raise InputError(os_error_message(out / MARKER, exc)) from None
    return result


def claim_file_parent(path: str | Path) -> OutDir | None:
    """For a single output file (``--out model.pt``): create its missing parents, return what to roll back.

    The file itself is written atomically by the caller; an existing parent is never claimed or
    marked (a file is added to it, nothing else). Returns None when the parent existed.
    """
    out = Path(path).absolute()
    try:
        if out.is_dir():
            raise InputError(f"{path}: is a directory; give a file name")
        parent = out.parent
        if parent.is_dir():
            if not os.access(parent, os.W_OK):
                raise InputError(f"{path}: cannot write (the folder {parent} is not writable)")
            return None
        parent.exists()  # raises for a name too long
    except OSError as exc:
        raise InputError(os_error_message(path, exc)) from None
    return OutDir(parent, "file-parent", _make_dirs(parent, path), frozenset())


def _make_dirs(d: Path, shown: str | Path) -> Path:
    """Create ``d`` and its missing parents; return the top-most directory created (for rollback)."""
    created = d
    for parent in d.parents:
        if parent.exists():
            break
        created = parent
    try:
        d.mkdir(parents=True)
    except FileExistsError:
        raise InputError(f"{shown}: a parent is not a directory") from None
    except OSError as exc:
        raise InputError(os_error_message(shown, exc)) from None
    return created


def replace_all(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each temporary to its final name; on failure remove every temporary (and nothing else)."""
    try:
        for tmp, final in pairs:
            os.replace(tmp, final)
    finally:
        for tmp, _ in pairs:
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def staged_files(out_file: str | Path) -> Iterator[Path]:
    """All-or-none outputs of a single-file command (a model ``--out m.pt`` and the reports beside it).

    Yields a staging directory inside the output's folder; whatever the command writes there is moved
    next to ``out_file`` when the block ends without an error. On any failure (bad input, a tool, an
    interrupt) the staging directory and the parents this run created are removed, and nothing that
    was in the folder before is touched.
    """
    created = claim_file_parent(out_file)
    parent = Path(out_file).absolute().parent
    try:
        stage = Path(tempfile.mkdtemp(prefix=".hwkit-staging-", dir=parent))
    except OSError as exc:
        if created is not None:
            created.rollback()
        raise InputError(os_error_message(parent, exc)) from None
    try:
        yield stage
        for entry in sorted(stage.iterdir()):
            target = parent / entry.name
            try:
                os.replace(entry, target)  # a file of the same name is replaced; a directory is refused
            except OSError as exc:
                raise InputError(os_error_message(target, exc)) from None
    except BaseException:
        if created is not None:
            created.rollback()
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
