"""Property-based fuzzing (hypothesis) of everything a user hands hwkit: command-line numbers, board and
flow TOML fields, checkpoint fields, and byte-level corruptions of .pt/.onnx/.toml/.json/CAN files.

Every generated case either succeeds with values inside the documented ranges, or fails with the
contract of :func:`tests.fuzz.harness.check_failure`: exit 2 (bad input), one error line naming the
flag or the file, no traceback, pre-existing files byte-identical, no report left. The budget is
bounded (``max_examples`` per property, no deadline; ``HWKIT_FUZZ_SCALE`` multiplies it) so the suite stays
within a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import fixtures as fx
from tests.fuzz.harness import check_failure, leftover_reports, run_inprocess, snapshot

_SCALE = float(os.environ.get("HWKIT_FUZZ_SCALE", "1"))
"""Multiplies every budget; CI runs 1 (derandomised, about a minute), a bug hunt e.g. 10 with a random seed."""
_DERANDOMIZE = _SCALE == 1
FAST = settings(max_examples=int(100 * _SCALE), deadline=None, derandomize=_DERANDOMIZE,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(max_examples=int(40 * _SCALE), deadline=None, derandomize=_DERANDOMIZE,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid seed files that the mutations start from."""
    d = tmp_path_factory.mktemp("seeds")
    csv = d / "DoS_dataset.csv"
    csv.write_text("".join(fx.CSV_OK.replace("1478198376.389427", f"{1478198376.389427 + i * 0.001:.6f}")
                           for i in range(12)))
    report = d / "report.json"
    fx.write_json(report, fx.report_doc())
    return {"pt": fx.save_pt(d / "tiny.pt", fx.tiny_checkpoint_dict()), "onnx": fx.onnx_model(d / "m.onnx", batch=1),
            "toml": fx.ZCU104, "json": report, "csv": csv}


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hwkit-fuzz-"))


# -- command-line numbers --------------------------------------------------------------------------------

NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-0", "0", "0.0", "1e-320", "", " ", "abc",
                     "0x10", "1_000", "1,5", "--", "5e", "١٢"]),
    st.text(max_size=6),
)
# (command argv prefix, flag, predicate an accepted value satisfies)
FLAGS: list[tuple[list[str], str, Any]] = [
    (["compile", "m.pt", "--target", "zcu104"], "--clock-ns", lambda v: 0 < v <= 1e6),
    (["compile", "m.pt", "--target", "zcu104"], "--target-fps", lambda v: 1 <= v <= 1e12),
    (["compile", "m.pt", "--target", "zcu104"], "--golden-batch", lambda v: isinstance(v, int) and 1 <= v <= 65536),
    (["design-hash", "m.pt", "--target", "zcu104"], "--clock-ns", lambda v: 0 < v <= 1e6),
    (["train", "cqmlp", "--synthetic"], "--lr", lambda v: 0 < v <= 10),
    (["train", "cqmlp", "--synthetic"], "--warmup", lambda v: 0 <= v < 1),
    (["train", "cqmlp", "--synthetic"], "--weight-decay", lambda v: 0 <= v <= 10),
    (["train", "cqmlp", "--synthetic"], "--max-train-windows", lambda v: isinstance(v, int) and v >= 1),
    (["train", "cqmlp", "--synthetic"], "--synthetic-seconds", lambda v: 0 < v <= 86400),
    (["train", "cqmlp", "--synthetic"], "--epochs", lambda v: isinstance(v, int) and v >= 1),
    (["bench", "m.onnx"], "--runs", lambda v: isinstance(v, int) and v >= 1),
    (["bench", "m.onnx"], "--warmup", lambda v: isinstance(v, int) and v >= 0),
    (["prune", "m.pt", "--calib", "digits", "--out", "p.pt"], "--delta-e", lambda v: 0 <= v <= 1e6),
    (["prune", "m.pt", "--calib", "digits", "--out", "p.pt"], "--temp-inv", lambda v: 0 < v <= 1e6),
    (["shiftadd", "m.pt", "--calib", "digits", "--out", "s.pt"], "--lr", lambda v: 0 < v <= 10),
    (["shiftadd", "m.pt", "--calib", "digits", "--out", "s.pt"], "--route-share", lambda v: 0 <= v <= 1),
    (["explore", "c.toml"], "--trials", lambda v: isinstance(v, int) and v >= 1),
]


