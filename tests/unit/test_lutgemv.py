"""The packed LUT-GEMV kernel (hwkit.compress.shiftadd.lutgemv) and the BCQ weight-memory accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwkit.compress.shiftadd import bcq, lutgemv
from hwkit.errors import InputError

KERNELS = [False] + ([True] if lutgemv.has_avx512() else [])


def _quantised(n, k, bits, g, seed=0):
    torch.manual_seed(seed)
    return bcq.quantise_weight(torch.randn(n, k), None, bits, bcq.BCQConfig(bits=bits, group_rows=g, rounds=2))


@pytest.mark.parametrize("vector", KERNELS)
@pytest.mark.parametrize(("n", "k", "bits", "g"), [(37, 45, 3, 8), (100, 200, 2, 16), (64, 64, 1, 8),
                                                    (33, 8, 4, 24), (130, 77, 3, 32)])
def test_kernel_matches_dense_reference(vector, n, k, bits, g):
    qw = _quantised(n, k, bits, g)
    p = lutgemv.pack(qw.codes.numpy(), qw.alpha.numpy(), g, k)
    assert p.codes.shape == (-(-n // 32), -(-k // 8), bits, 32) and p.alpha.shape[-1] == 4
    gemv = lutgemv.LUTGemv(p, vector=vector)
    assert gemv.kernel == ("avx512-vpermps" if vector else "numba-scalar")
    x = torch.randn(5, k)
    ref = (x.double() @ qw.dequantise().double().T).numpy()
    got = gemv.matmul(x.numpy())
    assert got.shape == (5, n)
    assert np.abs(got - ref).max() < 2e-6 * np.abs(ref).max()
    one = gemv(x[2].numpy())
    assert one.shape == (n,) and np.allclose(one, got[2], rtol=0, atol=0)
    # a wrong scale layout would show up here: zero the scales of rows 8..15 and only those rows go to 0
    if n >= 16:
        a = qw.alpha.clone()
        a[:, 1 % a.shape[1]] = 0
        p2 = lutgemv.pack(qw.codes.numpy(), a.numpy(), g, k)
        y2 = lutgemv.LUTGemv(p2, vector=vector)(x[0].numpy())
        ref2 = x[0].double() @ bcq.QuantisedLinear(qw.codes, a, k, g).dequantise().double().T
        assert np.abs(y2 - ref2.numpy()).max() < 2e-6 * max(float(ref2.abs().max()), 1e-6)


@pytest.mark.skipif(not lutgemv.has_avx512(), reason="no AVX-512 on this CPU")
def test_vector_and_scalar_kernels_agree_and_two_threads_split_rows(monkeypatch):
    monkeypatch.setattr(lutgemv, "MIN_SHARED_BYTES", 0)  # share even this small layer between threads
    qw = _quantised(256, 96, 3, 8, seed=3)
    p = lutgemv.pack(qw.codes.numpy(), qw.alpha.numpy(), 8, 96)
    x = np.random.default_rng(0).standard_normal(96).astype(np.float32)
    a = lutgemv.LUTGemv(p, vector=True)(x).copy()
    b = lutgemv.LUTGemv(p, vector=False)(x).copy()
    two = lutgemv.LUTGemv(p, vector=True, threads=2)
    assert two.threads == 2 and len(two._cuts) == 9
    c = two(x).copy()
    d = lutgemv.LUTGemv(p, vector=False, threads=2)(x).copy()
    assert np.allclose(a, b, rtol=1e-6, atol=1e-5) and np.array_equal(a, c) and np.array_equal(b, d)
    monkeypatch.setattr(lutgemv, "MIN_SHARED_BYTES", 2 ** 20)
    assert lutgemv.LUTGemv(p, threads=2).threads == 1  # small weights stay on the calling thread


def test_pack_rejects_group_sizes_the_vector_layout_cannot_hold():
    qw = _quantised(20, 16, 2, 5)
    with pytest.raises(InputError, match="group_rows"):
        lutgemv.pack(qw.codes.numpy(), qw.alpha.numpy(), 5, 16)


def test_bcq_layer_lut_forward_uses_the_packed_kernel_and_matches():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 48), nn.ReLU(), nn.Linear(48, 10)).eval()
    x = torch.randn(64, 40)
    q, rep = bcq.quantise_model(model, x, bcq.BCQConfig(bits=3, rounds=3, compensate=False))
    layer = q[0]
    got = layer.lut_forward(x[:4])
    assert torch.allclose(got, layer(x[:4]).detach(), rtol=1e-5, atol=1e-5)
    assert layer in bcq._GEMV
    import copy

    copy.deepcopy(q)  # the cached kernel lives outside the module
    # memory accounting in the report equals the bytes of the stored codes + scales
    for lay, mod in zip(rep["layers"], (q[0], q[2])):
        assert lay["weight_bytes"] == mod.codes.numel() + mod.alpha.numel() * 4
        assert lay["fp32_bytes"] == mod.weight.numel() * 4
    m = rep["memory"]
    assert m["weight_bytes"] == sum(lay["weight_bytes"] for lay in rep["layers"])
    assert m["reduction_vs_fp32"] == pytest.approx(1 - m["weight_bytes"] / m["fp32_bytes"])


def test_weight_memory_accounting():
    m3 = lutgemv.weight_memory(4096, 4096, 3)
    assert m3["code_bytes"] == 4096 * 512 * 3
    assert m3["scale_bytes"] == 512 * 512 * 3 * 4  # one fp32 scale per 8 cols x 8 rows x plane
    assert m3["bits_per_weight"] == pytest.approx(3 + 3 * 32 / 64)
    assert m3["reduction_vs_fp32"] == pytest.approx(1 - 4.5 / 32) and m3["reduction_vs_fp32"] >= 0.8
    m2 = lutgemv.weight_memory(4096, 4096, 2)
    assert m2["reduction_vs_fp32"] == pytest.approx(1 - 3 / 32)
    # rounding up: 10 columns -> 2 chunks, 9 rows in groups of 8 -> 2 groups
    m = lutgemv.weight_memory(9, 10, 1, group_rows=8, scale_bits=16)
    assert (m["code_bytes"], m["scale_bytes"]) == (2 * 9, 2 * 2 * 2)
    # larger scale groups cost less; the measured QuantisedLinear storage matches the formula
    assert lutgemv.weight_memory(64, 64, 3, 64)["total_bytes"] < lutgemv.weight_memory(64, 64, 3, 8)["total_bytes"]
    qw = _quantised(37, 45, 3, 8)
    mq = lutgemv.weight_memory(37, 45, 3, 8)
    assert mq["total_bytes"] == qw.codes.numel() + qw.alpha.numel() * 4
    with pytest.raises(InputError):
        lutgemv.weight_memory(0, 4, 3)
