"""The immutable value passed between passes."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

ARTIFACT_FILE = "artifact.json"


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists from a frozen metadata value (for JSON and for editing copies)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Artifact:
    """What one pass hands the next: a stage name, a file, and JSON-able metadata.

    Metadata accumulates along a flow (each pass returns a copy with its own keys added), so the
    last artifact carries everything the report needs. It is deeply read-only.
    """

    stage: str
    """What the file is: torch-file | qonnx | finn | ..."""
    path: Path | None = None
    """The main file of this stage (e.g. model.onnx), absolute."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """JSON-able facts accumulated by the passes so far."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", _freeze(self.meta))

    def evolve(self, stage: str | None = None, path: Path | None = None, **meta: Any) -> Artifact:
        """A new artifact with ``stage``/``path`` replaced and top-level metadata keys set."""
        merged = dict(self.meta)
        merged.update(meta)
        return replace(self, stage=stage or self.stage, path=path or self.path, meta=merged)

    def to_json(self, root: Path) -> dict[str, Any]:
        """Serialisable form; the path is stored relative to ``root`` (the build directory)."""
        rel = None if self.path is None else os.path.relpath(self.path, root)
        return {"stage": self.stage, "path": rel, "meta": thaw(self.meta)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], root: Path) -> Artifact:
        """Inverse of :meth:`to_json`."""
        rel = data.get("path")
        return cls(stage=data["stage"], path=None if rel is None else (root / rel).resolve(), meta=data["meta"])


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write text so that a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