def _parse(argv: list[str]) -> argparse.Namespace:
    """What :func:`hwkit.cli.main` accepts, without running the command (argparse's usage errors print to a buffer)."""
    import contextlib
    import io

    from hwkit.cli import _check_single_values, build_parser

    parser = build_parser()
    with contextlib.redirect_stderr(io.StringIO()):
        ns = parser.parse_args(argv)
        _check_single_values(parser, ns)
    return ns


@FAST
@given(which=st.integers(0, len(FLAGS) - 1), text=NUMBER_TEXT)
def test_cli_numbers(which: int, text: str) -> None:
    """An accepted number is finite and in range; a refused one is exit 2 with one line naming the flag."""
    prefix, flag, ok = FLAGS[which]
    argv = [*prefix, f"{flag}={text}"]
    try:
        ns = _parse(argv)
    except SystemExit:
        res = run_inprocess(argv)  # the same refusal through main(): nothing runs, nothing is written
        check_failure(res, 2, flag)
        return
    value = getattr(ns, flag.lstrip("-").replace("-", "_"))
    assert isinstance(value, int | float) and not isinstance(value, bool)
    assert math.isfinite(value) and ok(value), (flag, text, value)


@FAST
@given(text=st.one_of(st.text(max_size=12), st.sampled_from(["BOGUS", "uint8", "FLOAT64", "INT0", "INT65"])))
def test_cli_dtype_names(text: str) -> None:
    for argv, flag in ((["bench", "m.onnx"], "--input-dtype"), (["compile", "m.pt", "--target", "cpu"],
                                                                 "--input-dtype")):
        try:
            ns = _parse([*argv, f"{flag}={text}"])
        except SystemExit:
            check_failure(run_inprocess([*argv, f"{flag}={text}"]), 2, flag)
            continue
        assert ns.input_dtype == ns.input_dtype.upper() and ns.input_dtype.strip() == ns.input_dtype


# -- board and flow TOML fields ----------------------------------------------------------------------------

TOML_VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf") if math.isinf(f) else repr(f)),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.sampled_from(['"5"', "true", "[]", "{}", '"inf"', "0", "-1", "1e400"]),
)
BOARD_FIELDS = ["clock_ns", "axi_width_bits", "kind", "description", "default_flow", "part"]


@FAST
@given(field=st.sampled_from([*BOARD_FIELDS, "LUT", "DSP", "power"]), value=TOML_VALUE)
def test_board_fields(field: str, value: str) -> None:
    """A board file either loads with finite, in-range numbers or fails naming the file and the field."""
    work = _workdir()
    try:
        path = work / "b.toml"
        if field in ("LUT", "DSP"):
            text = fx.ZCU104.read_text(encoding="utf-8").replace(f"\n{field} = ", f"\n{field} = {value} # ", 1)
        elif field == "power":
            text = fx.board_text() + f"\n[power_model]\nstatic_w = {value}\n"
        else:
            text = fx.board_text(**{field: value})
        path.write_text(text, encoding="utf-8")
        before = snapshot(work)
        res = run_inprocess(["design-hash", fx.CQMLP, "--target", path, "--flow", "finn-estimate",
                             "--vivado-version", "none"])
        if res.code == 0:
            from hwkit.board import load_board_file, non_finite_field

            b = load_board_file(path)
            assert b.clock_ns is not None and math.isfinite(b.clock_ns) and b.clock_ns > 0
            assert all(isinstance(v, int) and v >= 0 for v in b.resources.values())
            assert non_finite_field(b.extra) is None
        else:
            check_failure(res, 2, str(path), before, (work,), (work,))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@FAST
@given(param=st.sampled_from(["test_samples", "rtol", "batch_sizes"]), value=TOML_VALUE)
def test_flow_fields(param: str, value: str) -> None:
    work = _workdir()
    try:
        path = work / "f.toml"
        path.write_text(f'name = "f"\nboard_kinds = ["cpu"]\npasses = [{{ name = "export_onnx", {param} = {value} }}, '
                        '"ort.session"]\n', encoding="utf-8")
        res = run_inprocess(["design-hash", fx.CQMLP, "--target", "cpu", "--flow", path, "--vivado-version", "none"])
        if res.code != 0:
            check_failure(res, 2, str(path))
        else:
            from hwkit.board import non_finite_field
            from hwkit.flow import load_flow

            assert non_finite_field([dict(s.params) for s in load_flow(str(path)).steps]) is None
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- checkpoint fields -----------------------------------------------------------------------------------

