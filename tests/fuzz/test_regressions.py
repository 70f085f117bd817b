"""The fixed regression corpus of issue 15: every case the issue lists, with the contract of
:func:`tests.fuzz.harness.check_failure` (exit code from the documented table, one error line naming
the culprit, no traceback, pre-existing files byte-identical, no report left)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from tests.fuzz import fixtures as fx
from tests.fuzz.harness import check_failure, leftover_reports, run_inprocess, run_subprocess, snapshot


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """``mkdir demo; echo precious > demo/notes.txt``."""
    d = tmp_path / "demo"
    d.mkdir()
    (d / "notes.txt").write_text("precious\n")
    return d


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input file of the corpus, built once."""
    import torch

    d = tmp_path_factory.mktemp("corpus")
    ck = fx.tiny_checkpoint_dict()
    f: dict[str, Path] = {"tiny": fx.save_pt(d / "tiny.pt", ck)}
    nan_sd = {k: v.clone() for k, v in ck["state_dict"].items()}
    name = next(k for k, v in nan_sd.items() if v.is_floating_point() and v.numel() > 1 and k.endswith("weight"))
    nan_sd[name].view(-1)[3] = float("nan")
    f["nan_weights"] = fx.save_pt(d / "nan_weights.pt", {**ck, "state_dict": nan_sd})
    f["golden_str"] = fx.save_pt(d / "golden_str.pt", {**ck, "golden_inputs": "not a tensor"})
    f["golden_nan"] = fx.save_pt(d / "golden_nan.pt", {**ck, "golden_inputs": torch.full((4, 16), float("nan"))})
    f["golden_shape"] = fx.save_pt(d / "golden_shape.pt", {**ck, "golden_inputs": torch.zeros(4, 3, 2)})
    f["meta_list"] = fx.save_pt(d / "meta_list.pt", {**ck, "meta": [1, 2, 3]})
    f["dtype_bogus"] = fx.save_pt(d / "dtype_bogus.pt", {**ck, "input_dtype": "BOGUS"})
    f["shape_zero"] = fx.save_pt(d / "shape_zero.pt", {**ck, "input_shape": [1, 0]})
    from tests.fuzz.archs import LstmNet

    torch.manual_seed(0)
    f["lstm"] = fx.save_pt(d / "lstm.pt", LstmNet().state_dict())
    f["onnx_fixed4"] = fx.onnx_model(d / "fixed4.onnx", batch=4)
    f["onnx_fixed1"] = fx.onnx_model(d / "fixed1.onnx", batch=1)
    f["onnx_noinput"] = fx.onnx_model(d / "noinput.onnx", inputs=False)
    f["onnx_empty"] = fx.onnx_model(d / "empty.onnx", nodes=False)
    f["onnx_symbolic"] = fx.onnx_model(d / "symbolic.onnx", batch="N")
    f["board_inf"] = d / "inf.toml"
    f["board_inf"].write_text(fx.board_text(clock_ns="inf"))
    f["board_nan"] = d / "nan.toml"
    f["board_nan"].write_text(fx.board_text(clock_ns="nan"))
    f["board_latin1"] = d / "latin1.toml"
    f["board_latin1"].write_bytes(fx.board_text(description='"Zürich board"').encode("latin-1"))
    f["flow_latin1"] = d / "latin1-flow.toml"
    f["flow_latin1"].write_bytes('name = "x"\ndescription = "Zürich"\npasses = ["export_qonnx"]\n'.encode("latin-1"))
    f["flow_inf"] = d / "inf-flow.toml"
    f["flow_inf"].write_text('name = "x"\nboard_kinds = ["cpu"]\n'
                             'passes = [{ name = "export_onnx", test_samples = inf }]\n')
    f["state_forged"] = fx.save_pt(d / "forged.state.pt", {"hwkit_train_state": 1, "config": "x", "epoch": "seven"})
    f["state_nan"] = fx.save_pt(d / "nan.state.pt", {"hwkit_train_state": 1, "config": {}, "epoch": float("nan")})
    return f


def _report_dir(base: Path, name: str, content: bytes) -> Path:
    d = base / name
    d.mkdir()
    (d / ".hwkit-output").write_text("{}\n")
    (d / "report.json").write_bytes(content)
    return d


