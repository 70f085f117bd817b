"""``hwkit doctor``: is this machine ready to build bitstreams? Each check prints the exact fix.

Checks (each ok / warn / fail / skip): Vivado found (``--xilinx-path``, XILINX_VIVADO or ``vivado`` on
PATH) and its environment sourced; its version (``vivado -version``) and whether finn-plus can read it
from XILINX_VIVADO; the install layout (``<root>/Vivado/<ver>`` before 2025.1, ``<root>/<ver>/Vivado``
from 2025.1 on) and the HLS tool finn-plus calls for that version (``vitis_hls`` up to 2024.2,
``vitis-run`` after); the device family of the target's part; a license for the part (none for
WebPACK/Standard parts: ``webpack`` in the board file); the Vivado board files of the board part; RAM
(``min_ram_gib`` in the board file) and free disk; the system libraries Vivado and FlexLM load.

Everything here is the standard library, so ``hwkit doctor`` starts fast, and every probe takes its
environment as an argument so the tests run it against fake Vivado trees.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hwkit.board import Board
from hwkit.errors import ToolError

TESTED_VIVADO = ("2022.2", "2024.2")
"""Vivado versions finn-plus 1.6.1 is tested with (its README); others get a warning, not a failure."""
NEW_LAYOUT_FROM = (2025, 1)
"""From 2025.1 AMD installs ``<root>/<ver>/Vivado`` (and HLS under Vitis) instead of ``<root>/Vivado/<ver>``."""
HLS_RUN_FROM = (2025, 1)
"""finn-plus calls ``vitis-run --mode hls`` for Vivado newer than 2024.2, ``vitis_hls`` before."""
MIN_DISK_GIB = 20.0
"""Free space a bitstream build directory needs (HLS projects, stitched IP, synthesis runs, checkpoints)."""
DEFAULT_MIN_RAM_GIB = 16.0
"""RAM when the board file gives no ``min_ram_gib``."""
LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")
VERSION_RE = re.compile(r"\b(20\d\d)\.(\d)\b")
STATUSES = ("ok", "warn", "fail", "skip")


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    name: str
    status: str
    """ok | warn | fail | skip."""
    detail: str
    fix: str = ""
    """The one thing to do when status is fail or warn."""


@dataclass(frozen=True)
class VivadoInstall:
    """Where Vivado is and how it is laid out."""

    vivado_dir: Path
    """The XILINX_VIVADO directory (holds bin/vivado and settings64.sh)."""
    version: str | None
    """``2024.2``, from ``vivado -version`` or else the path."""
    layout: str
    """``classic`` (<root>/Vivado/<ver>), ``unified`` (<root>/<ver>/Vivado) or ``unknown``."""
    root: Path | None
    """The Xilinx install root (what a container mounts)."""
    hls_tool: Path | None
    """The HLS executable finn-plus will call for this version, if found."""
    from_env: bool
    """True when XILINX_VIVADO points at it (settings64.sh sourced)."""


@dataclass(frozen=True)
class Probe:
    """The environment the checks look at (the real one by default; the tests pass fakes)."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    lib_dirs: Sequence[str] = LIB_DIRS
    ram_gib: float | None = None
    """None: read /proc/meminfo."""
    timeout_s: float = 120.0