def _tensor(draw: Any) -> Any:
    import torch

    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    kind = draw(st.sampled_from(["float", "int", "bool", "nan", "inf"]))
    if kind == "int":
        return torch.randint(0, 255, shape)
    if kind == "bool":
        return torch.zeros(shape, dtype=torch.bool)
    t = torch.rand(shape)
    if kind in ("nan", "inf") and t.numel():
        t.view(-1)[0] = float(kind)
    return t


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                       max_leaves=6)


@st.composite
def checkpoint_edits(draw: Any) -> dict[str, Any]:
    edits: dict[str, Any] = {}
    for key in draw(st.sets(st.sampled_from(["golden_inputs", "meta", "input_shape", "input_dtype", "arch_kwargs",
                                             "arch", "hwkit_checkpoint", "state_dict"]), min_size=1, max_size=3)):
        if key == "golden_inputs":
            edits[key] = draw(st.one_of(st.builds(lambda: None), JSONISH, st.just("tensor")))
            if edits[key] == "tensor":
                edits[key] = _tensor(draw)
        elif key == "input_shape":
            edits[key] = draw(st.one_of(JSONISH, st.lists(st.integers(-3, 40), max_size=3)))
        elif key == "input_dtype":
            edits[key] = draw(st.one_of(JSONISH, st.sampled_from(["UINT8", "INT8", "BOGUS", "FLOAT32", ""])))
        elif key == "state_dict":
            edits[key] = draw(st.one_of(JSONISH, st.just("nan")))
        else:
            edits[key] = draw(JSONISH)
    return edits


@functools.cache
def _base_checkpoint() -> dict[str, Any]:
    return fx.tiny_checkpoint_dict()


@SLOW
@given(edits=checkpoint_edits())
def test_checkpoint_fields(edits: dict[str, Any]) -> None:
    """A checkpoint with odd fields loads with checked values, or fails naming the file (exit 2)."""
    import numpy as np
    import torch

    from hwkit.config import CompileSettings
    from hwkit.errors import InputError
    from hwkit.load import load_model

    work = _workdir()
    try:
        ck = dict(_base_checkpoint())
        if edits.get("state_dict") == "nan":
            sd = {k: v.clone() for k, v in ck["state_dict"].items()}
            sd[next(k for k, v in sd.items() if v.is_floating_point())].fill_(float("nan"))
            edits["state_dict"] = sd
        ck.update(edits)
        path = fx.save_pt(work / "ck.pt", ck)
        try:
            loaded = load_model(path, CompileSettings())
        except InputError as exc:
            assert str(path) in str(exc) or "--arch" in str(exc), exc
            assert "\n" not in str(exc)
            return
        assert isinstance(loaded.meta, dict)
        for t in loaded.module.state_dict().values():
            assert not t.is_floating_point() or bool(torch.isfinite(t).all())
        if loaded.golden_inputs is not None:
            g = loaded.golden_inputs
            assert np.isfinite(g).all() and g.ndim >= 2
            if loaded.input_shape:
                assert tuple(g.shape[1:]) == tuple(loaded.input_shape[1:])
        if loaded.input_shape is not None:
            assert all(isinstance(d, int) and d > 0 for d in loaded.input_shape)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- byte-level corruption -------------------------------------------------------------------------------

@st.composite
def corruption(draw: Any, size: int) -> list[tuple[str, int, bytes]]:
    ops = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
        pos = draw(st.integers(0, max(size - 1, 0)))
        ops.append((op, pos, draw(st.binary(min_size=1, max_size=8))))
    return ops


