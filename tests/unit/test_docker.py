"""docker/: the Dockerfile linted (hadolint + our rules), its pins against the lock file and finn-plus's
dependency file, and the entrypoint run outside a container against a fake Xilinx install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from importlib import util
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DOCKER = ROOT / "docker"
DOCKERFILE = (DOCKER / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in DOCKERFILE.splitlines() if not ln.lstrip().startswith("#")))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "")
            for ln in text.splitlines() if ln.strip()]


def test_hadolint_clean():
    exe = shutil.which("hadolint") or str(Path(os.sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.skip("hadolint not installed (pip install -r requirements-dev.txt)")
    proc = subprocess.run([exe, str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_rules():
    ins = _instructions()
    base = [a for i, a in ins if i == "FROM"]
    assert len(base) == 1 and ":" in base[0] and "latest" not in base[0]
    assert re.search(r":[\w.-]*\d{6,}|@sha256:[0-9a-f]{64}", base[0]), f"base image not pinned: {base[0]}"
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ins[[i for i, _ in ins].index("ENTRYPOINT")][1].startswith('["/usr/bin/tini"')
    cmds = [c for i, a in ins if i == "RUN" for c in re.findall(r"pip install ([^&]*)", a)]
    assert len(cmds) >= 4
    for cmd in cmds:
        for arg in cmd.split():
            arg = arg.strip('"')
            if arg.startswith("-") or arg.startswith("/opt/hwkit/src") or arg.startswith("http"):
                continue
            assert "==" in arg, f"unpinned pip install: {arg}"
    entry = (DOCKER / "entrypoint.sh").read_text()
    assert "git " not in entry and "pip " not in entry  # nothing fetched or installed at start-up
    assert "Vivado" not in " ".join(a for i, a in ins if i in ("COPY", "ADD"))  # no Xilinx tools in the image


def _lock_pins() -> dict[str, str]:
    pins = {}
    for ln in (ROOT / "requirements.lock.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\[\]-]+)==([\w.]+)", ln.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_pins_match_the_lock_file_and_setup():
    lock = _lock_pins()
    pins = dict(re.findall(r'"?([A-Za-z0-9_-]+)==([\w.]+)"?', " ".join(a for i, a in _instructions() if i == "RUN")))
    assert pins["torch"] == lock["torch"]
    finn = re.search(r"finn-plus==([\w.]+)", (ROOT / "scripts" / "setup.sh").read_text()).group(1)
    assert pins["finn-plus"] == finn
    for name, version in pins.items():
        if name.lower() in lock:
            assert lock[name.lower()] == version, name
    assert "requirements.lock.txt" in DOCKERFILE and "python3.11" in DOCKERFILE


def test_finn_dependency_commits_match_finn_plus():
    spec = util.find_spec("finn")
    deps = yaml.safe_load((Path(spec.submodule_search_locations[0]) / "interface" / "external_dependencies.yaml")
                          .read_text())
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.M))
    fetch = (DOCKER / "fetch_finn_deps.sh").read_text()
    for group in ("git_deps", "boardfile_deps"):
        for name, d in deps[group].items():
            key = re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_COMMIT"
            assert args.get(key) == d["commit"], f"{name}: Dockerfile {key}={args.get(key)}, finn-plus {d['commit']}"
            assert str(d["url"]) in fetch
            if group == "boardfile_deps" and d.get("subdirectory", ".") != ".":
                assert d["subdirectory"] in fetch
    for name, d in deps["direct_download_deps"].items():
        url = str(d["url"]).replace(args["NLOHMANN_JSON_VERSION"], "$NLOHMANN_JSON_VERSION")
        assert url in fetch, name


def _run_entrypoint(env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": env.pop("HOME", "/nonexistent")}
    return subprocess.run(["bash", str(DOCKER / "entrypoint.sh"), *cmd], capture_output=True, text=True,
                          env={**base, **env}, timeout=60)


def _fake_install(root: Path, version: str, unified: bool) -> Path:
    viv = root / version / "Vivado" if unified else root / "Vivado" / version
    (viv / "bin").mkdir(parents=True)
    (viv / "settings64.sh").write_text(f'export XILINX_VIVADO={viv}\nexport PATH={viv}/bin:"$PATH"\n')
    return viv


@pytest.mark.parametrize("unified", [False, True])
def test_entrypoint_sources_the_mounted_install(tmp_path, unified):
    version = "2025.1" if unified else "2024.2"
    viv = _fake_install(tmp_path / "Xilinx", version, unified)
    _fake_install(tmp_path / "Xilinx", "2022.2", False)  # an older one beside it: the newest is picked
    udev = tmp_path / "libudev.so.1"
    udev.write_text("")
    proc = _run_entrypoint({"HWKIT_XILINX_PATH": str(tmp_path / "Xilinx"), "HWKIT_LIBUDEV": str(udev)}, "env")
    assert proc.returncode == 0, proc.stderr
    env = dict(ln.split("=", 1) for ln in proc.stdout.splitlines() if "=" in ln)
    assert env["XILINX_VIVADO"] == str(viv)
    assert env["LD_PRELOAD"].split(":")[0] == str(udev)
    assert env["LD_LIBRARY_PATH"].startswith(f"{viv}/lib/lnx64.o")
    assert env["XILINX_LOCAL_USER_DATA"] == "no"
    assert env["HOME"].startswith("/tmp/hwkit-home-") or env["HOME"].endswith(f"hwkit-home-{os.getuid()}")


def test_entrypoint_explicit_version_and_errors(tmp_path):
    _fake_install(tmp_path / "X", "2024.2", False)
    _fake_install(tmp_path / "X", "2022.2", False)
    ok = _run_entrypoint({"FINN_XILINX_PATH": str(tmp_path / "X"), "HWKIT_XILINX_VERSION": "2022.2"},
                         "sh", "-c", "echo $XILINX_VIVADO")
    assert ok.returncode == 0 and ok.stdout.strip().endswith("Vivado/2022.2")
    missing = _run_entrypoint({"HWKIT_XILINX_PATH": str(tmp_path / "X"), "HWKIT_XILINX_VERSION": "2023.1"}, "true")
    assert missing.returncode == 2 and "no Vivado 2023.1 settings64.sh" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    unmounted = _run_entrypoint({"HWKIT_XILINX_PATH": str(tmp_path / "nope")}, "true")
    assert unmounted.returncode == 2 and "-v" in unmounted.stderr
    bare = _run_entrypoint({}, "sh", "-c", "echo ${XILINX_VIVADO:-none}")
    assert bare.returncode == 0 and bare.stdout.strip() == "none" and "estimate-only" in bare.stderr


def test_apptainer_recipe_uses_the_entrypoint():
    text = (DOCKER / "hwkit.def").read_text()
    assert "Bootstrap:" in text and "hwkit-entrypoint" in text and "--writable-tmpfs" in text
