"""The analog crossbar backend (hwkit/backends/analog.py) pass by pass on a small float MLP: the board's
[analog] section, the exact-mapping check, the simulated instances, the energy/latency estimate and the
report section it contributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hwkit.artifact import Artifact  # noqa: E402
from hwkit.backends import analog  # noqa: E402
from hwkit.board import load_board  # noqa: E402
from hwkit.config import CompileSettings, Context  # noqa: E402
from hwkit.errors import BoardError, FlowError, InputError  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

ARCH = CompileSettings(arch="hwkit.compress.synapse.train:build_mlp", arch_kwargs=(("sizes", [12, 6, 3]),),
                       input_shape=(1, 12), golden_batch=8)


@pytest.fixture
def board(tmp_path):
    """rram-taox-128 with 8-row tiles (so the 12-input layer spans two) and 2 device instances."""
    text = (ROOT / "boards" / "rram-taox-128.toml").read_text()
    text = text.replace("crossbar_rows = 128", "crossbar_rows = 8").replace("device_instances = 10",
                                                                             "device_instances = 2")
    (tmp_path / "small.toml").write_text(text)
    return load_board(str(tmp_path / "small.toml"))


@pytest.fixture
def mlp(tmp_path) -> Path:
    """A float 12-6-3 MLP (state dict) with a labelled sidecar test set the model gets mostly right."""
    from hwkit.compress.synapse.train import build_mlp

    torch.manual_seed(0)
    model = build_mlp([12, 6, 3]).eval()
    x = torch.rand(40, 12)
    with torch.no_grad():
        y = model(x).argmax(1)
    torch.save(model.state_dict(), tmp_path / "mlp.pt")
    np.savez(tmp_path / "mlp.testset.npz", x=x.numpy(), y=y.numpy())
    return tmp_path / "mlp.pt"


def _ctx(board, tmp_path: Path, step: str, **params) -> Context:
    work = tmp_path / "out" / "passes" / step
    work.mkdir(parents=True)
    return Context(board, ARCH, tmp_path / "out", work, params)


def test_config_comes_from_the_typed_board_section(board):
    cfg = analog.analog_config(board)
    assert cfg["crossbar_rows"] == 8 and cfg["device_instances"] == 2 and cfg["programming"] == "open-loop"
    assert cfg["device"].name == "taox-hfox" and cfg["device"].read_noise == 0.01  # the board's override
    assert cfg["coefficients"]["adc_energy_pj"] == [0.8, 1.56, 3.1] and "ISAAC" in cfg["sources"]["adc_energy_pj"]
    with pytest.raises(BoardError, match=r"cpu\.toml: missing table \[analog\]"):
        analog.analog_config(load_board("cpu"))


def test_bad_analog_table_fails_when_the_board_loads(tmp_path):
    text = (ROOT / "boards" / "pcm-gst-256.toml").read_text()
    for old, new, field in (("adc_bits = 8", "adc_bits = 0", "adc_bits"),
                            ('programming = "open-loop"', 'programming = "closed"', "programming"),
                            ("adc_energy_pj = [0.8, 1.56, 3.1]", "adc_energy_pj = [3.1, 1.56, 0.8]",
                             "adc_energy_pj")):
        p = tmp_path / "bad.toml"
        p.write_text(text.replace(old, new))
        with pytest.raises(BoardError, match=rf"bad\.toml \[analog\].*'{field}'"):
            load_board(str(p))


def test_map_simulate_estimate_and_report_section(board, mlp, tmp_path):
    art = analog.analog_map(Artifact(stage="model-file", path=mlp), _ctx(board, tmp_path, "01-analog.map"))
    (row,) = art.meta["verification"]
    assert row["ok"] and row["stage"] == "analog-crossbar (exact mapping)" and row["samples"] == 8
    tiles = {t["name"]: t for t in art.meta["analog"]["layers"]}
    first, second = tiles.values()
    assert (first["in"], first["row_tiles"], first["devices"]) == (12, 2, 2 * 12 * 6)
    assert (second["in"], second["row_tiles"]) == (6, 1)
    assert art.meta["analog"]["data"] == {"what": str(mlp.with_name("mlp.testset.npz")), "samples": 40}

    art = analog.analog_simulate(art, _ctx(board, tmp_path, "02-analog.simulate"))
    sim = art.meta["analog"]["simulation"]
    assert sim["instances"] == 2 and sim["software_accuracy"] == 1.0
    assert 0.0 <= sim["accuracy"]["min"] <= sim["accuracy"]["mean"] <= sim["accuracy"]["max"] <= 1.0
    assert 0 < sim["read_g_v2_s"]["p5"] <= sim["read_g_v2_s"]["mean"] <= sim["read_g_v2_s"]["all_cells_full_scale"]

    art = analog.analog_estimate(art, _ctx(board, tmp_path, "03-analog.estimate"))
    energy = {e["name"]: e for e in art.meta["analog"]["energy"]}
    total = energy.pop("total energy per inference")
    assert total["value"] == pytest.approx(sum(e["value"] for e in energy.values()))
    assert all(e["low"] <= e["value"] <= e["high"] for e in art.meta["analog"]["energy"])
    perf = art.meta["analog"]["performance"]
    assert perf["crossbar_tiles"]["value"] == 2 * first["col_tiles"] + second["col_tiles"]
    assert perf["adc_conversions_per_inference"]["value"] == 2 * 6 + 1 * 3
    assert perf["crossbar_rows"] == {"value": 8, "unit": "count", "source": "board-data"}

    sec = analog.report_section(dict(art.meta), board, {})
    assert sec.performance["energy_per_inference_nj"].value == pytest.approx(total["value"])
    assert sec.performance["energy_per_inference_nj"].source == "analytical-estimate"
    assert [e["name"] for e in sec.energy][-1] == "total energy per inference"
    assert not analog.report_section({"analog": {"layers": []}}, board, {}).performance

    with pytest.raises(FlowError, match="flow parameters of analog.simulate: 'programming'"):
        analog.analog_simulate(art, _ctx(board, tmp_path, "04-bad", programming="closed"))


def test_labelled_data_is_checked(board, mlp, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((5, 7), np.float32), y=np.zeros(5))
    with pytest.raises(InputError, match=r"x must be \[N, 12\]"):
        analog.analog_map(Artifact(stage="model-file", path=mlp),
                          _ctx(board, tmp_path, "01-analog.map", data=str(tmp_path / "wrong.npz")))
    with pytest.raises(InputError, match="nope.npz: file not found"):
        analog.analog_map(Artifact(stage="model-file", path=mlp),
                          _ctx(board, tmp_path, "02-analog.map", data=str(tmp_path / "nope.npz")))
    art = analog.analog_map(Artifact(stage="model-file", path=mlp), _ctx(board, tmp_path, "03-analog.map",
                                                                         data="none"))
    assert art.meta["analog"]["data"] is None and any("no labelled data" in w for w in art.meta["warnings"])