def _ver(text: str | None) -> tuple[int, int] | None:
    m = VERSION_RE.search(text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _exe(d: Path, name: str) -> Path | None:
    p = d / "bin" / name
    return p if p.is_file() and os.access(p, os.X_OK) else None


def installs_under(root: Path) -> list[Path]:
    """Vivado directories below a Xilinx root, in either layout, newest version first."""
    found = [p for p in root.glob("Vivado/20*.*") if _exe(p, "vivado")]
    found += [p / "Vivado" for p in root.glob("20*.*") if _exe(p / "Vivado", "vivado")]
    return sorted(found, key=lambda p: _ver(str(p)) or (0, 0), reverse=True)


def _layout(vivado_dir: Path, version: str | None) -> tuple[str, Path | None]:
    if vivado_dir.parent.name == "Vivado" and _ver(vivado_dir.name):
        return "classic", vivado_dir.parent.parent
    if vivado_dir.name == "Vivado" and _ver(vivado_dir.parent.name):
        return "unified", vivado_dir.parent.parent
    return "unknown", None


def _hls_tool(vivado_dir: Path, layout: str, root: Path | None, version: str | None,
              env: Mapping[str, str]) -> Path | None:
    v = _ver(version)
    name = "vitis-run" if v is not None and v >= HLS_RUN_FROM else "vitis_hls"
    candidates: list[Path] = []
    if env.get("XILINX_HLS"):
        candidates.append(Path(env["XILINX_HLS"]))
    if env.get("XILINX_VITIS"):
        candidates.append(Path(env["XILINX_VITIS"]))
    if root is not None and version:
        if layout == "unified":
            candidates.append(root / version / "Vitis")
        else:
            candidates += [root / "Vitis_HLS" / version, root / "Vitis" / version]
    for c in candidates:
        exe = _exe(c, name)
        if exe:
            return exe
    on_path = shutil.which(name, path=env.get("PATH", ""))
    return Path(on_path) if on_path else None


def vivado_version(vivado: Path, probe: Probe) -> str | None:
    """``2024.2`` from ``vivado -version`` (first line ``vivado v2024.2 (64-bit)``)."""
    try:
        out = subprocess.run([str(vivado), "-version"], capture_output=True, text=True, timeout=probe.timeout_s,
                             env=dict(probe.env), check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"\bv(20\d\d\.\d)\b", out.stdout + out.stderr)
    return m.group(1) if m else None


def find_vivado(probe: Probe, xilinx_path: str | None = None) -> VivadoInstall | None:
    """Vivado from --xilinx-path, XILINX_VIVADO, or ``vivado`` on PATH (in that order)."""
    env = probe.env
    vivado_dir: Path | None = None
    if xilinx_path:
        p = Path(xilinx_path)
        if _exe(p, "vivado"):
            vivado_dir = p
        else:
            found = installs_under(p)
            env_ver = _ver(env.get("XILINX_VIVADO"))
            match = [f for f in found if env_ver and _ver(str(f)) == env_ver]
            vivado_dir = (match or found)[0] if (match or found) else None
    elif env.get("XILINX_VIVADO"):
        vivado_dir = Path(env["XILINX_VIVADO"])
    else:
        exe = shutil.which("vivado", path=env.get("PATH", ""))
        if exe:
            vivado_dir = Path(exe).resolve().parent.parent
    if vivado_dir is None or not _exe(vivado_dir, "vivado"):
        return None
    dir_ver = _ver(str(vivado_dir))
    version = vivado_version(vivado_dir / "bin" / "vivado", probe) or (
        f"{dir_ver[0]}.{dir_ver[1]}" if dir_ver else None)
    layout, root = _layout(vivado_dir, version)
    from_env = bool(env.get("XILINX_VIVADO")) and Path(env["XILINX_VIVADO"]).resolve() == vivado_dir.resolve()
    return VivadoInstall(vivado_dir, version, layout, root, _hls_tool(vivado_dir, layout, root, version, env),
                         from_env)


def _settings(inst: VivadoInstall) -> Path:
    return inst.vivado_dir / "settings64.sh"


def check_vivado(inst: VivadoInstall | None, probe: Probe, xilinx_path: str | None) -> list[Check]:
    """Presence, sourced environment, version, layout and the HLS tool."""
    if inst is None:
        where = f"under {xilinx_path}" if xilinx_path else "(XILINX_VIVADO unset, no `vivado` on PATH)"
        return [Check("vivado", "fail", f"Vivado not found {where}",
                      "install AMD Vivado (2022.2 or 2024.2 for finn-plus 1.6.1), then `source "
                      "<Xilinx>/Vivado/<ver>/settings64.sh` (2025.1+: <Xilinx>/<ver>/Vivado/settings64.sh), "
                      "or pass --xilinx-path <Xilinx>")]
    checks = [Check("vivado", "ok", f"{inst.vivado_dir}")]
    if inst.from_env:
        checks.append(Check("vivado environment", "ok", f"XILINX_VIVADO={inst.vivado_dir}"))
    else:
        state = "points elsewhere" if probe.env.get("XILINX_VIVADO") else "unset"
        checks.append(Check("vivado environment", "fail", f"found, but its settings64.sh is not sourced "
                            f"(XILINX_VIVADO {state})", f"source {_settings(inst)}"))
    if inst.version is None:
        checks.append(Check("vivado version", "fail", "`vivado -version` printed no version",
                            f"run `{inst.vivado_dir}/bin/vivado -version` and repair the install"))
    else:
        path_ver = _ver(probe.env.get("XILINX_VIVADO")) if inst.from_env else _ver(str(inst.vivado_dir))
        tested = inst.version in TESTED_VIVADO
        if path_ver is None:
            checks.append(Check("vivado version", "fail", f"{inst.version}, but finn-plus reads the version from "
                                f"the XILINX_VIVADO path ({inst.vivado_dir}), which has none",
                                f"install under a versioned path (<Xilinx>/Vivado/{inst.version}) or link one to it"))
        elif "{}.{}".format(*path_ver) != inst.version:
            checks.append(Check("vivado version", "fail", f"`vivado -version` says {inst.version} but the path says "
                                "{}.{}".format(*path_ver), f"source the settings64.sh of Vivado {inst.version}"))
        else:
            checks.append(Check("vivado version", "ok" if tested else "warn",
                                inst.version + ("" if tested else f" (finn-plus 1.6.1 is tested with "
                                                                  f"{' and '.join(TESTED_VIVADO)})"),
                                "" if tested else f"use Vivado {TESTED_VIVADO[-1]} for a tested build"))
    v = _ver(inst.version)
    want = "unified" if v is not None and v >= NEW_LAYOUT_FROM else "classic"
    shape = {"classic": "<root>/Vivado/<ver>", "unified": "<root>/<ver>/Vivado"}
    if inst.layout == "unknown":
        checks.append(Check("install layout", "warn", f"{inst.vivado_dir} is neither {shape['classic']} nor "
                            f"{shape['unified']}", "mount or install the tools in AMD's layout so the container "
                            "entrypoint and finn-plus find Vitis HLS next to Vivado"))
    elif v is not None and inst.layout != want:
        checks.append(Check("install layout", "warn", f"{inst.layout} layout ({shape[inst.layout]}) for {inst.version},"
                            f" which AMD installs as {shape[want]}", "check that this is a complete install"))
    else:
        checks.append(Check("install layout", "ok", f"{inst.layout}: {shape.get(inst.layout, '?')} under {inst.root}"))
    hls = "vitis-run" if v is not None and v >= HLS_RUN_FROM else "vitis_hls"
    if inst.hls_tool is None:
        where = (f"{inst.root}/{inst.version}/Vitis/bin" if want == "unified"
                 else f"{inst.root}/Vitis_HLS/{inst.version}/bin")
        checks.append(Check("hls tool", "fail", f"{hls} not found (finn-plus runs it for HLS IP generation)",
                            f"install Vitis HLS {inst.version or ''} ({where}) and source its settings64.sh"))
    else:
        checks.append(Check("hls tool", "ok", str(inst.hls_tool)))
    return checks


def check_part(inst: VivadoInstall | None, board: Board) -> Check:
    """The part's device family is installed (Vivado error 'Part ... is not installed', FINN #948)."""
    family_dir = board.vivado_device_dir
    if inst is None or not family_dir:
        return Check("part installed", "skip", "no Vivado" if inst is None else "board file names no vivado_device_dir")
    parts = inst.vivado_dir / "data" / "parts" / "xilinx"
    if (parts / str(family_dir)).is_dir():
        return Check("part installed", "ok", f"{board.part} ({parts / str(family_dir)})")
    return Check("part installed", "warn", f"{board.part}: no {parts / str(family_dir)}",
                 "add the device family with the Vivado installer (Help > Add Design Tools or Devices) for "
                 f"{board.part}")


_PORT_AT_HOST = re.compile(r"^(\d*)@([A-Za-z0-9_.-]+)$")


def _reachable(host: str, port: int, timeout_s: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def check_license(board: Board, probe: Probe) -> Check:
    """A license for the part: WebPACK/Standard parts need none; others a file or a port@host server."""
    if board.webpack is True:
        return Check("license", "ok", f"{board.part} is a WebPACK/Standard part: no license needed")
    env = probe.env
    raw = env.get("XILINXD_LICENSE_FILE") or env.get("LM_LICENSE_FILE")
    default = Path(env.get("HOME", "~")).expanduser() / ".Xilinx" / "Xilinx.lic"
    need = ("needs a paid license" if board.webpack is False
            else "may need a license (the board file has no webpack fact)")
    fix = ("set XILINXD_LICENSE_FILE to the license file or to port@host of the license server "
           f"(e.g. 2100@licserver); {board.part} {need}")
    if not raw:
        if default.is_file():
            return Check("license", "ok", f"{default}")
        return Check("license", "fail", f"{board.part} {need}; XILINXD_LICENSE_FILE and LM_LICENSE_FILE are unset", fix)
    problems, good = [], []
    for entry in [e for e in raw.split(":") if e]:
        m = _PORT_AT_HOST.match(entry)
        if m:
            if _reachable(m.group(2), int(m.group(1) or 27000)):
                good.append(entry)
            else:
                problems.append(f"{entry} (license server not reachable)")
        elif Path(entry).is_file() or (Path(entry).is_dir() and any(Path(entry).glob("*.lic"))):
            good.append(entry)
        else:
            problems.append(f"{entry} (no such file)")
    if good:
        return Check("license", "ok", ", ".join(good))
    return Check("license", "fail", "; ".join(problems), fix)


def _board_roots(inst: VivadoInstall | None, env: Mapping[str, str]) -> list[Path]:
    roots: list[Path] = []
    if inst is not None:
        data = inst.vivado_dir / "data"
        roots += [data / "boards" / "board_files", data / "xhub" / "boards" / "XilinxBoardStore" / "boards" / "Xilinx"]
        if inst.version:
            home = Path(env.get("HOME", "~")).expanduser()
            roots.append(home / ".Xilinx" / "Vivado" / inst.version / "xhub" / "board_store")
    if env.get("FINN_DEPS"):
        roots.append(Path(env["FINN_DEPS"]) / "board_files")
    roots += [Path(p) for p in env.get("HWKIT_BOARD_REPO_PATHS", "").split(":") if p]
    return roots


def check_board_files(inst: VivadoInstall | None, board: Board, probe: Probe) -> Check:
    """Board files for the board part (vendor:name:part0:version) in Vivado's or finn-plus's board repos."""
    if not board.board_part:
        return Check("board files", "skip", "the board file names no board_part (part-only build)")
    try:
        _vendor, name, _comp, version = board.board_part.split(":")
    except ValueError:
        return Check("board files", "fail", f"board_part {board.board_part!r} is not vendor:board:part0:version",
                     f"fix board_part in {board.source}")
    roots = [r for r in _board_roots(inst, probe.env) if r.is_dir()]
    for root in roots:
        for pat in (f"{name}/{version}/board.xml", f"*/{name}/{version}/board.xml", f"**/{name}/{version}/board.xml"):
            hit = next(iter(root.glob(pat)), None)
            if hit is not None:
                return Check("board files", "ok", f"{board.board_part}: {hit.parent}")
    where = ", ".join(str(r) for r in roots) or "no board repository found"
    return Check("board files", "fail", f"{board.board_part} not found ({where})",
                 f"install the {name} {version} board files (Vivado: Tools > Vivado Store > Boards, or set FINN_DEPS "
                 "to a finn-plus dependency folder with board_files/, as the hwkit image does)")


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        return None
    return None


def check_resources(board: Board, probe: Probe, build_dir: Path) -> list[Check]:
    """RAM (board's ``min_ram_gib``) and free disk where the build goes."""
    need = board.min_ram_gib or DEFAULT_MIN_RAM_GIB
    have = probe.ram_gib if probe.ram_gib is not None else _ram_gib()
    out = []
    if have is None:
        out.append(Check("ram", "warn", "cannot read /proc/meminfo", f"make sure the machine has >= {need:g} GiB"))
    elif have + 0.5 < need:  # MemTotal is a little below the installed size
        out.append(Check("ram", "fail", f"{have:.1f} GiB < {need:g} GiB for {board.part} (synthesis is killed "
                         "when it runs out, FINN #1272)", f"use a machine with >= {need:g} GiB RAM"))
    else:
        out.append(Check("ram", "ok", f"{have:.1f} GiB (>= {need:g} GiB for {board.part})"))
    d = build_dir
    while not d.exists() and d != d.parent:
        d = d.parent
    free = shutil.disk_usage(d).free / 2**30
    want = board.min_disk_gib or MIN_DISK_GIB
    out.append(Check("disk", "ok" if free >= want else "fail", f"{free:.1f} GiB free at {d}",
                     "" if free >= want else f"free >= {want:g} GiB at {d} or build elsewhere with --out"))
    return out


def find_lib(soname: str, lib_dirs: Sequence[str]) -> str | None:
    """A library by exact soname (``libtinfo.so.5``) in ``lib_dirs``, else via the loader cache."""
    for d in lib_dirs:
        if (Path(d) / soname).exists():
            return str(Path(d) / soname)
    if tuple(lib_dirs) != LIB_DIRS:  # the tests pass their own directories; do not look at this machine
        return None
    found = ctypes.util.find_library(soname.removeprefix("lib").split(".so")[0])
    return found if found == soname else None


def check_libs(inst: VivadoInstall | None, probe: Probe) -> list[Check]:
    """libtinfo5/libncurses5 (Vivado <= 2024.x), libudev (FlexLM)."""
    v = _ver(inst.version if inst else None)
    out = []
    old = v is None or v < (2025, 1)
    for soname, pkg in (("libtinfo.so.5", "libtinfo5"), ("libncurses.so.5", "libncurses5")):
        hit = find_lib(soname, probe.lib_dirs)
        status = "ok" if hit else ("fail" if old and inst is not None else "warn" if old else "skip")
        out.append(Check(soname, status, hit or f"{soname} not found (Vivado {inst.version if inst else '<= 2024.2'} "
                         "loads it)", "" if hit else f"apt-get install {pkg} (Ubuntu 22.04; on 24.04 install the "
                         "22.04 package or use the hwkit image)"))
    hit = find_lib("libudev.so.1", probe.lib_dirs)
    out.append(Check("libudev.so.1", "ok" if hit else "warn", hit or "not found (FlexLM license checks use it)",
                     "" if hit else "apt-get install libudev1"))
    return out


def run_checks(board: Board, probe: Probe | None = None, xilinx_path: str | None = None,
               build_dir: Path = Path("build")) -> list[Check]:
    """Every check for building ``board``'s bitstream on this machine."""
    probe = probe or Probe()
    inst = find_vivado(probe, xilinx_path)
    checks = check_vivado(inst, probe, xilinx_path)
    checks.append(check_part(inst, board))
    checks.append(check_license(board, probe))
    checks.append(check_board_files(inst, board, probe))
    checks += check_resources(board, probe, build_dir.resolve())
    checks += check_libs(inst, probe)
    return checks


def require_tools(requires: Sequence[str], flow_name: str, env: Mapping[str, str] | None = None) -> None:
    """Stop before any work when a flow needs a tool this environment lacks (one line, non-zero exit)."""
    env = os.environ if env is None else env
    if "vivado" in requires:
        vivado = env.get("XILINX_VIVADO")
        if not vivado:
            raise ToolError(f"flow '{flow_name}' needs AMD Vivado and XILINX_VIVADO is not set: source "
                            "<Xilinx>/Vivado/<ver>/settings64.sh or build in the hwkit image (docs/bitstream.md); "
                            "`hwkit doctor --target <board>` lists what is missing")
        if not _exe(Path(vivado), "vivado"):
            raise ToolError(f"flow '{flow_name}' needs AMD Vivado, but XILINX_VIVADO={vivado} has no bin/vivado; "
                            "`hwkit doctor --target <board>` lists what is missing")
