"""Many workers on one study in a real PostgreSQL server that this test starts (and stops): the trial
count adds up, and a worker killed mid-trial (SIGKILL) loses nothing but its running trial, which the
heartbeat fails so the other workers finish the budget."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_explore import ROOT, hwkit, write_cfg

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains


def _pg_bindir() -> Path | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.isfile(f"{d}/initdb") and os.path.isfile(f"{d}/pg_ctl"):
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1 (trust auth, private port, tmp dir)."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (scripts/setup.sh --dev installs Debian's postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="hwkit-pg-", dir="/tmp"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the postgres system user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
                           check=True)
            user = pwd.getpwnam("postgres")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = tmp / "data", _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "hwkit", "--auth=trust", "-E", "UTF8", "--no-sync")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "server.log"), "-w", "-o",
       f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql://hwkit@127.0.0.1:{port}/postgres"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def _trials(url: str, name: str) -> list:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:
        return []
    finally:
        storage.engine.dispose()


def _worker(cfg: Path, out: Path, url: str, index: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hwkit.cli", "explore", str(cfg), "--out", str(out), "--storage",
                             url, "--worker-index", str(index), "--no-summary", "--quiet"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_workers_share_a_study_and_survive_a_killed_worker(pg_url, tmp_path):
    budget = 6
    cfg = write_cfg(tmp_path / "w.toml", trials=budget, epochs=3, windows=3000)
    a = _worker(cfg, tmp_path / "machine-a", pg_url, 0)  # separate out dirs: as if on separate machines
    b = _worker(cfg, tmp_path / "machine-b", pg_url, 1)
    victim = None
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and victim is None:
        time.sleep(0.2)
        for w in (a, b):
            if w.poll() is not None:
                pytest.fail(f"a worker stopped early (exit {w.returncode}): {w.communicate()[1][-2000:]}")
        trials = _trials(pg_url, "w")
        finished = {t.number: tuple(t.values) for t in trials if t.state.name == "COMPLETE"}
        running_a = [t for t in trials if t.state.name == "RUNNING" and t.user_attrs.get("worker", {}).get("pid")
                     == a.pid and "val_accuracy_by_epoch" in t.user_attrs]  # A is inside training
        if finished and running_a:
            victim = running_a[0].number
    assert victim is not None, "worker A never ran a trial while another trial was finished"
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    c = _worker(cfg, tmp_path / "machine-c", pg_url, 2)  # a new worker joins after the crash
    for w in (b, c):
        _, err = w.communicate(timeout=180)
        assert w.returncode == 0, err

    trials = {t.number: t for t in _trials(pg_url, "w")}
    states = [t.state.name for t in trials.values()]
    assert states.count("COMPLETE") == budget and "RUNNING" not in states
    assert trials[victim].state.name == "FAIL"  # failed by the heartbeat of a surviving worker
    assert "error" not in trials[victim].user_attrs
    for t in trials.values():  # any other FAIL is a start that found the budget already taken
        if t.state.name == "FAIL" and t.number != victim:
            assert t.user_attrs["error"] == "budget already reached by other workers"
    for n, values in finished.items():  # finished before the kill: kept as they were
        assert trials[n].state.name == "COMPLETE" and tuple(trials[n].values) == values
    pids = {t.user_attrs["worker"]["pid"] for t in trials.values() if t.state.name == "COMPLETE"}
    assert b.pid in pids and pids <= {a.pid, b.pid, c.pid}
    for t in trials.values():  # each trial's artefacts are on its own worker's "machine"
        if t.state.name == "COMPLETE":
            assert Path(t.user_attrs["paths"]["checkpoint"]).is_file()

    # any machine can summarise the whole study
    proc = hwkit("explore", str(cfg), "--out", str(tmp_path / "summary"), "--storage", pg_url, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["states"]["COMPLETE"] == budget and doc["storage"].startswith("postgresql+psycopg2://hwkit@127.0.0.1")
    assert len(doc["trials"]) == len(trials)
