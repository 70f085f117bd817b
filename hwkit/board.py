"""Boards as data: every fact about a target lives in ``boards/<name>.toml``.

The file name is the ``--target`` value. Code reads fields, never board names. A path to a TOML
file is accepted as a target too, so a user can describe a board hwkit does not ship.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from hwkit.errors import BoardError, FlowError

KINDS = ("fpga", "cpu", "gpu", "analog")
RESOURCE_KEYS = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")
SHELL_FLOWS = ("vivado_zynq", "vitis_alveo")
ORT_LEVELS = ("disable", "basic", "extended", "layout", "all")
"""ONNX Runtime graph optimisation levels a board may name."""
METERS = ("rapl", "nvml", "none")
"""Energy meters of ``[power] meter``."""
PROGRAMMING = ("open-loop", "write-verify")
"""How an analog board programs its devices."""
ANALOG_COEFFICIENTS = ("read_voltage_v", "read_time_ns", "adc_energy_pj", "adc_ref_bits", "adc_conversion_ns",
                       "dac_energy_pj_per_bit", "digital_add_pj", "digital_ns_per_layer")
"""The per-operation ``[analog.coefficients]`` an analog board must give, each [low, value, high]."""
_NOT_IN_KEY = {"cache_key": False}
"""Field metadata: presentation only, left out of :meth:`Board.cache_facts`."""


@dataclass(frozen=True)
class Span:
    """A low / central / high value."""

    low: float
    value: float
    high: float

    def __add__(self, other: Span) -> Span:
        return Span(self.low + other.low, self.value + other.value, self.high + other.high)

    def scale(self, k: float) -> Span:
        """Multiply all three by a non-negative ``k``."""
        return Span(self.low * k, self.value * k, self.high * k)


def parse_span(v: Any, where: str) -> Span:
    """A number or ``[low, value, high]`` (low <= value <= high) as a :class:`Span`."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return Span(float(v), float(v), float(v))
    if (isinstance(v, list) and len(v) == 3 and all(isinstance(x, int | float) for x in v)
            and v[0] <= v[1] <= v[2]):
        return Span(float(v[0]), float(v[1]), float(v[2]))
    raise BoardError(f"{where} must be a number or [low, value, high] with low <= value <= high, got {v!r}")


@dataclass(frozen=True)
class PowerSection:
    """``[power]``: the static/PS power of an FPGA board, or the energy meter of a CPU/GPU board."""

    static_w: Span | None = None
    """FPGA device static power, W (required by the FPGA power estimate)."""
    ps_w: Span | None = None
    """Processor-system power while it drives the accelerator (Zynq boards), W."""
    board_idle_w: float | None = None
    """Measured idle power of the whole board, W."""
    meter: str = "none"
    """Energy counter of CPU/GPU boards: rapl | nvml | none."""
    tdp_w: float | None = None
    """Rated package/board power for the estimate when no counter is readable, W."""
    cores: int | None = None
    """CPU cores the TDP is spread over (omitted: the host's CPU count)."""
    device_id: int = 0
    """NVML device index (meter = nvml)."""
    powercap_root: str = "/sys/class/powercap"
    """Where the RAPL counters are read (meter = rapl)."""