# -- the reproduction: a failing command never removes the user's directory ------------------------------


def test_compile_repro_keeps_foreign_directory(demo: Path) -> None:
    before = snapshot(demo)
    res = run_inprocess(["compile", fx.CQMLP, "--target", "zcu104", "--out", demo, "--from", "finn.streamline",
                         "--quiet"])
    check_failure(res, 2, str(demo), before, (demo,), (demo,))


@pytest.mark.parametrize("argv", [
    ["bench", "{missing}", "--out", "{demo}"],
    ["explore", "{missing}", "--out", "{demo}"],
    ["report", "{demo}"],
    ["train", "cqmlp", "--synthetic", "--resume", "{missing}", "--out", "{demo}/cqmlp.pt", "--quiet"],
    ["prune", "{missing}", "--calib", "digits", "--out", "{demo}/pruned.pt", "--quiet"],
    ["shiftadd", "{missing}", "--calib", "digits", "--out", "{demo}/shift.pt", "--quiet"],
], ids=["bench", "explore", "report", "train", "prune", "shiftadd"])
def test_failing_command_keeps_demo_notes(argv: list[str], demo: Path, tmp_path: Path) -> None:
    before = snapshot(demo)
    args = [a.format(demo=demo, missing=tmp_path / "missing.file") for a in argv]
    res = run_inprocess(args)
    check_failure(res, 2, (str(demo), "missing.file"), before, (demo,), (demo,))


@pytest.mark.parametrize("argv", [
    ["bench", "{onnx}", "--out", "{demo}", "--runs", "1", "--warmup", "0", "--batch-runs", "1"],
    ["explore", "{explore}", "--out", "{demo}"],
], ids=["bench", "explore"])
def test_foreign_output_directory_refused_without_force(argv: list[str], demo: Path, files: dict[str, Path]) -> None:
    before = snapshot(demo)
    res = run_inprocess([a.format(demo=demo, onnx=files["onnx_fixed4"], explore=fx.ROOT / "examples" /
                                  "explore-cqmlp.toml") for a in argv])
    check_failure(res, 2, ("not written by hwkit", str(demo)), before, (demo,), (demo,))


def test_bench_force_adds_and_keeps(demo: Path, files: dict[str, Path]) -> None:
    res = run_inprocess(["bench", files["onnx_fixed1"], "--out", demo, "--force", "--runs", "2", "--warmup", "0",
                         "--batch-runs", "1", "--batch-sizes", "1", "--json"])
    assert res.code == 0, res.err
    assert (demo / "notes.txt").read_text() == "precious\n"
    assert json.loads((demo / "report.json").read_text())["schema"] == "hwkit-report"


# -- numbers are checked where they enter -------------------------------------------------------------------

_COMPILE = ["compile", "{tiny}", "--target", "zcu104", "--out", "{out}", "--quiet"]