def _corrupt(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, pos, blob in ops:
        pos = min(pos, len(buf))
        if op == "flip" and buf:
            buf[min(pos, len(buf) - 1)] ^= blob[0] or 0xFF
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = blob
        elif op == "zero":
            buf[pos:pos + len(blob)] = bytes(len(buf[pos:pos + len(blob)]))
    return bytes(buf)


@SLOW
@given(data=st.data())
def test_corrupt_checkpoint(data: st.DataObject, inputs: dict[str, Path]) -> None:
    from hwkit.config import CompileSettings
    from hwkit.errors import InputError
    from hwkit.load import load_model

    raw = inputs["pt"].read_bytes()
    work = _workdir()
    try:
        path = work / "c.pt"
        path.write_bytes(_corrupt(raw, data.draw(corruption(len(raw)))))
        try:
            load_model(path, CompileSettings())
        except InputError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@SLOW
@given(data=st.data())
def test_corrupt_onnx_bench(data: st.DataObject, inputs: dict[str, Path]) -> None:
    """``hwkit bench`` on a damaged ONNX file: it measures, or exits 2 naming the file; --out is all or none."""
    raw = inputs["onnx"].read_bytes()
    work = _workdir()
    try:
        path = work / "c.onnx"
        path.write_bytes(_corrupt(raw, data.draw(corruption(len(raw)))))
        out = work / "out"
        before = snapshot(path)
        res = run_inprocess(["bench", path, "--runs", "1", "--warmup", "0", "--batch-runs", "1", "--batch-sizes", "1",
                             "--out", out, "--json"])
        if res.code == 0:
            assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "report.html"}
            json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
        else:
            check_failure(res, 2, str(path), before, (path,), (work,))
            assert not out.exists()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@FAST
@given(data=st.data())
def test_corrupt_board_toml(data: st.DataObject, inputs: dict[str, Path]) -> None:
    raw = inputs["toml"].read_bytes()
    work = _workdir()
    try:
        path = work / "b.toml"
        path.write_bytes(_corrupt(raw, data.draw(corruption(len(raw)))))
        res = run_inprocess(["design-hash", fx.CQMLP, "--target", path, "--flow", "finn-estimate",
                             "--vivado-version", "none"])
        if res.code != 0:
            check_failure(res, 2, (str(path), "flow"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@FAST
@given(data=st.data(), cmd=st.sampled_from(["report", "compare"]))
def test_corrupt_report_json(data: st.DataObject, cmd: str, inputs: dict[str, Path]) -> None:
    raw = inputs["json"].read_bytes()
    work = _workdir()
    try:
        good, bad = work / "good", work / "bad"
        good.mkdir()
        bad.mkdir()
        shutil.copy(inputs["json"], good / "report.json")
        (bad / "report.json").write_bytes(_corrupt(raw, data.draw(corruption(len(raw)))))
        before = snapshot(work)
        res = run_inprocess(["report", bad, "--quiet"] if cmd == "report" else ["compare", good, bad, "--json"])
        if res.code != 0:
            check_failure(res, 2, str(bad / "report.json"), before, (work,))
        elif cmd == "report":  # re-rendered: the three report files, nothing else added
            assert {p.name for p in bad.iterdir()} == {"report.json", "report.md", "report.html", ".hwkit-output"}
        assert not [p for p in leftover_reports(work) if p.endswith(".tmp")]
    finally:
        shutil.rmtree(work, ignore_errors=True)


@FAST
@given(data=st.data())
def test_corrupt_can_csv(data: st.DataObject, inputs: dict[str, Path]) -> None:
    from hwkit.data.can import CanDataError, read_frames

    raw = inputs["csv"].read_bytes()
    work = _workdir()
    try:
        path = work / "DoS_dataset.csv"
        path.write_bytes(_corrupt(raw, data.draw(corruption(len(raw)))))
        try:
            frames, _ = read_frames(path)
        except CanDataError as exc:  # nothing readable at all
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
        assert all(math.isfinite(t) for t in frames.time_s)
        try:
            strict, _ = read_frames(path, strict=True)
            assert len(strict) == len(frames)
        except CanDataError as exc:
            assert f"{path}:" in str(exc) and "\n" not in str(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_argparse_types_are_pure() -> None:
    """The number types themselves: a few fixed points (the properties above explore the rest)."""
    from hwkit.cli.args import integer, number

    assert number(0, 1, hi_open=True)("0") == 0.0
    for bad in ("1", "nan", "inf", "-1e-9"):
        with pytest.raises(argparse.ArgumentTypeError):
            number(0, 1, hi_open=True)(bad)
    assert integer(1)("7") == 7
    with pytest.raises(argparse.ArgumentTypeError):
        integer(1)("1.5")
