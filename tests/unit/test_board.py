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
    assert boards["cpu"].kind == "cpu" and boards["cpu"].extra["onnxruntime"]["execution_providers"]


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
