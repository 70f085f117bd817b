"""``hwkit explore`` end to end on the default SQLite storage: real training, a real FINN compile in every
trial of the first test, pruning, Ctrl-C and resume, --best."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains

ROOT = Path(__file__).resolve().parents[2]

TINY = """
target = "zcu104"
hardware = "{hardware}"
trials = {trials}
objectives = {objectives}
[space]
bits = {bits}
depth = {depth}
width_scale = [0.25]
{extra_space}
[data]
synthetic_seconds = 8
[train]
epochs = {epochs}
max_train_windows = {windows}
patience = 0
[study]
sampler = "random"
seed = 0
heartbeat_s = 1
grace_s = 3
{extra}
"""


def write_cfg(path: Path, hardware: str = "none", trials: int = 2, epochs: int = 1, windows: int = 2000,
              objectives: str = '["accuracy", "weight_kbit"]', extra_space: str = "", extra: str = "",
              bits: str = "[2, 3]", depth: str = "[1, 2]") -> Path:
    path.write_text(TINY.format(hardware=hardware, trials=trials, epochs=epochs, windows=windows, bits=bits,
                                depth=depth, objectives=objectives, extra_space=extra_space, extra=extra))
    return path


def run_explore(cfg: Path, out: Path) -> list[dict]:
    proc = hwkit("explore", str(cfg), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["trials"]


def hwkit(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hwkit.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def load(url: str, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=url)


def test_trials_compile_and_best_is_exported(tmp_path):
    cfg = write_cfg(tmp_path / "hw.toml", hardware="finn-estimate", objectives='["accuracy", "LUT", "energy_mj"]',
                    extra_space="target_fps = [100000]", extra="[constraints]\nfits = true")
    out = tmp_path / "out"
    proc = hwkit("explore", str(cfg), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["states"] == {"COMPLETE": 2} and doc["budget"] == 2
    assert (out / "explore.db").is_file()
    for r in doc["trials"]:
        tdir = out / "trials" / str(r["number"])
        assert (tdir / "model.pt").is_file()
        report = json.loads((tdir / "build" / "report.json").read_text())
        # the trial's objectives are the compile report's numbers
        assert r["metrics"]["LUT"] == report["resources"]["LUT"]["used"]["value"] > 0
        pl_ps = next(e for e in report["energy"] if e["name"] == "PL+PS energy, single-shot")
        assert r["metrics"]["energy_mj"] == pytest.approx(pl_ps["value"])
        assert r["params"]["bits"] in (2, 3) and r["params"]["target_fps"] == 100000
        assert r["feasible"] is True and r["metrics"]["fits"] == 1.0
    assert doc["front"] and doc["best"] in doc["front"]
    html = (out / "report.html").read_text()
    assert 'data-plot="pareto-LUT"' in html and 'data-plot="pareto-energy_mj"' in html
    assert "Pareto front" in (out / "summary.md").read_text()

    proc = hwkit("explore", str(cfg), "--out", str(out), "--best", "--json")
    assert proc.returncode == 0, proc.stderr
    choice = json.loads(proc.stdout)
    assert choice["trial"] == doc["best"] and choice["retrained"] is False
    best_report = json.loads((out / "best" / "build" / "report.json").read_text())
    assert best_report["resources"]["LUT"]["used"]["value"] == choice["metrics"]["LUT"]
    assert (out / "best" / "model.pt").read_bytes() == (out / "trials" / str(choice["trial"]) / "model.pt").read_bytes()

    proc = hwkit("explore", str(cfg), "--out", str(out), "--best", "--pick", "99")
    assert proc.returncode == 2 and "--pick 99: the study has no trial 99" in proc.stderr


def test_hopeless_trials_are_pruned(tmp_path):
    cfg = write_cfg(tmp_path / "p.toml", trials=2, epochs=3,
                    extra="[constraints]\naccuracy_min = 0.999\n[pruning]\nafter_epoch = 1\nmargin = 0.0")
    out = tmp_path / "out"
    proc = hwkit("explore", str(cfg), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["states"] == {"PRUNED": 2}  # pruned trials count towards the budget
    for r in doc["trials"]:
        assert len(r["val_accuracy_by_epoch"]) == 1  # stopped after epoch 1 of 3
        assert r["pruned"].startswith("epoch 1: validation accuracy")
    proc = hwkit("explore", str(cfg), "--out", str(out), "--best")
    assert proc.returncode == 2 and "no complete trial meets the constraints" in proc.stderr


def test_ctrl_c_keeps_finished_trials_and_resume_completes_the_budget(tmp_path):
    # Long trials (45 epochs); the victim is picked early in its training (at most a third of its epochs done),
    # so it cannot finish - and the worker cannot exit - between the poll and the signal, even on a fast machine.
    epochs = 45
    cfg = write_cfg(tmp_path / "r.toml", trials=4, epochs=epochs, windows=3000)
    out = tmp_path / "out"
    url = f"sqlite:///{out / 'explore.db'}"
    # a shell starts background jobs with SIGINT ignored, and an ignored signal is inherited: restore the
    # default so that the worker gets Python's KeyboardInterrupt however pytest itself was started
    worker = subprocess.Popen([sys.executable, "-m", "hwkit.cli", "explore", str(cfg), "--out", str(out)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    done: dict[int, tuple[float, ...]] = {}
    victim = None
    while time.monotonic() < deadline and victim is None:
        time.sleep(0.1)
        assert worker.poll() is None, worker.communicate()[1][-2000:]
        if not (out / "explore.db").exists():
            continue
        try:
            trials = load(url, "r").get_trials()
        except KeyError:  # the study is being created
            continue
        done = {t.number: tuple(t.values) for t in trials if t.state.name == "COMPLETE"}
        training = [t.number for t in trials if t.state.name == "RUNNING"
                    and 1 <= len(t.user_attrs.get("val_accuracy_by_epoch", [])) <= epochs // 3]  # early in training
        if done and training:
            victim = training[0]
    assert victim is not None, "no trial was training while another had finished"
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 130 and "interrupted; finished trials are kept" in err, (worker.returncode, err[-3000:])
    after = {t.number: t for t in load(url, "r").get_trials()}
    assert [n for n, t in after.items() if t.state.name == "FAIL"] == [victim]  # the interrupted trial
    assert not any(t.state.name == "RUNNING" for t in after.values())

    proc = hwkit("explore", str(cfg), "--out", str(out), "--json")  # resume
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["states"] == {"COMPLETE": 4, "FAIL": 1}
    rows = {r["number"]: r for r in doc["trials"]}
    for n, values in done.items():  # nothing finished before Ctrl-C was lost or re-run
        assert rows[n]["state"] == "COMPLETE"
        assert (rows[n]["metrics"]["accuracy"], rows[n]["metrics"]["weight_kbit"]) == pytest.approx(values)
    assert rows[victim]["state"] == "FAIL"

    proc = hwkit("explore", str(cfg), "--out", str(out), "--json")  # budget reached: nothing more runs
    assert proc.returncode == 0 and json.loads(proc.stdout)["states"] == {"COMPLETE": 4, "FAIL": 1}
    # a different search space may not reuse the study
    write_cfg(cfg, trials=4, epochs=2)
    proc = hwkit("explore", str(cfg), "--out", str(out))
    assert proc.returncode == 2 and "was created from a different config (train differ)" in proc.stderr


def test_orphaned_running_trial_is_failed(tmp_path):
    """A trial created by a worker that died before its objective (so before any heartbeat) is failed."""
    import optuna

    from hwkit.explore import load_config
    from hwkit.explore.run import counts, fail_orphans, open_study

    cfg = load_config(write_cfg(tmp_path / "o.toml", trials=1))
    study = open_study(cfg, f"sqlite:///{tmp_path / 'o.db'}")
    orphan = study.ask()  # RUNNING, no worker recorded, no heartbeat
    live = study.ask()
    live.set_user_attr("worker", {"host": "h", "pid": 1})
    assert fail_orphans(study, grace_s=60) == []  # too young
    time.sleep(1.1)
    assert fail_orphans(study, grace_s=1) == [orphan.number]
    assert counts(study)["FAIL"] == 1 and counts(study)["RUNNING"] == 1
    failed = study.get_trials()[orphan.number]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert failed.user_attrs["error"] == "its worker died before it started"


def test_bad_config_is_one_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('target = "zcu104"\n[space]\nshiftadd = ["ps"]\n')
    proc = hwkit("explore", str(cfg), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"hwkit: error: {cfg}: space.shiftadd: 'ps' re-parameterises float models "
                                   "(`hwkit shiftadd --mode ps`); trials train integer Brevitas CQMLPs, where the "
                                   "ShiftAdd mode is 'shift' (power-of-two integer weights)")
    assert not (tmp_path / "o").exists()


def test_amp_pruning_in_the_search_space(tmp_path):
    cfg = write_cfg(tmp_path / "amp.toml", hardware="finn-estimate", trials=1, windows=3000,
                    objectives='["accuracy", "LUT"]', extra_space="amp_de = [0.5]")
    out = tmp_path / "out"
    proc = hwkit("explore", str(cfg), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads(proc.stdout)["trials"]
    tdir = out / "trials" / str(r["number"])
    assert r["params"]["amp_de"] == 0.5 and (tdir / "pruned.pt").is_file()
    full = [max(4, 4 * round(w * 0.25 / 4)) for w in (256, 128, 64, 32)][: r["params"]["depth"]]
    widths = r["metrics"]["amp"]["widths"]
    assert len(widths) == len(full) and sum(widths) < sum(full)  # physically smaller
    report = json.loads((tdir / "build" / "report.json").read_text())
    assert report["model"]["sha256"] == r["paths"]["checkpoint_sha256"]  # the pruned model was compiled
    assert r["metrics"]["LUT"] == report["resources"]["LUT"]["used"]["value"]

    bad = write_cfg(tmp_path / "bad.toml", extra_space="amp_de = [-1]")
    proc = hwkit("explore", str(bad), "--out", str(tmp_path / "o2"))
    assert proc.returncode == 2 and "space.amp_de" in proc.stderr


def test_per_layer_bit_widths_reach_the_hardware(tmp_path):
    # bits [2, 4] per layer; seed 0 of the random sampler gives a mixed design for depth 2 (asserted below)
    cfg = write_cfg(tmp_path / "mixed.toml", hardware="finn-estimate", trials=2, bits="[2, 4]", depth="[2]",
                    objectives='["accuracy", "LUT"]', extra_space="per_layer_bits = true\nact_bits = [2]")
    out = tmp_path / "out"
    rows = run_explore(cfg, out)
    assert len(rows) == 2
    seen = set()
    for r in rows:
        p = r["params"]
        assert "bits" not in p and set(p) >= {"bits_h1", "bits_h2", "bits_out", "act_bits_h1", "act_bits_h2"}
        wbits = [p["bits_h1"], p["bits_h2"], p["bits_out"]]
        seen.add(tuple(wbits))
        report = json.loads((out / "trials" / str(r["number"]) / "build" / "report.json").read_text())
        mvau = [la for la in report["layers"] if la["op"].startswith("MVAU")]
        # every FINN MVAU carries its own layer's weight width (the head may become bipolar/ternary only by value)
        assert [la["weight_dtype"] for la in mvau] == [f"INT{b}" for b in wbits]
        hidden = r["metrics"]["hidden"]
        widths = [40, *hidden, 4]
        assert r["metrics"]["weight_kbit"] == pytest.approx(
            sum(a * b * w for a, b, w in zip(widths, widths[1:], wbits)) / 1000)
        ckpt = torch_load(out / "trials" / str(r["number"]) / "model.pt")
        assert ckpt["arch_kwargs"]["layer_bits"] == wbits and ckpt["arch_kwargs"]["layer_act_bits"] == [2, 2]
    assert any(len(set(w)) > 1 for w in seen), f"no mixed-precision design sampled: {seen}"


def torch_load(path: Path):
    import torch

    return torch.load(path, weights_only=True)


def test_shift_weights_in_the_search_space(tmp_path):
    cfg = write_cfg(tmp_path / "shift.toml", hardware="finn-estimate", trials=1, bits="[4]", depth="[1]",
                    objectives='["accuracy", "op_energy_pj", "LUT"]', extra_space='shiftadd = ["shift"]')
    out = tmp_path / "out"
    (r,) = run_explore(cfg, out)
    assert r["params"]["shiftadd"] == "shift"
    ops = r["metrics"]["ops"]
    assert ops["int_mult"] == 0 and ops["shift"] > 0  # every product is a shift or a plain add
    assert r["metrics"]["op_energy_pj"] == pytest.approx(0.1 * ops["shift"] + 0.1 * ops["int_add"], abs=1e-2)
    tdir = out / "trials" / str(r["number"])
    ckpt = torch_load(tdir / "model.pt")
    assert ckpt["arch_kwargs"]["weight_values"] == "pow2"
    report = json.loads((tdir / "build" / "report.json").read_text())
    # FINN keeps the 4-bit integer type; the export and every hand-off verified exactly
    assert {la["weight_dtype"] for la in report["layers"] if la["op"].startswith("MVAU")} == {"INT4"}
    assert report["verification"] and all(v["ok"] for v in report["verification"])
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper

    qonnx = ModelWrapper(str(next((tdir / "build" / "passes").glob("*export_qonnx/model.onnx"))))
    for node in qonnx.graph.node:
        if node.op_type == "Quant" and qonnx.get_initializer(node.input[0]) is not None:
            w = qonnx.get_initializer(node.input[0]) / qonnx.get_initializer(node.input[1])
            ints = np.abs(np.round(w))
            assert np.allclose(w, np.round(w), atol=1e-4) and set(np.unique(ints)) <= {0, 1, 2, 4}