@pytest.mark.parametrize("extra,flag", [
    (["--clock-ns", "nan"], "--clock-ns"), (["--clock-ns", "inf"], "--clock-ns"), (["--clock-ns", "-1"], "--clock-ns"),
    (["--target-fps", "inf"], "--target-fps"), (["--target-fps", "nan"], "--target-fps"),
    (["--target-fps", "0.1"], "--target-fps"), (["--golden-batch", "-3"], "--golden-batch"),
    (["--golden-batch", "0"], "--golden-batch"), (["--golden-batch", "1e9"], "--golden-batch"),
    (["--input-shape", "1,nan"], "--input-shape"), (["--input-dtype", "BOGUS"], "--input-dtype"),
    (["--runs", "0"], "--runs"), (["--quantize", "w4a4", "--qat-epochs", "-2"], "--qat-epochs"),
])
def test_compile_numbers(extra: list[str], flag: str, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "build"
    res = run_inprocess([a.format(tiny=files["tiny"], out=out) for a in _COMPILE] + extra)
    check_failure(res, 2, flag, out_dirs=(tmp_path,))
    assert not out.exists()


@pytest.mark.parametrize("extra,flag", [
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--warmup", "5"], "--warmup"),
    (["--warmup", "-0.5"], "--warmup"), (["--weight-decay", "-1"], "--weight-decay"),
    (["--weight-decay", "nan"], "--weight-decay"), (["--max-train-windows", "0"], "--max-train-windows"),
    (["--synthetic-seconds", "nan"], "--synthetic-seconds"), (["--patience", "-1"], "--patience"),
    (["--fractions", "nan,0.5,0.5"], "--fractions"), (["--threads", "0"], "--threads"),
])
def test_train_numbers(extra: list[str], flag: str, tmp_path: Path) -> None:
    res = run_inprocess(["train", "cqmlp", "--synthetic", "--out", tmp_path / "o" / "x.pt", "--quiet", *extra])
    check_failure(res, 2, flag)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra,flag", [
    (["--input-dtype", "BOGUS"], "--input-dtype"), (["--runs", "0"], "--runs"), (["--warmup", "-1"], "--warmup"),
    (["--batch-runs", "0"], "--batch-runs"),
])
def test_bench_numbers(extra: list[str], flag: str, files: dict[str, Path], tmp_path: Path) -> None:
    res = run_inprocess(["bench", files["onnx_fixed4"], "--out", tmp_path / "b", *extra])
    check_failure(res, 2, flag)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("cmd,extra,flag", [
    ("prune", ["--delta-e", "nan"], "--delta-e"), ("prune", ["--temp-inv", "inf"], "--temp-inv"),
    ("prune", ["--distill-lr", "nan"], "--distill-lr"), ("shiftadd", ["--lr", "nan"], "--lr"),
    ("shiftadd", ["--route-share", "2"], "--route-share"), ("shiftadd", ["--weight-bits", "0"], "--weight-bits"),
    # hwkit quantize once took these unchecked: nan lr -> internal error, --weight-bits 0 -> silently 8 bits,
    # --seed -5 -> internal error, --bias-bits 99 -> accepted
    ("quantize", ["--qat-lr", "nan", "--method", "qat"], "--qat-lr"), ("quantize", ["--qat-lr", "0"], "--qat-lr"),
    ("quantize", ["--weight-bits", "0"], "--weight-bits"), ("quantize", ["--act-bits", "1"], "--act-bits"),
    ("quantize", ["--seed", "-5"], "--seed"), ("quantize", ["--bias-bits", "99"], "--bias-bits"),
    ("quantize", ["--qat-epochs", "-1"], "--qat-epochs"), ("quantize", ["--threads", "0"], "--threads"),
])
def test_compress_numbers(cmd: str, extra: list[str], flag: str, files: dict[str, Path], tmp_path: Path) -> None:
    res = run_inprocess([cmd, files["tiny"], "--calib", "digits", "--out", tmp_path / "o" / "m.pt", "--quiet", *extra])
    check_failure(res, 2, flag)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("board,field", [("board_inf", "clock_ns"), ("board_nan", "clock_ns"),
                                         ("board_latin1", "UTF-8")])
def test_board_file_fields(board: str, field: str, files: dict[str, Path], tmp_path: Path) -> None:
    res = run_inprocess(["compile", files["tiny"], "--target", files[board], "--out", tmp_path / "b", "--quiet"])
    check_failure(res, 2, (field,))
    assert str(files[board]) in res.error_lines()[0]
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("flow,what", [("flow_latin1", "UTF-8"), ("flow_inf", "test_samples")])
def test_flow_file_fields(flow: str, what: str, files: dict[str, Path], tmp_path: Path) -> None:
    res = run_inprocess(["compile", files["tiny"], "--target", "cpu", "--flow", files[flow], "--out", tmp_path / "b",
                         "--quiet"])
    check_failure(res, 2, what)
    assert not (tmp_path / "b").exists()


def test_can_timestamps_must_be_finite(tmp_path: Path) -> None:
    from hwkit.data.can import CanDataError, read_frames

    for bad in ("nan", "inf", "-inf", "NaN"):
        p = tmp_path / f"DoS_{bad}.csv"
        p.write_text(fx.CSV_OK + fx.CSV_OK.replace("1478198376.389427", bad))
        frames, rep = read_frames(p)
        assert len(frames) == 1 and len(rep.malformed) == 1
        assert all(math.isfinite(t) for t in frames.time_s)
        with pytest.raises(CanDataError, match=rf"{p.name}:2: timestamp"):
            read_frames(p, strict=True)


