"""Frozen configuration shared by the CLI and the Python API."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwkit.board import Board

_FINN_DTYPE = re.compile(r"^(FLOAT32|FLOAT16|BFLOAT16|BINARY|BIPOLAR|TERNARY|U?INT([1-9]|[1-5]\d|6[0-4])|"
                         r"FIXED<\d{1,2},\d{1,2}>|SCALEDINT<\d{1,2}>)$")


def is_finn_dtype(name: object) -> bool:
    """True when ``name`` is a FINN/QONNX data type name (UINT8, INT4, BIPOLAR, FLOAT32, FIXED<8,4> ...)."""
    return isinstance(name, str) and _FINN_DTYPE.match(name) is not None


@dataclass(frozen=True)
class CompileSettings:
    """Everything a compile depends on besides the model file, the board and the flow."""

    clock_ns: float | None = None
    """Target clock period in ns (board default unless overridden; None for non-FPGA targets)."""
    target_fps: float | None = None
    """Throughput to fold for, in frames/s; None: no automatic folding (PE = SIMD = 1, the smallest design)."""
    input_shape: tuple[int, ...] | None = None
    """Model input shape including batch 1; None: taken from the checkpoint."""
    input_dtype: str | None = None
    """FINN/QONNX data type of the input (e.g. UINT8, INT8, FLOAT32); None: from the checkpoint."""
    arch: str | None = None
    """``module:callable`` that builds the architecture for a plain state dict."""
    arch_kwargs: tuple[tuple[str, Any], ...] = ()
    """Keyword arguments for ``arch`` (sorted items, so the settings stay hashable)."""
    trust_pickle: bool = False
    """Allow loading full pickles, which execute code from the file."""
    golden_batch: int = 32
    """Number of golden samples pushed through every stage for hand-off verification."""
    seed: int = 0
    """Seed for generated golden inputs."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for cache keys and the report)."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        d["arch_kwargs"] = dict(self.arch_kwargs)
        return d


@dataclass(frozen=True)
class Context:
    """Read-only view a pass gets: board, settings, where to write, its own parameters, a logger."""

    board: Board
    """The target board."""
    settings: CompileSettings
    """Compile-wide settings."""
    out_dir: Path
    """The build directory (absolute)."""
    work_dir: Path
    """This pass's own empty directory inside the build directory."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """This pass's parameters from the flow file."""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("hwkit"))
    """Logger writing to the build directory's hwkit.log."""
