"""``hwkit quantize`` pieces: recipe parsing, data loaders, the Brevitas rewrite and its rebuild, per-layer
widths, unsupported layers, PTQ and QAT (real Brevitas, small models, one thread)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwkit.errors import InputError, UnsupportedLayerError

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _float_ckpt(path, hidden=(24, 12), softmax=False, seed=0):
    from hwkit.models import builder

    kw = {"in_features": 16, "hidden": list(hidden), "out_features": 4, "softmax": softmax}
    torch.manual_seed(seed)
    m = builder("mlp")(**kw)
    torch.save({"hwkit_checkpoint": 1, "arch": "mlp", "arch_kwargs": kw, "state_dict": m.state_dict(),
                "input_shape": [1, 16], "input_dtype": "FLOAT32"}, path)
    return path


def _npz(path, n=96, labels=False):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    arrays = {"x": x, **({"y": rng.integers(0, 4, n)} if labels else {})}
    np.savez(path, **arrays)
    return path


def test_bits_and_layer_bits_parse():
    from hwkit.compress.quantize.run import parse_bits, parse_layer_bits

    assert parse_bits("w4a8") == (4, 8) and parse_bits("W2A2") == (2, 2)
    assert parse_layer_bits("0=2, 4=8") == {"0": 2, "4": 8}
    for bad in ("4", "w4", "w1a4", "w4a17"):
        with pytest.raises(InputError):
            parse_bits(bad)
    for bad in ("0", "0=x", "=3", "0=1"):
        with pytest.raises(InputError):
            parse_layer_bits(bad)


def test_calib_loaders_npz_images_callable(tmp_path):
    from PIL import Image

    from hwkit.data.calib import load_data

    d = load_data(str(_npz(tmp_path / "u.npz", 100)))
    assert not d.labelled and len(d.calib_x) == 75 and len(d.val_x) == 25 and d.test_x is None
    d = load_data(str(_npz(tmp_path / "l.npz", 100, labels=True)))
    assert d.labelled and (len(d.calib_x), len(d.val_x), len(d.test_x)) == (60, 20, 20)
    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((6, 6), 40 * i + (c == "b") * 30, np.uint8)).save(tmp_path / "img" / c / f"{i}.png")
    d = load_data(str(tmp_path / "img"))
    assert d.labelled and tuple(d.calib_x.shape[1:]) == (1, 6, 6) and float(d.calib_x.max()) <= 1.0
    assert set(torch.cat([d.calib_y, d.val_y, d.test_y]).tolist()) == {0, 1}
    d = load_data("tests.e2e.models:random_loader")
    assert d.labelled and len(d.calib_x) + len(d.val_x) + len(d.test_x) == 64
    for bad in ("nope.npz", str(tmp_path), "tests.e2e.models:no_such_fn"):
        with pytest.raises(InputError):
            load_data(bad if bad != str(tmp_path) else str(tmp_path / "empty_dir_missing"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError):
        load_data(str(tmp_path / "bad.npz"))


def test_unsupported_layer_is_named_with_its_path():
    from hwkit.compress.quantize.recipe import QuantRecipe, quantize_float
    from tests.e2e.models import gelu_mlp

    with pytest.raises(UnsupportedLayerError, match=r"1 \(GELU\): FINN has no GELU layer"):
        quantize_float(gelu_mlp(), QuantRecipe())
    mid = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Softmax(-1), torch.nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=r"1 \(Softmax\): only a Softmax at the very end"):
        quantize_float(mid, QuantRecipe())


def test_ptq_checkpoint_rebuilds_without_pickles_with_per_layer_widths(tmp_path):
    from hwkit.compress.quantize.recipe import quant_layers
    from hwkit.compress.quantize.run import quantize_file
    from hwkit.config import CompileSettings
    from hwkit.load import load_model

    src = _float_ckpt(tmp_path / "f.pt", softmax=True)
    out = tmp_path / "q" / "q.pt"
    out.parent.mkdir()
    rep = quantize_file(src, CompileSettings(), {"weight_bits": 4, "act_bits": 3, "layer_bits": "2=2", "bias_bits": 16,
                                                 "calib": str(_npz(tmp_path / "c.npz"))}, out, out.parent)
    widths = {x["name"]: x["weight_bits"] for x in rep["layers"]}
    assert widths == {"0": 4, "2": 2, "4": 4} and {x["bias"] for x in rep["layers"]} == {"int16"}
    relu_bits = {x["bits"] for x in rep["activations"] if x["role"] == "ReLU"}
    assert relu_bits == {3} and {x["bits"] for x in rep["activations"] if x["role"] == "input"} == {8}
    assert rep["accuracy"]["float"] is None and 0 <= rep["agreement"]["top1_with_float"] <= 1
    assert [x["name"] for x in rep["left_float"]] == ["5"] and "softmax" in rep["left_float"][0]["why"]
    assert rep["weight_memory"]["quantized_bytes"] == (16 * 24 * 4 + 24 * 12 * 2 + 12 * 4 * 4) / 8
    ck = torch.load(out, weights_only=True)  # plain tensors and values only
    assert ck["arch"] == "quantized" and ck["arch_kwargs"]["float_arch"] == "mlp"
    loaded = load_model(out, CompileSettings())
    assert {n: int(m.quant_weight().bit_width) for n, m in quant_layers(loaded.module)} == widths
    x = torch.randn(8, 16)
    with torch.no_grad():
        y = loaded.module(x)
    assert y.shape == (8, 4) and not torch.allclose(y.softmax(-1).sum(-1), y.sum(-1))  # softmax dropped: logits
    md = (out.parent / "quantize_report.md").read_text()
    assert "| 2 | QuantLinear | 2 |" in md and "Left float" in md
    assert json.loads((out.parent / "quantize_report.json").read_text())["recipe"]["layer_bits"] == {"2": 2}
    with pytest.raises(InputError, match="no such Linear/Conv layer"):
        quantize_file(src, CompileSettings(), {"layer_bits": "fc9=2", "calib": str(tmp_path / "c.npz")},
                      tmp_path / "x.pt", tmp_path)
    with pytest.raises(InputError, match="already quantised"):
        quantize_file(out, CompileSettings(), {"calib": str(tmp_path / "c.npz")}, tmp_path / "y.pt", tmp_path)


def test_user_arch_state_dict_needs_the_arch_again(tmp_path):
    from hwkit.compress.quantize.run import quantize_file
    from hwkit.config import CompileSettings
    from hwkit.errors import ModelLoadError
    from hwkit.load import load_model
    from tests.e2e.models import float_mlp16

    torch.manual_seed(0)
    torch.save(float_mlp16().state_dict(), tmp_path / "sd.pt")
    s = CompileSettings(arch="tests.e2e.models:float_mlp16", input_shape=(1, 16))
    quantize_file(tmp_path / "sd.pt", s, {"calib": "tests.e2e.models:random_loader"}, tmp_path / "q.pt", tmp_path)
    assert load_model(tmp_path / "q.pt", s).format == "hwkit-checkpoint"
    with pytest.raises(ModelLoadError, match="pass that --arch"):
        load_model(tmp_path / "q.pt", CompileSettings())


def test_qat_recovers_what_w2a2_ptq_loses(tmp_path):
    """On digits, 2-bit PTQ loses accuracy; three QAT epochs with distillation win most of it back."""
    from hwkit.compress.amp.toy import digits_splits, train_classifier
    from hwkit.compress.quantize.run import quantize_file
    from hwkit.config import CompileSettings
    from hwkit.models import builder

    kw = {"in_features": 64, "hidden": [32], "out_features": 10}
    d = digits_splits(0)
    torch.manual_seed(0)
    m = train_classifier(builder("mlp")(**kw), *d["train"], epochs=8)
    src = tmp_path / "f.pt"
    torch.save({"hwkit_checkpoint": 1, "arch": "mlp", "arch_kwargs": kw, "state_dict": m.state_dict(),
                "input_shape": [1, 64]}, src)
    base = {"weight_bits": 2, "act_bits": 2, "calib": "digits", "weight_method": "none", "bias_correction": "off"}
    ptq = quantize_file(src, CompileSettings(), base, tmp_path / "p.pt", tmp_path)
    qat = quantize_file(src, CompileSettings(), {**base, "method": "qat", "qat_epochs": 3}, tmp_path / "q.pt",
                        tmp_path)
    assert [s["step"] for s in qat["steps"]] == ["calibrate", "gptq", "bias_correction", "qat"]
    assert len(qat["steps"][-1]["history"]) == 3
    assert qat["accuracy"]["quantized"] > ptq["accuracy"]["quantized"] + 0.03
    assert qat["accuracy"]["float"] == ptq["accuracy"]["float"] > 0.9


def test_with_quantize_puts_the_pass_first_and_renumbers():
    from hwkit.compress.quantize.run import opts_from_params, with_quantize
    from hwkit.flow import load_flow

    base = load_flow("finn-estimate")
    flow = with_quantize(base, {"bits": "w4a4", "calib": "digits"})
    assert flow.name == "finn-estimate+quantize" and flow.board_kinds == base.board_kinds
    assert [s.id for s in flow.steps[:3]] == ["01-quantize", "02-export_qonnx", "03-finn.qonnx_to_finn"]
    assert len(flow.steps) == len(base.steps) + 1 and flow.steps[-1].id == f"{len(flow.steps):02d}-finn.hw_codegen"
    assert opts_from_params({"bits": "w2a4", "calib": "x"}) == {"weight_bits": 2, "act_bits": 4, "calib": "x"}


@pytest.mark.parametrize("opts,flag", [
    ({"weight_bits": 0}, "--weight-bits"), ({"act_bits": "x"}, "--act-bits"), ({"qat_lr": float("nan")}, "--qat-lr"),
    ({"qat_lr": -1e-3}, "--qat-lr"), ({"seed": -1}, "--seed"), ({"bias_bits": 1}, "--bias-bits"),
    ({"qat_epochs": 2.5}, "--qat-epochs"), ({"weight_bits": True}, "--weight-bits"),
])
def test_flow_params_numbers_are_checked(opts, flag, tmp_path):
    """A flow file's quantize params are checked like the flags (0 bits once fell back to 8 silently)."""
    from hwkit.compress.quantize.run import quantize_file
    from hwkit.config import CompileSettings
    from hwkit.errors import InputError

    src = _float_ckpt(tmp_path / "m.pt")
    with pytest.raises(InputError, match=flag):
        quantize_file(src, CompileSettings(), {"calib": "digits", **opts}, tmp_path / "q.pt", tmp_path)
    assert not (tmp_path / "q.pt").exists()