def test_can_nan_timestamp_through_train(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "DoS_dataset.csv").write_text(fx.CSV_OK + fx.CSV_OK.replace("1478198376.389427", "nan"))
    res = run_inprocess(["train", "cqmlp", "--data", data, "--strict", "--out", tmp_path / "o" / "x.pt", "--quiet"])
    check_failure(res, 2, "DoS_dataset.csv:2")
    assert not (tmp_path / "o").exists()


# -- exit codes: whose fault it is ---------------------------------------------------------------------


@pytest.mark.parametrize("target", ["zcu104", "cpu"])
def test_wrong_input_shape_is_bad_input(target: str, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = run_inprocess(["compile", files["tiny"], "--target", target, "--input-shape", "1,15", "--out", out,
                         "--quiet", "--to", "1"])
    check_failure(res, 2, "--input-shape", out_dirs=(tmp_path,))
    assert not out.exists()


@pytest.mark.parametrize("model,target", [("onnx_noinput", "zcu104"), ("onnx_noinput", "cpu"),
                                          ("onnx_empty", "zcu104"), ("onnx_empty", "cpu"),
                                          ("onnx_symbolic", "zcu104")])
def test_bad_onnx_is_bad_input(model: str, target: str, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = run_inprocess(["compile", files[model], "--target", target, "--out", out, "--quiet", "--to", "1"])
    check_failure(res, 2, files[model].name, out_dirs=(tmp_path,))
    assert not out.exists()


@pytest.mark.parametrize("model,field", [("golden_str", "golden_inputs"), ("golden_nan", "golden_inputs"),
                                         ("golden_shape", "golden_inputs"), ("meta_list", "meta"),
                                         ("dtype_bogus", "input_dtype"), ("shape_zero", "input_shape")])
@pytest.mark.parametrize("target", ["zcu104", "cpu"])
def test_malformed_checkpoint_fields(model: str, field: str, target: str, files: dict[str, Path],
                                     tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = run_inprocess(["compile", files[model], "--target", target, "--out", out, "--quiet", "--to", "1"])
    check_failure(res, 2, field, out_dirs=(tmp_path,))
    assert files[model].name in res.error_lines()[0]
    assert not out.exists()


@pytest.mark.parametrize("target", ["zcu104", "cpu"])
def test_nan_weights_name_the_tensor(target: str, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = run_inprocess(["compile", files["nan_weights"], "--target", target, "--out", out, "--quiet"])
    check_failure(res, 2, "weight", out_dirs=(tmp_path,))
    assert "non-finite" in res.error_lines()[0]


def test_lstm_to_fpga_is_unsupported(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = run_inprocess(["compile", files["lstm"], "--target", "zcu104", "--arch", "tests.fuzz.archs:lstm_net",
                         "--input-shape", "1,5,8", "--out", out, "--quiet"])
    check_failure(res, 3, "LSTM", out_dirs=(tmp_path,))
    assert "rnn" in res.error_lines()[0]


@pytest.mark.parametrize("content,cmd", [
    ("Zürich".encode("latin-1"), "report"), ("Zürich".encode("latin-1"), "compare"),
    (b"[1, 2, 3]", "report"), (b"[1, 2, 3]", "compare"),
    (b'{"schema": "hwkit-report"}', "report"), (b'{"schema": "hwkit-report"}', "compare"),
    (b'{"schema": "hwkit-report", "passes": 5, "performance": [], "resources": {"LUT": 3}}', "report"),
    (b'{"schema": "hwkit-report", "passes": 5, "performance": [], "resources": {"LUT": 3}}', "compare"),
], ids=["latin1-report", "latin1-compare", "list-report", "list-compare", "fields-report", "fields-compare",
        "types-report", "types-compare"])
def test_bad_report_json(content: bytes, cmd: str, tmp_path: Path) -> None:
    bad = _report_dir(tmp_path, "bad", content)
    good = _report_dir(tmp_path, "good", json.dumps(fx.report_doc()).encode())
    before = snapshot(tmp_path)
    argv = ["report", bad, "--quiet"] if cmd == "report" else ["compare", good, bad, "--json"]
    res = run_inprocess(argv)
    check_failure(res, 2, str(bad / "report.json"), before, (tmp_path,))


def test_report_rerender_of_good_report(tmp_path: Path) -> None:
    good = _report_dir(tmp_path, "good", json.dumps(fx.report_doc()).encode())
    res = run_inprocess(["report", good, "--quiet"])
    assert res.code == 0, res.err
    assert (good / "report.md").is_file() and (good / "report.html").is_file()


@pytest.mark.parametrize("state", ["state_forged", "state_nan"])
def test_forged_resume_state(state: str, files: dict[str, Path], tmp_path: Path) -> None:
    res = run_inprocess(["train", "cqmlp", "--synthetic", "--resume", files[state], "--out", tmp_path / "o" / "x.pt",
                         "--quiet"])
    check_failure(res, 2, files[state].name)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("cmd", ["compile", "bench", "explore", "train", "prune", "shiftadd"])
def test_out_parent_is_a_file(cmd: str, files: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("user file\n")
    before = snapshot(tmp_path)
    out = blocker / "sub"
    argv = {
        "compile": ["compile", files["tiny"], "--target", "zcu104", "--out", out, "--quiet"],
        "bench": ["bench", files["onnx_fixed4"], "--out", out],
        "explore": ["explore", fx.ROOT / "examples" / "explore-cqmlp.toml", "--out", out, "--quiet"],
        "train": ["train", "cqmlp", "--synthetic", "--out", out / "x.pt", "--quiet"],
        "prune": ["prune", files["tiny"], "--calib", "digits", "--out", out / "p.pt", "--quiet"],
        "shiftadd": ["shiftadd", files["tiny"], "--calib", "digits", "--out", out / "s.pt", "--quiet"],
    }[cmd]
    res = run_inprocess(argv)
    check_failure(res, 2, str(blocker), before, (tmp_path,))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories; the check needs a user")
@pytest.mark.parametrize("cmd", ["compile", "bench"])
def test_out_in_read_only_directory(cmd: str, files: dict[str, Path], tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        argv = (["compile", files["tiny"], "--target", "zcu104", "--out", ro / "b", "--quiet"] if cmd == "compile"
                else ["bench", files["onnx_fixed4"], "--out", ro / "b"])
        check_failure(run_inprocess(argv), 2, str(ro / "b"))
    finally:
        ro.chmod(0o755)


def test_mkdir_failure_is_one_line(tmp_path: Path) -> None:
    from hwkit.errors import InputError
    from hwkit.outdir import claim

    long = tmp_path / ("x" * 300)  # ENAMETOOLONG from mkdir: still one InputError naming the path
    with pytest.raises(InputError, match="xxxx"):
        claim(long, "compile")


def test_bench_fixed_batch_onnx(files: dict[str, Path], tmp_path: Path) -> None:
    """torch.onnx.export's default (batch fixed to 1): measured at batch 1, with a note, not an error."""
    res = run_inprocess(["bench", files["onnx_fixed1"], "--runs", "2", "--warmup", "0", "--batch-runs", "1",
                         "--out", tmp_path / "b", "--json"])
    assert res.code == 0, res.err
    doc = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [r["batch"] for r in doc["measurement"]["throughput"]] == [1]
    assert any("fixes the batch dimension to 1" in w for w in doc["warnings"]), doc["warnings"]


def test_bench_fixed_batch_not_one_names_it(files: dict[str, Path], tmp_path: Path) -> None:
    res = run_inprocess(["bench", files["onnx_fixed4"], "--out", tmp_path / "b"])
    check_failure(res, 2, "batch dimension to 4")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("flow", ["ort-cpu", "ort-cpu-int8"])
def test_compile_fixed_batch_onnx_for_cpu(flow: str, files: dict[str, Path], tmp_path: Path) -> None:
    """A batch-1 ONNX file (torch.onnx.export's default) once failed `compile --target cpu` with exit 5: ONNX Runtime
    refused the 32-sample golden batch. Verification now runs it sample by sample; the measurement is batch 1."""
    out = tmp_path / "b"
    res = run_inprocess(["compile", files["onnx_fixed1"], "--target", "cpu", "--flow", flow, "--runs", "3",
                         "--out", out, "--quiet"])
    assert res.code == 0, res.err
    doc = json.loads((out / "report.json").read_text())
    assert [(r["samples"], r["ok"]) for r in doc["verification"]][-2:] == [(32, True), (2000, True)]
    assert [r["batch"] for r in doc["measurement"]["throughput"]] == [1]
    assert any("fixes the batch dimension to 1" in w for w in doc["warnings"]), doc["warnings"]


def test_compile_fixed_batch_not_one_names_it(files: dict[str, Path], tmp_path: Path) -> None:
    res = run_inprocess(["compile", files["onnx_fixed4"], "--target", "cpu", "--out", tmp_path / "b", "--quiet"])
    check_failure(res, 2, "batch dimension to 4")


def test_no_traceback_in_a_fresh_process(files: dict[str, Path], demo: Path, tmp_path: Path) -> None:
    before = snapshot(demo)
    for argv, code, culprit in [
        (["compile", fx.CQMLP, "--target", "zcu104", "--out", demo, "--quiet"], 2, str(demo)),
        (["compile", files["tiny"], "--target", files["board_latin1"], "--out", tmp_path / "b"], 2, "UTF-8"),
        (["bench", files["onnx_fixed4"], "--input-dtype", "BOGUS"], 2, "--input-dtype"),
    ]:
        check_failure(run_subprocess(argv, cwd=tmp_path), code, culprit, before, (demo,), (demo, tmp_path))


def test_report_write_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from hwkit.errors import InputError
    from hwkit.report import Report

    out = tmp_path / "r"
    out.mkdir()
    rep = Report.from_json(fx.report_doc())
    real = Path.write_text

    def full(self: Path, *a: object, **k: object) -> int:
        if self.name.startswith(".report.html"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(InputError, match="no space left"):
        rep.write(out)
    assert leftover_reports(out) == [] and list(out.iterdir()) == []
    shutil.rmtree(out)


def test_train_failure_removes_only_the_parents_it_created(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "x.pt"
    res = run_inprocess(["train", "cqmlp", "--synthetic", "--synthetic-seconds", "4", "--epochs", "1", "--out", out,
                         "--quiet"])
    check_failure(res, 2, "synthetic data of 4 s")
    assert list(tmp_path.iterdir()) == []


def test_staged_files_all_or_none(tmp_path: Path) -> None:
    from hwkit.outdir import staged_files

    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious\n")
    (folder / "m.pt").write_bytes(b"old model")
    before = snapshot(folder)
    with pytest.raises(RuntimeError, match="boom"), staged_files(folder / "m.pt") as stage:
        (stage / "m.pt").write_bytes(b"half")
        (stage / "report.json").write_text("{}")
        raise RuntimeError("boom")
    assert snapshot(folder) == before
    with staged_files(folder / "m.pt") as stage:
        (stage / "m.pt").write_bytes(b"new model")
        (stage / "report.json").write_text("{}")
    assert (folder / "m.pt").read_bytes() == b"new model" and (folder / "notes.txt").read_text() == "precious\n"
    assert sorted(p.name for p in folder.iterdir()) == ["m.pt", "notes.txt", "report.json"]
    with pytest.raises(RuntimeError), staged_files(tmp_path / "a" / "b" / "m.pt") as stage:
        raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()


def test_measure_power_numbers(tmp_path: Path) -> None:
    for flag, value in (("--seconds", "nan"), ("--idle-seconds", "-1"), ("--inferences", "0")):
        check_failure(run_inprocess(["measure-power", flag, value]), 2, flag)


def test_environment_oserror_is_one_line(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path],
                                         tmp_path: Path) -> None:
    """A full disk while a pass writes: one line naming the path, exit 2, nothing of this run left."""
    import errno

    import numpy as np

    def full(file: object, *a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(np, "save", full)
    out = tmp_path / "b"
    res = run_inprocess(["compile", files["tiny"], "--target", "cpu", "--out", out, "--quiet", "--to", "1"])
    check_failure(res, 2, "no space left")
    assert not out.exists()


@pytest.mark.parametrize("cmd,calib", [("prune", "digits"), ("shiftadd", "digits"), ("prune", "nan.npy"),
                                       ("shiftadd", "short.npy")])
def test_calibration_data_that_does_not_fit(cmd: str, calib: str, demo: Path) -> None:
    """Calibration data of the wrong width or with NaN: exit 2 naming --calib (was an internal error)."""
    import numpy as np
    import torch

    from tests.fuzz.archs import TinyMlp

    torch.manual_seed(0)
    model = demo / "float.pt"
    torch.save(TinyMlp().state_dict(), model)
    if calib == "nan.npy":
        x = np.zeros((400, 16), dtype=np.float32)
        x[3, 2] = np.nan
        np.save(demo / calib, x)
    elif calib == "short.npy":
        np.save(demo / calib, np.zeros((2, 16), dtype=np.float32))
    before = snapshot(demo)
    spec = calib if calib == "digits" else str(demo / calib)
    res = run_inprocess([cmd, model, "--arch", "tests.fuzz.archs:tiny_mlp", "--calib", spec, "--out",
                         demo / "out.pt", "--quiet"])
    check_failure(res, 2, ("--calib", calib), before, (demo,), (demo,))


def test_hunt_finds(files: dict[str, Path], tmp_path: Path) -> None:
    """Cases the randomised hunt (HWKIT_FUZZ_SCALE=8) found: each was a traceback or an unnamed file."""
    from hwkit.config import CompileSettings
    from hwkit.errors import ModelLoadError
    from hwkit.load import load_model

    # argparse passes ``--flag=--`` through as [] past the type function
    check_failure(run_inprocess(["train", "cqmlp", "--synthetic", "--lr=--", "--out", tmp_path / "x.pt"]), 2, "--lr")
    # an unknown architecture name names the checkpoint
    bad_arch = fx.save_pt(tmp_path / "arch.pt", {**fx.tiny_checkpoint_dict(), "arch": ""})
    with pytest.raises(ModelLoadError, match=str(bad_arch)):
        load_model(bad_arch, CompileSettings())
    # a flipped byte inside the archive made torch.load raise KeyError
    raw = bytearray(files["tiny"].read_bytes())
    raw[461] ^= 0xFF
    (tmp_path / "flip.pt").write_bytes(bytes(raw))
    res = run_inprocess(["compile", tmp_path / "flip.pt", "--target", "cpu", "--out", tmp_path / "b", "--quiet"])
    check_failure(res, 2, "flip.pt", out_dirs=(tmp_path,))
    assert "not a readable PyTorch file" in res.error_lines()[0] and not (tmp_path / "b").exists()


def test_train_synthetic_dir_is_an_owned_output(demo: Path, tmp_path: Path) -> None:
    before = snapshot(demo)
    res = run_inprocess(["train", "cqmlp", "--synthetic", "--synthetic-dir", demo, "--out", tmp_path / "o" / "x.pt",
                         "--quiet"])
    check_failure(res, 2, ("not written by hwkit", str(demo)), before, (demo,))
    assert not (tmp_path / "o").exists()


def test_onnx_with_a_damaged_string_field(files: dict[str, Path], tmp_path: Path) -> None:
    """Found by the hunt (HWKIT_FUZZ_SCALE=10): a flipped byte in a name made the checker raise UnicodeDecodeError."""
    raw = bytearray(fx.onnx_model(tmp_path / "m.onnx", batch=1).read_bytes())
    raw[9] ^= 0xFF
    (tmp_path / "f.onnx").write_bytes(bytes(raw))
    res = run_inprocess(["bench", tmp_path / "f.onnx", "--out", tmp_path / "b"])
    check_failure(res, 2, "f.onnx")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("offset", [9, 20])
def test_onnx_with_a_damaged_string_field_to_an_fpga_target(files: dict[str, Path], tmp_path: Path,
                                                            offset: int) -> None:
    """Issue 15's leftover: the FPGA path read a damaged .onnx with ModelWrapper, skipped the checker, exit 5."""
    raw = bytearray(fx.onnx_model(tmp_path / "m.onnx", batch=1).read_bytes())
    raw[offset] ^= 0xFF
    (tmp_path / "f.onnx").write_bytes(bytes(raw))
    res = run_inprocess(["compile", tmp_path / "f.onnx", "--target", "zcu104", "--out", tmp_path / "b", "--quiet"])
    check_failure(res, 2, ("f.onnx", "ONNX checker"))
    assert not (tmp_path / "b").exists()
