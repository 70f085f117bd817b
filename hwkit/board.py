"""Boards as data: every fact about a target lives in ``boards/<name>.toml``.

The file name is the ``--target`` value. Code reads fields, never board names. A path to a TOML
file is accepted as a target too, so a user can describe a board hwkit does not ship.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hwkit.errors import BoardError

KINDS = ("fpga", "cpu", "gpu", "analog")
RESOURCE_KEYS = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")
SHELL_FLOWS = ("vivado_zynq", "vitis_alveo")


@dataclass(frozen=True)
class Board:
    """One target, as loaded from its TOML file."""

    name: str
    """The ``--target`` value (the file name without ``.toml``)."""
    kind: str
    """One of fpga | cpu | gpu | analog."""
    description: str
    """One line shown by ``hwkit boards``."""
    default_flow: str
    """Flow used when ``--flow`` is not given."""
    source: str
    """Where the board file was read from."""
    clock_ns: float | None = None
    """Default clock period for FPGA builds, in ns."""
    part: str | None = None
    """FPGA part number (fpga boards)."""
    board_part: str | None = None
    """Vivado board part (fpga boards with a board file)."""
    finn_board: str | None = None
    """The board key finn-plus knows this board by (its part map / templates)."""
    shell_flow: str | None = None
    """vivado_zynq or vitis_alveo (fpga boards)."""
    axi_width_bits: int | None = None
    """Width of the AXI port the accelerator's DMA uses, in bits."""
    vitis_platform: str | None = None
    """Vitis platform name (Alveo boards)."""
    family: str | None = None
    """Device family, e.g. zynq-7000, zynq-ultrascale+, alveo-ultrascale+."""
    resources: dict[str, int] = field(default_factory=dict)
    """Resource totals of the part: LUT, FF, BRAM_18K, URAM, DSP."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Every other table of the file (power model, execution providers, device presets...)."""

    def summary(self) -> dict[str, Any]:
        """Fields for listings and reports."""
        return {
            "name": self.name,
            "kind": self.kind,
            "part": self.part,
            "clock_ns": self.clock_ns,
            "default_flow": self.default_flow,
            "description": self.description,
        }


def _boards_dir() -> Path:
    return Path(str(resources.files("hwkit.boards")))


def board_names() -> list[str]:
    """Names of the boards hwkit ships, sorted."""
    return sorted(p.stem for p in _boards_dir().glob("*.toml"))


def _require(data: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise BoardError(f"{where}: missing field '{key}'")
    value = data[key]
    if not isinstance(value, typ) or isinstance(value, bool):
        tname = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise BoardError(f"{where}: field '{key}' must be {tname}, got {value!r}")
    return value


def non_finite_field(obj: Any, prefix: str = "") -> str | None:
    """Dotted path of the first number in ``obj`` (nested tables and arrays) that is NaN or infinite, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return prefix or "value"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = non_finite_field(v, f"{prefix}[{k}]" if isinstance(k, int) else f"{prefix}.{k}" if prefix else str(k))
        if found:
            return found
    return None


def _positive_int(data: dict[str, Any], key: str, where: str) -> int:
    value: int = _require(data, key, int, where)
    if value <= 0:
        raise BoardError(f"{where}: field '{key}' must be > 0, got {value}")
    return value


def parse_board(data: dict[str, Any], name: str, source: str) -> Board:
    """Validate the table read from a board file and build a :class:`Board`."""
    where = source
    bad = non_finite_field(data)
    if bad:
        raise BoardError(f"{where}: field '{bad}' must be a finite number (TOML nan/inf are not accepted)")
    kind = _require(data, "kind", str, where)
    if kind not in KINDS:
        raise BoardError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    known = {
        "kind", "description", "default_flow", "clock_ns", "part", "board_part", "finn_board",
        "shell_flow", "axi_width_bits", "vitis_platform", "family", "resources",
    }
    common = {
        "name": name,
        "kind": kind,
        "description": _require(data, "description", str, where),
        "default_flow": _require(data, "default_flow", str, where),
        "source": source,
        "extra": {k: v for k, v in data.items() if k not in known},
    }
    if kind != "fpga":
        return Board(**common)
    clock = _require(data, "clock_ns", (int, float), where)
    if not math.isfinite(clock) or not 0 < clock <= 1e6:
        raise BoardError(f"{where}: field 'clock_ns' must be a finite number with 0 < clock_ns <= 1e6, got {clock}")
    shell = _require(data, "shell_flow", str, where)
    if shell not in SHELL_FLOWS:
        raise BoardError(f"{where}: field 'shell_flow' must be one of {', '.join(SHELL_FLOWS)}, got {shell!r}")
    res = _require(data, "resources", dict, where)
    totals: dict[str, int] = {}
    for key in RESOURCE_KEYS:
        val = _require(res, key, int, f"{where} [resources]")
        if val < 0:
            raise BoardError(f"{where}: [resources] {key} must be >= 0, got {val}")
        totals[key] = val
    unknown = sorted(set(res) - set(RESOURCE_KEYS))
    if unknown:
        raise BoardError(f"{where}: [resources] has unknown field(s) {', '.join(unknown)}")
    return Board(
        **common,
        clock_ns=float(clock),
        part=_require(data, "part", str, where),
        board_part=data.get("board_part"),
        finn_board=_require(data, "finn_board", str, where),
        shell_flow=shell,
        axi_width_bits=_positive_int(data, "axi_width_bits", where),
        vitis_platform=data.get("vitis_platform"),
        family=_require(data, "family", str, where),
        resources=totals,
    )


def load_board_file(path: Path, name: str | None = None) -> Board:
    """Read and validate one board file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BoardError(f"{path}: cannot read board file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise BoardError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BoardError(f"{path}: malformed TOML ({exc})") from None
    return parse_board(data, name or path.stem, str(path))


def load_board(target: str) -> Board:
    """Resolve ``--target``: a shipped board name, or a path to a board TOML file."""
    if target.endswith(".toml") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise BoardError(f"{target}: board file not found")
        return load_board_file(path)
    path = _boards_dir() / f"{target}.toml"
    if not path.is_file():
        raise BoardError(f"unknown target '{target}'; known targets: {', '.join(board_names())}")
    return load_board_file(path, target)


def all_boards() -> list[Board]:
    """Every shipped board, loaded and validated."""
    return [load_board(n) for n in board_names()]
