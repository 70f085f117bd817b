from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwkit.artifact import Artifact
from hwkit.board import load_board
from hwkit.config import CompileSettings
from hwkit.errors import FlowError, InputError, ToolError
from hwkit.flow import Runner, flow_from_functions, flow_names, load_flow

FINN_STEPS = [
    "qonnx_to_finn", "tidy_up", "streamline", "convert_to_hw", "minimize_bit_width_initial",
    "create_dataflow_partition", "specialize_layers", "target_fps_parallelization", "apply_folding_config",
    "minimize_bit_width", "generate_estimate_reports", "hw_codegen",
]


def test_finn_estimate_flow_has_every_vivado_free_step_in_order():
    flow = load_flow("finn-estimate")
    assert "finn-estimate" in flow_names()
    names = [s.spec.name for s in flow.steps]
    finn = [n.removeprefix("finn.") for n in names if n.startswith("finn.")]
    assert finn == FINN_STEPS
    assert names[0] == "export_qonnx"
    labels = [s.label for s in flow.steps if s.spec.name == "verify"]
    assert labels == ["finn-streamlined", "finn-hw"]
    assert names.index("verify") > names.index("finn.streamline")
    assert flow.board_kinds == ("fpga",)


def test_find_step_by_number_id_name_and_label():
    flow = load_flow("finn-estimate")
    assert flow.find("4") == 3
    assert flow.find("finn.streamline") == 3
    assert flow.find("streamline") == 3
    assert flow.find("04-finn.streamline") == 3
    assert flow.find("finn-hw") == flow.find("13-verify-finn-hw")
    with pytest.raises(FlowError, match="ambiguous"):
        flow.find("verify")
    with pytest.raises(FlowError, match="no step 'nope'"):
        flow.find("nope")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('passes = ["export_qonnx", "no_such_pass"]', "unknown pass 'no_such_pass'"),
        ('passes = ["finn.no_such_step"]', "unknown pass 'finn.no_such_step'"),
        ("passes = []", "non-empty"),
        ('passes = [{label = "x"}]', "passes[0]"),
        ('passes = ["verify"', "malformed TOML"),
    ],
)
def test_bad_flow_files(tmp_path, text, needle):
    p = tmp_path / "f.toml"
    p.write_text(text)
    with pytest.raises(FlowError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_flow(str(p))


def test_unknown_flow_name_lists_known():
    with pytest.raises(FlowError, match="finn-estimate"):
        load_flow("nope")


# --- the runner, on pure-Python passes that count their executions -------------------------------

CALLS: list[str] = []


def p_read(art, ctx):
    CALLS.append("read")
    text = art.path.read_text()
    out = ctx.work_dir / "a.txt"
    out.write_text(text.upper())
    return art.evolve(stage="a", path=out, seen=[text])


def p_double(art, ctx):
    CALLS.append("double")
    out = ctx.work_dir / "b.txt"
    out.write_text(art.path.read_text() * 2)
    return art.evolve(stage="b", path=out)


def p_clock(art, ctx):
    CALLS.append("clock")
    out = ctx.work_dir / "c.txt"
    out.write_text(f"{art.path.read_text()}@{ctx.settings.clock_ns}")
    return art.evolve(stage="c", path=out)


def p_boom(art, ctx):
    CALLS.append("boom")
    (ctx.work_dir / "partial.bin").write_bytes(b"x")
    raise RuntimeError("tool exploded\nsecond line")


def _run(tmp_path: Path, fns, clock=5.0, **kw):
    src = tmp_path / "in.txt"
    if not src.exists():
        src.write_text("hi")
    flow = flow_from_functions("t", fns)
    runner = Runner(flow, load_board("zcu104"), CompileSettings(clock_ns=clock), tmp_path / "out")
    return runner.run(Artifact("file", src), "k0", **kw)


def test_runner_checkpoints_caches_and_resumes(tmp_path):
    CALLS.clear()
    art, recs = _run(tmp_path, [p_read, p_double, p_clock])
    assert CALLS == ["read", "double", "clock"]
    assert art.path.read_text() == "HIHI@5.0"
    assert [r.cached for r in recs] == [False, False, False]
    ckpt = json.loads((tmp_path / "out/passes/02-p_double/artifact.json").read_text())
    assert ckpt["artifact"]["path"] == "passes/02-p_double/b.txt"

    CALLS.clear()
    art2, recs2 = _run(tmp_path, [p_read, p_double, p_clock])
    assert CALLS == [] and all(r.cached for r in recs2)
    assert art2.path == art.path and art2.meta["seen"] == ("hi",)

    CALLS.clear()
    _run(tmp_path, [p_read, p_double, p_clock], clock=4.0)  # a setting all passes use: everything re-runs
    assert CALLS == ["read", "double", "clock"]

    CALLS.clear()
    _, recs3 = _run(tmp_path, [p_read, p_double, p_clock], clock=4.0, from_step="2")
    assert CALLS == ["double", "clock"] and [r.cached for r in recs3] == [True, False, False]

    CALLS.clear()
    art4, recs4 = _run(tmp_path, [p_read, p_double, p_clock], clock=4.0, to_step="p_double")
    assert CALLS == [] and len(recs4) == 2 and art4.stage == "b"


def test_changed_input_invalidates_everything(tmp_path):
    CALLS.clear()
    _run(tmp_path, [p_read, p_double])
    src = tmp_path / "in.txt"
    src.write_text("ho")
    flow = flow_from_functions("t", [p_read, p_double])
    runner = Runner(flow, load_board("zcu104"), CompileSettings(clock_ns=5.0), tmp_path / "out")
    art, recs = runner.run(Artifact("file", src), "k1")
    assert art.path.read_text() == "HOHO" and not any(r.cached for r in recs)


def test_failing_pass_names_itself_and_keeps_earlier_checkpoints(tmp_path):
    CALLS.clear()
    with pytest.raises(ToolError) as e:
        _run(tmp_path, [p_read, p_boom, p_clock])
    msg = str(e.value)
    assert "02-p_boom" in msg and "tool exploded" in msg and "second line" not in msg
    assert not (tmp_path / "out/passes/02-p_boom/artifact.json").exists()
    assert (tmp_path / "out/passes/01-p_read/artifact.json").exists()
    CALLS.clear()
    with pytest.raises(ToolError):
        _run(tmp_path, [p_read, p_boom, p_clock])
    assert CALLS == ["boom"]  # resumed after the last good checkpoint


def test_from_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FlowError, match="no valid checkpoint"):
        _run(tmp_path, [p_read, p_double], from_step="2")


