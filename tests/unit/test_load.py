from __future__ import annotations

import os

import pytest
import torch

from hwkit.config import CompileSettings
from hwkit.errors import ModelLoadError
from hwkit.load import load_model
from tests.conftest import make_qmlp, save_checkpoint

S = CompileSettings(clock_ns=5.0)


class Payload:
    """Unpickling this runs a shell command: the attack weights_only=True loading must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hwkit_checkpoint_round_trips(tmp_path):
    model = make_qmlp()
    path = save_checkpoint(tmp_path / "m.pt", model, golden_inputs=torch.ones(3, 16), meta={"acc": 0.5})
    loaded = load_model(path, S)
    assert loaded.format == "hwkit-checkpoint"
    assert loaded.input_shape == (1, 16) and loaded.input_dtype == "UINT8"
    assert loaded.golden_inputs.shape == (3, 16) and loaded.meta == {"acc": 0.5}
    x = torch.randint(0, 256, (5, 16)).float()
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model(x))
    assert not loaded.module.training


def test_settings_override_checkpoint_input_facts(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", make_qmlp())
    loaded = load_model(path, CompileSettings(clock_ns=5.0, input_dtype="INT8", input_shape=(1, 16)))
    assert loaded.input_dtype == "INT8"


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload(marker)}, path)
    with pytest.raises(ModelLoadError) as e:
        load_model(path, S)
    assert "--trust-pickle" in str(e.value) and str(path) in str(e.value)
    assert not marker.exists()


def test_full_module_pickle_needs_opt_in(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(16, 4))  # Brevitas modules cannot be pickled whole
    path = tmp_path / "full.pt"
    torch.save(model, path)
    with pytest.raises(ModelLoadError, match="trust-pickle"):
        load_model(path, S)
    loaded = load_model(path, CompileSettings(clock_ns=5.0, trust_pickle=True, input_shape=(1, 16)))
    assert loaded.format == "pickle" and loaded.input_shape == (1, 16)


def test_torchscript_needs_opt_in_then_loads_and_compiles_for_cpu(tmp_path):
    """A torch.jit.save archive once failed as "not a readable PyTorch file"; loading it runs its TorchScript code,
    so it needs --trust-pickle like a full pickle, and then goes through the ONNX Runtime flow."""
    import json

    from hwkit.cli import main
    from hwkit.load import is_torchscript

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    assert is_torchscript(path) and not is_torchscript(save_checkpoint(tmp_path / "ck.pt", make_qmlp()))
    with pytest.raises(ModelLoadError, match="TorchScript archive.*--trust-pickle"):
        load_model(path, S)
    loaded = load_model(path, CompileSettings(clock_ns=5.0, trust_pickle=True, input_shape=(1, 16)))
    assert loaded.format == "torchscript" and loaded.input_shape == (1, 16)
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model(x))
    out = tmp_path / "build"
    assert main(["compile", str(path), "--trust-pickle", "--input-shape", "1,16", "--target", "cpu", "--runs", "3",
                 "--out", str(out), "--quiet"]) == 0
    rows = json.loads((out / "report.json").read_text())["verification"]
    assert [r["ok"] for r in rows] == [True, True] and rows[0]["reference"] == "torch"


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelLoadError, match="not a readable PyTorch file"):
        load_model(bad, S)
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope.pt", S)
    truncated = tmp_path / "trunc.pt"
    save_checkpoint(tmp_path / "ok.pt", make_qmlp())
    truncated.write_bytes((tmp_path / "ok.pt").read_bytes()[:500])
    with pytest.raises(ModelLoadError, match="not a readable PyTorch file"):
        load_model(truncated, S)


def test_state_dict_needs_arch(tmp_path):
    model = make_qmlp()
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(path, S)
    kwargs = (("act_bits", 2), ("hidden", [16, 8]), ("in_features", 16), ("out_features", 4), ("weight_bits", 2))
    settings = CompileSettings(clock_ns=5.0, arch="hwkit.models.mlp:build_qmlp", arch_kwargs=kwargs)
    loaded = load_model(path, settings)
    assert loaded.format == "state-dict"
    wrong = CompileSettings(clock_ns=5.0, arch="hwkit.models.mlp:build_qmlp",
                            arch_kwargs=(*kwargs[:1], ("hidden", [16, 9]), *kwargs[2:]))
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(path, wrong)
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_model(path, CompileSettings(clock_ns=5.0, arch="no_such_module:f"))


def test_checkpoint_cannot_name_arbitrary_code(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, make_qmlp())
    ckpt = torch.load(path, weights_only=True)
    ckpt["arch"] = "os:system"
    torch.save(ckpt, path)
    with pytest.raises(ModelLoadError, match="unknown architecture 'os:system'"):
        load_model(path, S)
