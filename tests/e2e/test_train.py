"""``hwkit train cqmlp`` end to end: a real (short) training run through the CLI, resume, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hwkit.config import CompileSettings
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains

SMALL = ["--synthetic", "--synthetic-seconds", "8", "--max-train-windows", "20000", "--batch-size", "256",
         "--split", "random"]


def _hwkit(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwkit.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("train") / "cq.pt"
    proc = _hwkit("train", "cqmlp", *SMALL, "--epochs", "1", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout)


def test_train_writes_a_loadable_checkpoint_and_metrics(first_run):
    import torch

    from hwkit.load import load_model

    out, summary = first_run
    assert out.stat().st_size < 1_000_000
    loaded = load_model(out, CompileSettings())
    assert loaded.format == "hwkit-checkpoint" and loaded.input_shape == (1, 40) and loaded.input_dtype == "UINT8"
    assert loaded.meta["learnable_parameters"] == 54_824
    assert loaded.meta["split"]["mode"] == "random"
    m = loaded.meta["metrics"]
    assert {"val", "test", "confusion_matrix", "classes", "accuracy"} <= set(m)
    assert m["classes"] == ["Benign", "DoS", "Fuzzing", "RPM"] and m["confusion_matrix"] == m["test"]["confusion"]
    assert m["accuracy"] == m["test"]["accuracy"]
    assert loaded.meta["config"]["per_channel"] is True and loaded.meta["config"]["schedule"] == "onecycle"
    # golden inputs are raw test windows (bytes), and the saved model predicts them as the metrics say
    golden = torch.from_numpy(loaded.golden_inputs)
    assert golden.shape[1] == 40 and float(golden.max()) <= 255 and float(golden.min()) >= 0
    assert torch.equal(golden, golden.round())
    test = summary["metrics"]["test"]
    assert test["samples"] == summary["split"]["sizes"]["test"]
    assert sum(map(sum, test["confusion"])) == test["samples"]
    assert 0.5 < test["accuracy"] <= 1.0  # one epoch on 20k windows already learns DoS at least
    assert set(test["per_class"]) == {"Benign", "DoS", "Fuzzing", "RPM"}
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    assert metrics["metrics"]["test"]["confusion"] == test["confusion"]
    assert len(metrics["history"]) == 1 and metrics["train_samples_per_s"] > 0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".state.pt").is_file()


def test_resume_continues_from_the_saved_state(first_run, tmp_path):
    out, summary = first_run
    # work on a copy so the first run's files stay as the other test expects them
    for suffix in (".pt", ".state.pt", ".metrics.json"):
        src = out.with_suffix(suffix)
        (tmp_path / f"cq{suffix}").write_bytes(src.read_bytes())
    copy = tmp_path / "cq.pt"
    proc = _hwkit("train", "cqmlp", *SMALL, "--epochs", "2", "--patience", "0", "--out", str(copy), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming after epoch 1" in proc.stderr
    metrics = json.loads((tmp_path / "cq.metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    first = json.loads(out.with_suffix(".metrics.json").read_text())["history"][0]
    assert metrics["history"][0] == first  # epoch 1 is the saved one, not re-trained
    assert metrics["epochs_run"] == 2


def test_resume_refuses_different_settings(first_run, tmp_path):
    out, _ = first_run
    proc = _hwkit("train", "cqmlp", *SMALL, "--epochs", "2", "--bits", "3", "--out", str(tmp_path / "x.pt"),
                  "--resume", str(out.with_suffix(".state.pt")), "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "cannot resume, 'bits' was 2 in the saved run and is 3 now" in proc.stderr


def test_malformed_data_is_one_line_error_in_strict_mode(tmp_path):
    data = tmp_path / "can"
    data.mkdir()
    (data / "DoS_dataset.csv").write_text("1478198376.389427,0000,8,00,00,00,00,00,00,00,00,T\n"
                                          "1478198376.389700,0316,2,05,21\n")
    proc = _hwkit("train", "cqmlp", "--data", str(data), "--strict", "--quiet", "--out", str(tmp_path / "x.pt"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "DoS_dataset.csv:2: flag '' at column 6" in proc.stderr or "DoS_dataset.csv:2:" in proc.stderr
    proc = _hwkit("train", "cqmlp", "--data", str(tmp_path / "nowhere"), "--quiet")
    assert proc.returncode == 2 and "data directory not found" in proc.stderr


@pytest.mark.parametrize("args,words", [
    (["--synthetic-seconds", "4"], "synthetic data of 4 s per file: 1 intrusions of 3.0-5.0 s do not fit"),
    (["--synthetic-seconds", "8", "--bits", "1", "--weight-values", "pow2"],
     "cannot build the CQMLP: power-of-two weights need at least 2 bits"),
    (["--synthetic-seconds", "8", "--init-from-teacher"], "--init-from-teacher needs --teacher CKPT or --distill"),
    (["--synthetic-seconds", "8", "--teacher", "no-such-teacher.pt"], "no-such-teacher.pt: no teacher checkpoint"),
])
def test_bad_settings_are_one_line_errors(tmp_path, args, words):
    out = tmp_path / "x.pt"
    proc = _hwkit("train", "cqmlp", "--synthetic", *args, "--epochs", "1", "--quiet", "--out", str(out))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr and not out.exists()


def test_negative_distillation_weights_are_refused_before_any_data(tmp_path):
    out = tmp_path / "x.pt"
    for flag in ("--kd-weight", "--ce-weight", "--feature-weight"):
        proc = _hwkit("train", "cqmlp", "--synthetic", "--distill", flag, "-1", "--quiet", "--out", str(out))
        assert proc.returncode == 2 and f"argument {flag}: must be in [0" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not out.exists() and not (tmp_path / "x.teacher.pt").exists()


def _bitexact_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("cqmlp_bitexact", ROOT / "benchmarks" / "cqmlp_bitexact.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compiled_cqmlp_is_bit_exact_on_test_windows(first_run, tmp_path):
    """The benchmark's check on 120 windows of the tiny capture's test split: torch vs FINN HW."""
    import numpy as np

    from hwkit.compress.cqmlp.train import TrainConfig, prepare_data
    from hwkit.load import load_model

    out, _ = first_run
    build = tmp_path / "build"
    proc = _hwkit("compile", str(out), "--target", "zcu104", "--target-fps", "100000", "--out", str(build), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    split, _ = prepare_data(None, 8.0, TrainConfig(split="random"))
    pick = np.linspace(0, len(split.test) - 1, 120).astype(int)
    test = split.test.take(pick)
    assert len(set(test.y.tolist())) >= 3  # several classes, not just benign windows
    loaded = load_model(out, CompileSettings())
    res = _bitexact_module().bitexact_check(loaded.module, build, test.x, tmp_path / "work", labels=test.y)
    assert res["samples"] == 120
    assert res["int_tensor"] and res["int_mismatches"] == 0, res
    assert res["class_mismatches"] == 0, res
    assert res["max_abs_error_torch_vs_hw"] <= 1e-3 * max(1.0, res["max_abs_logit"]), res
    assert res["ok"]


def test_full_range_weights_train_export_and_stay_bit_exact(tmp_path):
    """--weight-values full: all four 2-bit codes {-2,-1,0,1} are used, kept in the checkpoint, INT2 in FINN."""
    import numpy as np
    import torch

    from hwkit.compress.cqmlp.train import TrainConfig, prepare_data
    from hwkit.compress.shiftadd.pow2 import integer_weights
    from hwkit.load import load_model

    out = tmp_path / "full.pt"
    proc = _hwkit("train", "cqmlp", *SMALL, "--epochs", "1", "--weight-values", "full", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = load_model(out, CompileSettings())
    assert loaded.meta["config"]["weight_values"] == "full"
    layers = [m for m in loaded.module if hasattr(m, "quant_weight")]
    assert len(layers) == 5
    for m in layers:
        codes = set(integer_weights(m).unique().tolist())
        assert codes <= {-2.0, -1.0, 0.0, 1.0} and -2.0 in codes, codes  # narrow range would never give -2
    # the same float weights on the default narrow grid are ternary: the checkpoint must carry the choice
    from hwkit.compress.cqmlp.model import build_cqmlp

    narrow = build_cqmlp(bits=2, per_channel=True)
    narrow.load_state_dict(loaded.module.state_dict())
    assert all(set(integer_weights(m).unique().tolist()) <= {-1.0, 0.0, 1.0}
               for m in narrow if hasattr(m, "quant_weight"))
    x = torch.rand(64, 40) * 255
    assert not torch.equal(narrow.eval()(x), loaded.module.eval()(x))

    build = tmp_path / "build"
    proc = _hwkit("compile", str(out), "--target", "zcu104", "--target-fps", "100000", "--out", str(build), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((build / "report.json").read_text())
    assert all(v["ok"] for v in report["verification"]) and report["verification"][-1]["int_exact"] is True
    mvau = [la for la in report["layers"] if la["op"].startswith("MVAU")]
    assert len(mvau) == 5 and all(la["weight_dtype"] == "INT2" for la in mvau)
    split, _ = prepare_data(None, 8.0, TrainConfig(split="random"))
    test = split.test.take(np.linspace(0, len(split.test) - 1, 60).astype(int))
    res = _bitexact_module().bitexact_check(loaded.module, build, test.x, tmp_path / "work", labels=test.y)
    assert res["class_mismatches"] == 0 and res["int_mismatches"] == 0, res


@pytest.mark.slow
def test_distilled_learned_scale_model_trains_compiles_and_stays_bit_exact(tmp_path):
    """--distill --init-from-teacher --weight-scaling learned: the float twin is trained and kept next to the
    output, the 2-bit student starts from it with learned per-channel weight scales, and FINN streamlines the
    result integer-exactly (the learned scales export as constants)."""
    import numpy as np

    from hwkit.compress.cqmlp.train import TrainConfig, prepare_data
    from hwkit.load import load_model

    out = tmp_path / "kd.pt"
    proc = _hwkit("train", "cqmlp", *SMALL, "--epochs", "1", "--distill", "--teacher-epochs", "1",
                  "--init-from-teacher", "--weight-scaling", "learned", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["teacher"] == str(tmp_path / "kd.teacher.pt") and (tmp_path / "kd.teacher.pt").is_file()
    assert "KL" in summary["loss"] and summary["config"]["weight_scaling"] == "learned"
    assert summary["learnable_parameters"] == 54_824 + 484  # + one learned scale per output neuron
    loaded = load_model(out, CompileSettings())
    assert any("weight_quant" in k for k in loaded.module.state_dict())
    build = tmp_path / "build"
    proc = _hwkit("compile", str(out), "--target", "zcu104", "--target-fps", "100000", "--out", str(build), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((build / "report.json").read_text())
    assert all(v["ok"] for v in report["verification"]) and report["verification"][-1]["int_exact"] is True
    split, _ = prepare_data(None, 8.0, TrainConfig(split="random"))
    test = split.test.take(np.linspace(0, len(split.test) - 1, 60).astype(int))
    res = _bitexact_module().bitexact_check(loaded.module, build, test.x, tmp_path / "work", labels=test.y)
    assert res["class_mismatches"] == 0 and res["int_mismatches"] == 0, res