def test_pass_output_is_captured_in_its_log(tmp_path, capsys):
    def p_noisy(art, ctx):
        print("finn says hello")
        return art

    _run(tmp_path, [p_noisy])
    assert "finn says hello" not in capsys.readouterr().out
    assert "finn says hello" in (tmp_path / "out/passes/01-p_noisy/pass.log").read_text()


def test_input_errors_keep_their_type(tmp_path):
    def p_bad(art, ctx):
        raise InputError("in.txt: field 'x' is wrong")

    with pytest.raises(InputError, match="01-p_bad: in.txt: field 'x'"):
        _run(tmp_path, [p_bad])


def test_one_compile_per_build_directory(tmp_path, tiny_ckpt):
    import fcntl

    from hwkit.api import compile_model

    out = tmp_path / "b"
    out.mkdir()
    with (out / ".hwkit.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="another hwkit compile"):
            compile_model(tiny_ckpt, "zcu104", out)


def test_cache_key_follows_every_board_fact_but_not_its_name(tmp_path):
    from dataclasses import replace

    from hwkit.board import PowerSection

    flow = load_flow("finn-estimate")
    board = load_board("zcu104")

    def keys(b):
        return Runner(flow, b, CompileSettings(clock_ns=5.0), tmp_path).step_keys("0" * 64)

    base = keys(board)
    assert keys(replace(board, name="mine", description="copy", source=str(tmp_path / "mine.toml"))) == base
    power = keys(replace(board, power=PowerSection(static_w=None)))
    changed = [a != b for a, b in zip(base, power, strict=True)]
    step = [s.spec.name for s in flow.steps]
    assert not changed[step.index("export_qonnx")]  # passes that do not use the board keep their key
    assert changed[step.index("estimate_power")]
    assert keys(replace(board, vivado_device_dir="other"))[-1] != base[-1]
