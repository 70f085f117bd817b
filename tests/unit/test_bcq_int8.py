"""BCQ layers on the int8 GEMM (PyTorch's x86 quantized engine): which forward runs when, accuracy against the exact
dense BCQ forward, calibration ranges recorded, saved in the codes and restored, and hwkit's own checks kept exact."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hwkit.compress.shiftadd import bcq  # noqa: E402
from hwkit.errors import InputError  # noqa: E402

INT8 = torch.backends.quantized.engine in ("x86", "fbgemm", "onednn")
needs_int8 = pytest.mark.skipif(not INT8, reason="no x86 quantized engine (fbgemm/onednn) in this PyTorch")


@pytest.fixture(autouse=True)
def one_thread_auto(monkeypatch):
    monkeypatch.delenv("HWKIT_BCQ_LUT", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    old = bcq.set_lut_mode("auto")
    yield
    bcq.set_lut_mode(old)
    torch.set_num_threads(threads)


def _inputs(rows, k, seed=0):
    """Activations with a few outlier columns (as in transformer Linear inputs)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g)
    x[:, :: max(k // 6, 1)] *= 12.0
    return x


def _layer(n=384, k=384, seed=0, calib_rows=256):
    torch.manual_seed(seed)
    w = torch.randn(n, k) / k ** 0.5
    x = _inputs(calib_rows, k, seed + 1)
    qw = bcq.quantise_weight(w, None, 3, bcq.BCQConfig(bits=3, rounds=0))
    m = bcq.BCQLinear(qw, torch.randn(n) * 0.1, 3)
    m.set_act_range(x.abs().amax(dim=0))
    return m


@pytest.fixture(scope="module")
def layer():
    return _layer()


def _unranged(layer):
    import copy

    m = copy.deepcopy(layer)
    m.set_act_range(None)
    return m


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@needs_int8
def test_int8_forward_matches_dense_bcq_within_the_quantisation_tolerance(layer):
    x = _inputs(25, 384, seed=7)  # held out: not the calibration rows
    with torch.no_grad():
        dense = torch.nn.functional.linear(x, layer.weight, layer.bias)
        got = layer.int8_forward(x)
        got3 = layer.int8_forward(x.reshape(5, 5, 384))
    # 7-bit input (one scale per call) x int8 weight (one scale per row): a few per cent, far below BCQ's own error
    err = _rel(got, dense)
    assert 1e-5 < err < 0.04
    assert got3.shape == (5, 5, 384) and torch.allclose(got3.reshape(25, 384), got, atol=1e-5)
    one = layer.int8_forward(x[3])  # one vector (its own input scale, so not bit-equal to row 3 of the batch)
    assert one.shape == (384,) and _rel(one, dense[3]) < 0.04
    assert layer.int8_forward(x[:0]).shape == (0, 384)
    xt = torch.randn(384, 25).T  # a non-contiguous view
    assert torch.allclose(layer.int8_forward(xt), layer.int8_forward(xt.contiguous()))
    # the SmoothQuant input scaling is what keeps the outlier columns from swamping the 7-bit input steps
    plain = _unranged(layer)
    bcq.set_lut_mode("int8")
    with torch.no_grad():
        unscaled = plain(x)
    assert plain.int8_calls == 1
    assert err < _rel(unscaled, dense)


@needs_int8
def test_auto_picks_int8_only_where_it_was_measured_faster(layer, monkeypatch):
    monkeypatch.setitem(bcq._LUT, "cap", "AVX2")
    monkeypatch.setitem(bcq._LUT, "avx512", False)
    x = torch.randn(25, 384)
    assert bcq.forward_path(layer, x) == "int8"
    assert bcq.forward_path(layer, x.reshape(1, 25, 384)) == "int8"
    assert bcq.forward_path(layer, torch.randn(4, 384)) == "dense"  # too few rows
    assert bcq.forward_path(layer, torch.randn(bcq.INT8_ROWS[1] + 1, 384)) == "dense"  # more than measured
    assert bcq.forward_path(layer, x.double()) == "dense"
    assert bcq.forward_path(layer, x.requires_grad_()) == "dense"  # autograd: dense, gradients flow
    small = _layer(n=64, k=64)
    assert bcq.forward_path(small, torch.randn(25, 64)) == "dense"  # below INT8_MIN_WEIGHTS
    unranged = _unranged(layer)
    assert bcq.forward_path(unranged, torch.randn(25, 384)) == "dense"  # no calibration range: no int8 in auto
    with bcq.forward_mode("off"):
        assert bcq.forward_path(layer, torch.randn(25, 384)) == "dense"
    monkeypatch.setenv("HWKIT_BCQ_LUT", "off")
    assert bcq.forward_path(layer, torch.randn(25, 384)) == "dense"
    with bcq.forward_mode("int8"):  # the context wins over the environment
        assert bcq.forward_path(unranged, torch.randn(3, 384)) == "int8"
    monkeypatch.delenv("HWKIT_BCQ_LUT")
    monkeypatch.setitem(bcq._LUT, "cap", "AVX512")  # not measured there: AVX-512 keeps the LUT kernel / dense
    monkeypatch.setitem(bcq._LUT, "avx512", True)
    assert bcq.forward_path(layer, torch.randn(25, 384)) == "lut"
    assert bcq.forward_path(layer, torch.randn(100, 384)) == "dense"


@needs_int8
def test_forward_runs_the_int8_kernel_and_counts_it(layer):
    x = torch.randn(25, 384)
    before = layer.int8_calls
    with bcq.forward_mode("int8"), torch.no_grad():
        y = layer(x)
    assert layer.int8_calls == before + 1
    with bcq.forward_mode("off"), torch.no_grad():
        d = layer(x)
    assert layer.int8_calls == before + 1 and y.shape == d.shape
    with bcq.forward_mode("int8"):
        layer(torch.randn(2, 384, requires_grad=True)).sum().backward()  # autograd input: dense
    assert layer.int8_calls == before + 1


def test_set_act_range_checks_and_forward_mode_restores(layer):
    with pytest.raises(InputError, match="384 finite"):
        layer.set_act_range(torch.ones(10))
    with pytest.raises(InputError, match="finite"):
        layer.set_act_range(torch.full((384,), float("nan")))
    with pytest.raises(InputError, match="mode"), bcq.forward_mode("fast"):
        pass
    with pytest.raises(RuntimeError), bcq.forward_mode("int8"):
        assert bcq.lut_mode() == "int8"
        raise RuntimeError
    assert bcq.lut_mode() == "auto"


def test_quantise_model_records_ranges_and_codes_keep_them(tmp_path):
    from hwkit.compress.amp.toy import float_mlp
    from hwkit.compress.shiftadd.run import codes_of

    torch.manual_seed(0)
    model = float_mlp(24, (32, 16), 4).eval()
    x = torch.randn(128, 24) * 3
    ref = model[0](x).detach()
    q, _rep = bcq.quantise_model(model, x, bcq.BCQConfig(bits=3, rounds=2))
    assert torch.equal(q[0].act_absmax, x.abs().amax(dim=0))  # the first layer sees the calibration input itself
    assert all(m.act_absmax is not None and m.act_absmax.shape == (m.in_features,)
               for m in q.modules() if bcq.is_bcq(m))
    codes = codes_of(q)
    torch.save(codes, tmp_path / "c.pt")
    back = float_mlp(24, (32, 16), 4).eval()
    back.load_state_dict(model.state_dict(), strict=False)
    bcq.attach_codes(back, torch.load(tmp_path / "c.pt", weights_only=True))
    assert torch.equal(back[0].act_absmax, q[0].act_absmax) and torch.equal(back[3].act_absmax, q[3].act_absmax)
    bad = {k: dict(v) for k, v in codes.items()}
    bad["0"]["act_absmax"] = torch.ones(5)
    with pytest.raises(InputError, match="'0'.*24 finite"):
        bcq.attach_codes(float_mlp(24, (32, 16), 4), bad)
    assert ref.shape == (128, 32)


def test_observe_ranges_records_the_largest_input_per_column():
    from hwkit.compress.amp.toy import float_mlp

    torch.manual_seed(0)
    model = float_mlp(24, (32, 16), 4).eval()
    q, _ = bcq.quantise_model(model, torch.randn(64, 24), bcq.BCQConfig(bits=2, rounds=0))
    for m in q.modules():
        if bcq.is_bcq(m):
            m.set_act_range(None)
    a, b = torch.randn(5, 24), torch.randn(7, 24) * 4
    assert bcq.observe_ranges(q, [a, (b,)]) == 3
    assert torch.equal(q[0].act_absmax, torch.maximum(a.abs().amax(0), b.abs().amax(0)))
    assert all(m.act_absmax is not None for m in q.modules() if bcq.is_bcq(m))


@needs_int8
def test_auto_runs_int8_in_every_layer_of_a_real_bert_and_keeps_the_embedding(tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="transformers is a dev dependency (requirements-dev.txt)")
    from hwkit.compress.amp.search import pool_tokens
    from hwkit.data import tokens as tok
    from hwkit.load import load_hf_dir
    from tests.unit import tiny_bert

    hf = tiny_bert.save_dir(tmp_path / "tiny", hidden_size=64, intermediate_size=128)
    m = load_hf_dir(hf).module
    (tmp_path / "c.txt").write_text("\n".join(tiny_bert.sentences(40, seed=3)) + "\n")
    (tmp_path / "h.txt").write_text("\n".join(tiny_bert.sentences(12, seed=9)) + "\n")
    calib, held = tok.load_text(tmp_path / "c.txt", hf, 32), tok.load_text(tmp_path / "h.txt", hf, 32)
    bcq.quantise_model(m, calib, bcq.BCQConfig(bits=3, rounds=2), ("pooler.dense",))
    layers = [x for x in m.modules() if bcq.is_bcq(x)]
    assert len(layers) == 12 and all(x.act_absmax is not None for x in layers)
    monkeypatch.setattr(bcq, "INT8_MIN_WEIGHTS", 64 * 64)  # the tiny layers stand in for MiniLM's
    monkeypatch.setitem(bcq._LUT, "cap", "AVX2")
    monkeypatch.setitem(bcq._LUT, "avx512", False)
    b = held.batch()
    assert int(b["attention_mask"].sum()) >= bcq.INT8_ROWS[0]
    with torch.no_grad():
        with bcq.forward_mode("off"):
            dense = pool_tokens(m(**b).last_hidden_state, b["attention_mask"], "mean")
        assert sum(x.int8_calls for x in layers) == 0
        fast = pool_tokens(m(**b).last_hidden_state, b["attention_mask"], "mean")  # auto
    assert all(x.int8_calls == 1 for x in layers)  # every BCQ layer ran the int8 GEMM
    cos = torch.nn.functional.cosine_similarity(fast, dense)
    assert float(cos.min()) > 0.99 and not torch.equal(fast, dense)


@needs_int8
def test_tracing_export_and_flop_counting_see_the_dense_weight(layer, tmp_path):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(25, 384)
    before = layer.int8_calls
    with bcq.forward_mode("int8"), torch.no_grad():
        traced = torch.jit.trace(layer, x, check_trace=False)  # (the check re-runs it eagerly)
        with FlopCounterMode(display=False) as fc:
            layer(x)
        torch.onnx.export(layer, (x,), str(tmp_path / "l.onnx"), dynamo=False)
    assert layer.int8_calls == before  # none of them ran the int8 GEMM
    assert fc.get_total_flops() == 2 * 25 * 384 * 384
    with torch.no_grad():
        assert torch.allclose(traced(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)
    assert (tmp_path / "l.onnx").stat().st_size > 384 * 384 * 4  # the dense fp32 weight was exported