def test_average_pool_windows_and_what_is_refused():
    from torch import nn

    from hwkit.compress.quantize.recipe import QuantRecipe, avg_pool_windows
    from hwkit.errors import UnsupportedLayerError

    def net(pool):
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), pool, nn.Flatten())

    assert avg_pool_windows(net(nn.AdaptiveAvgPool2d(1)), (1, 1, 6, 6)) == {"2": [6, 6, 6, 6]}
    assert avg_pool_windows(net(nn.AdaptiveAvgPool2d((2, 3))), (1, 1, 4, 6)) == {"2": [2, 2, 2, 2]}
    assert avg_pool_windows(net(nn.AvgPool2d(2)), (1, 1, 8, 8)) == {"2": [2, 2, 2, 2]}
    with pytest.raises(UnsupportedLayerError, match=r"2 \(AdaptiveAvgPool2d\).*5x5 input.*2x2"):
        avg_pool_windows(net(nn.AdaptiveAvgPool2d(2)), (1, 1, 5, 5))
    with pytest.raises(UnsupportedLayerError, match=r"2 \(AvgPool2d\).*padding"):
        avg_pool_windows(net(nn.AvgPool2d(3, padding=1)), (1, 1, 8, 8))
    recipe = QuantRecipe(avg_pools={"2": [6, 6, 6, 6]})
    assert QuantRecipe.from_json(recipe.to_json()) == recipe
