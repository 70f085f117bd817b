from __future__ import annotations

import re
from pathlib import Path

import pytest

from hwkit.board import RESOURCE_KEYS, all_boards, board_names, load_board
from hwkit.errors import BoardError

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"zcu104", "zcu102", "pynq-z1", "pynq-z2", "ultra96-v2", "kv260", "u250", "cpu"}

GOOD = """
kind = "fpga"
description = "test board"
family = "zynq-ultrascale+"
part = "xczu7ev-ffvc1156-2-e"
finn_board = "ZCU104"
shell_flow = "vivado_zynq"
axi_width_bits = 128
clock_ns = 5.0
default_flow = "finn-estimate"
[resources]
LUT = 1000
FF = 2000
BRAM_18K = 4
URAM = 0
DSP = 8
"""


def test_required_boards_ship_and_validate():
    assert set(board_names()) >= REQUIRED
    boards = {b.name: b for b in all_boards()}
    for b in boards.values():
        if b.kind == "fpga":
            assert set(b.resources) == set(RESOURCE_KEYS)
            assert b.resources["LUT"] > 0 and b.resources["FF"] > b.resources["LUT"]
            assert b.part and b.finn_board and b.clock_ns and b.clock_ns > 0
    assert boards["zcu104"].part == "xczu7ev-ffvc1156-2-e"
    assert boards["zcu104"].resources["BRAM_18K"] == 624
    assert boards["pynq-z1"].axi_width_bits == 64
    assert boards["u250"].shell_flow == "vitis_alveo"
    assert boards["cpu"].kind == "cpu" and boards["cpu"].onnxruntime is not None
    assert boards["cpu"].onnxruntime.execution_providers == ("CPUExecutionProvider",)


def test_unknown_target_lists_known_ones():
    with pytest.raises(BoardError) as e:
        load_board("zcu999")
    msg = str(e.value)
    assert "zcu999" in msg and "zcu104" in msg and "pynq-z2" in msg


def test_board_file_by_path(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text(GOOD)
    b = load_board(str(p))
    assert b.name == "mine" and b.resources["DSP"] == 8


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s.replace('kind = "fpga"', 'kind = "asic"'), "kind"),
        (lambda s: s.replace("clock_ns = 5.0", 'clock_ns = "fast"'), "clock_ns"),
        (lambda s: s.replace("clock_ns = 5.0", "clock_ns = -1"), "clock_ns"),
        (lambda s: s.replace('part = "xczu7ev-ffvc1156-2-e"\n', ""), "'part'"),
        (lambda s: s.replace("DSP = 8", "DSP = 8\nBRAM = 3"), "BRAM"),
        (lambda s: s.replace("LUT = 1000", ""), "LUT"),
        (lambda s: s.replace('shell_flow = "vivado_zynq"', 'shell_flow = "quartus"'), "shell_flow"),
        (lambda s: s.replace("[resources]", "[resources"), "malformed TOML"),
    ],
)
def test_malformed_board_names_file_and_field(tmp_path, edit, needle):
    p = tmp_path / "bad.toml"
    p.write_text(edit(GOOD))
    with pytest.raises(BoardError) as e:
        load_board(str(p))
    assert str(p) in str(e.value) and needle in str(e.value)


def test_no_board_names_in_python_code():
    # Kinds ("cpu", "gpu") double as board names; the FPGA board names and FINN keys must never appear.
    fpga = [b for b in all_boards() if b.kind == "fpga"]
    words = {b.name for b in fpga} | {b.finn_board for b in fpga} | {b.part for b in fpga}
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    offenders = []
    for py in (ROOT / "hwkit").rglob("*.py"):
        for i, line in enumerate(py.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if pattern.search(code) and not code.strip().startswith(('"', "'")):
                offenders.append(f"{py.relative_to(ROOT)}:{i}: {line.strip()}")
    assert offenders == []


def test_sections_are_typed_and_validated_when_the_board_loads(tmp_path):
    from hwkit.board import AnalogSection, OrtSection, PowerSection, Span

    zcu = load_board("zcu104")
    assert isinstance(zcu.power, PowerSection) and zcu.power.static_w == Span(0.6, 0.694, 1.5)
    assert zcu.webpack is True and zcu.min_ram_gib == 32.0 and zcu.vivado_device_dir == "zynquplus"
    assert isinstance(load_board("cpu").onnxruntime, OrtSection) and load_board("cpu").analog is None
    analog = load_board("rram-taox-128").analog
    assert isinstance(analog, AnalogSection) and analog.coefficients["adc_energy_pj"] == (0.8, 1.56, 3.1)
    for edit, needle in [
        ("[power]\nstatic_w = [1.0, 0.5, 2.0]", "static_w"),
        ('[power]\nmeter = "joulemeter"', "meter"),
        ("[power]\ntdp_w = -1", "tdp_w"),
        ('[onnxruntime]\nexecution_providers = []', "execution_providers"),
        ('[onnxruntime]\nexecution_providers = ["CPUExecutionProvider"]\ngraph_optimization_level = "max"',
         "graph_optimization_level"),
        ('webpack = "yes"', "webpack"),
        ("power = 3", "[power] must be a table"),
    ]:
        text = GOOD.replace("[resources]", edit + "\n[resources]") if not edit.startswith("[") else GOOD + edit
        p = tmp_path / "bad.toml"
        p.write_text(text)
        with pytest.raises(BoardError) as e:
            load_board(str(p))
        assert str(p) in str(e.value) and needle in str(e.value), edit


def test_cache_facts_cover_every_field_but_presentation(tmp_path):
    from dataclasses import fields, replace

    from hwkit.board import PowerSection

    b = load_board("zcu104")
    facts = b.cache_facts()
    assert set(facts) == {f.name for f in fields(b)} - {"name", "description", "default_flow", "source"}
    assert replace(b, name="x", description="y", source="/z.toml").cache_facts() == facts
    assert replace(b, power=PowerSection(static_w=None)).cache_facts() != facts
    assert replace(b, min_ram_gib=64.0).cache_facts() != facts