@dataclass(frozen=True)
class OrtSection:
    """``[onnxruntime]``: how ONNX Runtime sessions are built for this board."""

    execution_providers: tuple[str, ...]
    """Providers in order; the first is required, later ones are fallbacks."""
    graph_optimization_level: str = "all"
    """One of :data:`ORT_LEVELS`."""
    intra_op_threads: int = 0
    """0: ONNX Runtime chooses."""
    inter_op_threads: int = 0
    """0: ONNX Runtime chooses."""
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Options per provider, e.g. ``{"CUDAExecutionProvider": {"device_id": 0}}``."""


@dataclass(frozen=True)
class AnalogSection:
    """``[analog]``: crossbar geometry, periphery, programming and per-operation energy of an analog board."""

    device: str
    """Device preset name (boards/devices/) or a path to a device TOML (resolved against the board file)."""
    crossbar_rows: int
    """Rows of one crossbar tile."""
    crossbar_cols: int
    """Physical columns of one tile; a weight uses two (G+ and G-)."""
    device_instances: int
    """Independent device samples + programmings the simulated accuracy is averaged over."""
    adc_bits: int
    """ADC resolution, 1..16."""
    dac_bits: int
    """DAC resolution, 1..16."""
    adcs_per_tile: int = 1
    """Column ADCs shared by one tile (time-multiplexed)."""
    programming: str = "open-loop"
    """One of :data:`PROGRAMMING`."""
    verify_tolerance: float = 0.02
    """write-verify: accept |w_read - w| <= tolerance * beta."""
    verify_max_iterations: int = 20
    """write-verify: correction rounds after the open-loop write."""
    device_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of the device preset this chip changes."""
    coefficients: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """Every :data:`ANALOG_COEFFICIENTS` entry as (low, value, high)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where each coefficient comes from."""


@dataclass(frozen=True)
class Board:
    """One target, as loaded from its TOML file."""

    name: str = field(metadata=_NOT_IN_KEY)
    """The ``--target`` value (the file name without ``.toml``)."""
    kind: str
    """One of fpga | cpu | gpu | analog."""
    description: str = field(metadata=_NOT_IN_KEY)
    """One line shown by ``hwkit boards``."""
    default_flow: str = field(metadata=_NOT_IN_KEY)
    """Flow used when ``--flow`` is not given."""
    source: str = field(metadata=_NOT_IN_KEY)
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
    power: PowerSection | None = None
    """``[power]``: power model (FPGA) or energy meter (CPU/GPU); None when the file has none."""
    onnxruntime: OrtSection | None = None
    """``[onnxruntime]``: session settings of CPU/GPU boards."""
    analog: AnalogSection | None = None
    """``[analog]``: crossbar settings of analog boards."""
    webpack: bool | None = None
    """True: the part needs no Vivado license; False: it needs a paid one; None: unknown."""
    min_ram_gib: float | None = None
    """RAM a bitstream build of this part needs, GiB (``hwkit doctor``)."""
    min_disk_gib: float | None = None
    """Free disk a bitstream build needs, GiB (``hwkit doctor``)."""
    vivado_device_dir: str | None = None
    """Folder of the part's family under <Vivado>/data/parts/xilinx (``hwkit doctor``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Tables of the file hwkit does not read (kept for the user's own tools; they enter the cache key)."""

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

    def cache_facts(self) -> dict[str, Any]:
        """Every field that can change what a pass computes, for the runner's cache key.

        Derived from the dataclass itself, so a new field enters the key unless it is marked as
        presentation only (name, description, default flow, file location).
        """
        keyed = {f.name for f in fields(self) if f.metadata.get("cache_key", True)}
        return {k: v for k, v in asdict(self).items() if k in keyed}


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


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    raw = data.get(key)
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise BoardError(f"{where}: [{key}] must be a table")
    return raw


def parse_power(raw: Mapping[str, Any], source: str) -> PowerSection:
    """The ``[power]`` table: FPGA static/PS power, or a CPU/GPU energy meter."""
    where = f"{source} [power]"
    meter = raw.get("meter", "none")
    if meter not in METERS:
        raise BoardError(f"{where}: 'meter' must be rapl, nvml or none, got {meter!r}")
    tdp = raw.get("tdp_w")
    if tdp is not None and (not _number(tdp) or tdp <= 0):
        raise BoardError(f"{where}: 'tdp_w' must be a positive number, got {tdp!r}")
    idle = raw.get("board_idle_w")
    if idle is not None and not _number(idle):
        raise BoardError(f"{where}: 'board_idle_w' must be a number, got {idle!r}")
    cores = raw.get("cores")
    if cores is not None and (not isinstance(cores, int) or isinstance(cores, bool) or cores < 1):
        raise BoardError(f"{where}: 'cores' must be an integer >= 1, got {cores!r}")
    device_id = raw.get("device_id", 0)
    if not isinstance(device_id, int) or isinstance(device_id, bool) or device_id < 0:
        raise BoardError(f"{where}: 'device_id' must be an integer >= 0, got {device_id!r}")
    return PowerSection(
        static_w=parse_span(raw["static_w"], f"{where} static_w") if "static_w" in raw else None,
        ps_w=parse_span(raw["ps_w"], f"{where} ps_w") if "ps_w" in raw else None,
        board_idle_w=None if idle is None else float(idle),
        meter=meter,
        tdp_w=None if tdp is None else float(tdp),
        cores=cores,
        device_id=device_id,
        powercap_root=str(raw.get("powercap_root", "/sys/class/powercap")),
    )


def parse_onnxruntime(raw: Mapping[str, Any], source: str) -> OrtSection:
    """The ``[onnxruntime]`` table (errors name the board file and field)."""
    where = f"{source} [onnxruntime]"
    eps = raw.get("execution_providers")
    if not isinstance(eps, list) or not eps or not all(isinstance(e, str) for e in eps):
        raise BoardError(f"{where}: 'execution_providers' must be a non-empty list of provider names")
    level = raw.get("graph_optimization_level", "all")
    if level not in ORT_LEVELS:
        raise BoardError(f"{where}: 'graph_optimization_level' must be one of {', '.join(ORT_LEVELS)}, "
                         f"got {level!r}")
    threads = {}
    for key in ("intra_op_threads", "inter_op_threads"):
        v = raw.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise BoardError(f"{where}: '{key}' must be an integer >= 0, got {v!r}")
        threads[key] = v
    opts = raw.get("provider_options", {})
    if not isinstance(opts, Mapping) or not all(isinstance(v, Mapping) for v in opts.values()):
        raise BoardError(f"{where}: 'provider_options' must be a table of tables keyed by provider")
    return OrtSection(tuple(eps), level, threads["intra_op_threads"], threads["inter_op_threads"],
                      {k: dict(v) for k, v in opts.items()})


def parse_programming(raw: Mapping[str, Any], where: str, base: Mapping[str, Any] | None = None,
                      error: type[BoardError] | type[FlowError] = BoardError) -> dict[str, Any]:
    """programming / verify_tolerance / verify_max_iterations from a board table or flow parameters."""
    base = base or {"programming": "open-loop", "verify_tolerance": 0.02, "verify_max_iterations": 20}
    out = dict(base)
    mode = raw.get("programming", base["programming"])
    if mode not in PROGRAMMING:
        raise error(f"{where}: 'programming' must be one of {', '.join(PROGRAMMING)}, got {mode!r}")
    out["programming"] = mode
    tol = raw.get("verify_tolerance", base["verify_tolerance"])
    if not _number(tol) or not 0 < tol <= 1:
        raise error(f"{where}: 'verify_tolerance' must be a number in (0, 1] (fraction of the weight range "
                    f"beta), got {tol!r}")
    out["verify_tolerance"] = float(tol)
    it = raw.get("verify_max_iterations", base["verify_max_iterations"])
    if isinstance(it, bool) or not isinstance(it, int) or not 0 <= it <= 1000:
        raise error(f"{where}: 'verify_max_iterations' must be an integer in 0..1000, got {it!r}")
    out["verify_max_iterations"] = it
    return out


def parse_analog(raw: Mapping[str, Any], source: str) -> AnalogSection:
    """The ``[analog]`` table (the device preset itself is loaded by the analog backend)."""
    where = f"{source} [analog]"
    ints: dict[str, int] = {}
    for key, lo in (("crossbar_rows", 1), ("crossbar_cols", 2), ("device_instances", 1), ("adcs_per_tile", 1)):
        v = raw.get(key, 1 if key == "adcs_per_tile" else None)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise BoardError(f"{where}: '{key}' must be an integer >= {lo}, got {v!r}")
        ints[key] = v
    for key in ("adc_bits", "dac_bits"):
        v = raw.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 16:
            raise BoardError(f"{where}: '{key}' must be an integer in 1..16, got {v!r}")
        ints[key] = v
    prog = parse_programming(raw, where)
    ref = raw.get("device")
    if not isinstance(ref, str):
        raise BoardError(f"{where}: 'device' must be a device preset name or a path to a device TOML")
    if ref.endswith(".toml") and not Path(ref).is_absolute():
        ref = str(Path(source).parent / ref)
    overrides = raw.get("device_overrides", {})
    if not isinstance(overrides, Mapping):
        raise BoardError(f"{where}: 'device_overrides' must be a table")
    coeffs = raw.get("coefficients")
    sources = raw.get("sources", {})
    if not isinstance(coeffs, Mapping):
        raise BoardError(f"{where}: missing table [analog.coefficients]")
    if not isinstance(sources, Mapping):
        raise BoardError(f"{where}: 'sources' must be a table")
    spans: dict[str, tuple[float, float, float]] = {}
    for key in ANALOG_COEFFICIENTS:
        v = coeffs.get(key)
        if (not isinstance(v, list) or len(v) != 3 or not all(_number(x) for x in v)
                or not v[0] <= v[1] <= v[2] or v[0] < 0):
            raise BoardError(f"{where}.coefficients: '{key}' must be [low, value, high] with 0 <= low <= value "
                             f"<= high, got {v!r}")
        if not isinstance(sources.get(key), str):
            raise BoardError(f"{where}.sources: '{key}' needs a source string")
        spans[key] = (float(v[0]), float(v[1]), float(v[2]))
    return AnalogSection(
        device=ref, crossbar_rows=ints["crossbar_rows"], crossbar_cols=ints["crossbar_cols"],
        device_instances=ints["device_instances"], adc_bits=ints["adc_bits"], dac_bits=ints["dac_bits"],
        adcs_per_tile=ints["adcs_per_tile"], programming=prog["programming"],
        verify_tolerance=prog["verify_tolerance"], verify_max_iterations=prog["verify_max_iterations"],
        device_overrides=dict(overrides), coefficients=spans, sources=dict(sources),
    )


def _optional(data: Mapping[str, Any], key: str, ok: bool, what: str, where: str) -> Any:
    if key in data and not ok:
        raise BoardError(f"{where}: field '{key}' must be {what}, got {data[key]!r}")
    return data.get(key)


def _sections(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The typed tables and the bitstream prerequisites every kind of board may have."""
    out: dict[str, Any] = {}
    power = _table(data, "power", source)
    out["power"] = None if power is None else parse_power(power, source)
    ort = _table(data, "onnxruntime", source)
    out["onnxruntime"] = None if ort is None else parse_onnxruntime(ort, source)
    analog = _table(data, "analog", source)
    out["analog"] = None if analog is None else parse_analog(analog, source)
    out["webpack"] = _optional(data, "webpack", isinstance(data.get("webpack"), bool), "true or false", source)
    for key in ("min_ram_gib", "min_disk_gib"):
        v = _optional(data, key, _number(data.get(key)) and data[key] > 0, "a positive number", source)
        out[key] = None if v is None else float(v)
    out["vivado_device_dir"] = _optional(data, "vivado_device_dir", isinstance(data.get("vivado_device_dir"), str),
                                         "a folder name", source)
    return out


_SECTION_KEYS = ("power", "onnxruntime", "analog", "webpack", "min_ram_gib", "min_disk_gib", "vivado_device_dir")


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
        "shell_flow", "axi_width_bits", "vitis_platform", "family", "resources", *_SECTION_KEYS,
    }
    common = {
        "name": name,
        "kind": kind,
        "description": _require(data, "description", str, where),
        "default_flow": _require(data, "default_flow", str, where),
        "source": source,
        **_sections(data, source),
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
