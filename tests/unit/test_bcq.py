"""ShiftAddLLM-style binary-coded quantisation (hwkit.compress.shiftadd.bcq) and its LUT-GEMV kernel."""

from __future__ import annotations

import importlib.util
import itertools

import pytest

torch = pytest.importorskip("torch")

from hwkit.compress.shiftadd import bcq  # noqa: E402
from hwkit.errors import InputError  # noqa: E402


def _is_apot(v, terms):
    """v is a sum of at most ``terms`` signed powers of two (greedy decomposition is exact)."""
    r = float(v)
    for _ in range(terms):
        if r == 0:
            return True
        e = round(torch.log2(torch.tensor(abs(r))).item())
        r -= (1 if r > 0 else -1) * 2.0 ** e
    return r == 0


def test_apot_rounds_in_log_domain_and_keeps_signs():
    a = torch.tensor([0.3, -0.7, 0.0, 1.0])
    assert bcq.apot(a, 1).tolist() == [0.25, -0.5, 0.0, 1.0]
    assert bcq.apot(a, 2).tolist() == [0.25 + 2.0 ** -4, -0.75, 0.0, 1.0]
    # 0.7 -> 0.5 leaves +0.2 -> +0.25; 0.3 -> 0.25 leaves 0.05 -> 2**-4 (0.0625): the residual term is negative below
    assert bcq.apot(torch.tensor([0.55]), 2).tolist() == [0.5 + 2.0 ** -4]


def test_nearest_codes_is_the_exact_minimiser():
    torch.manual_seed(0)
    w, alpha = torch.randn(4, 9), torch.rand(4, 3)
    b = bcq.nearest_codes(w, alpha)
    err = (w - (b * alpha[:, None, :]).sum(2)).abs()
    for g, i in itertools.product(range(4), range(9)):
        best = min(abs(float(w[g, i]) - sum(s * float(a) for s, a in zip(signs, alpha[g])))
                   for signs in itertools.product((-1, 1), repeat=3))
        assert float(err[g, i]) == pytest.approx(best, abs=1e-6)


def test_alternating_refinement_beats_greedy_and_more_bits_help():
    torch.manual_seed(0)
    w = torch.randn(16, 64).double()

    def err(q, rounds, terms=None):
        a, b = bcq.fit_bcq(w, q, rounds, terms)
        return float((w - (b * a[:, None, :]).sum(2)).norm() / w.norm())

    assert err(3, 10) < err(3, 0) - 0.01
    assert err(1, 10) > err(2, 10) > err(3, 10)
    a, _ = bcq.fit_bcq(w, 3, 5, 3)
    assert all(_is_apot(v, 3) for v in a.flatten())
    assert torch.all(a[:, :-1] >= 0)


def test_quantise_weight_layout_and_compensation():
    torch.manual_seed(0)
    n, k = 20, 30  # neither a multiple of group_rows (8) nor of 8 columns
    w = torch.randn(n, k) * 0.1
    mix = torch.randn(k, k)
    x = torch.randn(2000, k) @ mix  # strongly correlated inputs: compensation matters
    h = bcq.hessian(x)
    plain = bcq.quantise_weight(w, h, 2, bcq.BCQConfig(bits=2, compensate=False))
    comp = bcq.quantise_weight(w, h, 2, bcq.BCQConfig(bits=2, compensate=True))
    assert plain.codes.shape == (4, 20, 2) and plain.alpha.shape == (4, 3, 2)
    wq = plain.dequantise()
    assert wq.shape == (n, k)
    # every weight is sum_i alpha_i * (+-1) for its block's scales
    a0 = plain.alpha[0, 0]
    vals = {round(float(s0 * a0[0] + s1 * a0[1]), 6) for s0 in (-1, 1) for s1 in (-1, 1)}
    assert {round(float(v), 6) for v in wq[:8, :8].flatten()} <= vals

    def out_err(q):
        ref = x @ w.T
        return float((ref - x @ q.dequantise().T).norm() / ref.norm())

    assert out_err(comp) < 0.9 * out_err(plain)  # measured here: 0.273 vs 0.327
    wrel = float((w - wq).norm() / w.norm())
    assert wrel < 0.6


def test_bit_allocation_by_score():
    scores = {"a": 1.0, "b": 5.0, "c": 2.0, "d": 9.0, "e": 3.0}
    sizes = dict.fromkeys(scores, 100)
    assert bcq.allocate_bits(scores, sizes, (0.0, 0.8, 0.2)) == {"a": 2, "c": 2, "e": 2, "b": 2, "d": 3}
    assert set(bcq.allocate_bits(scores, sizes, (0.0, 0.6, 0.4)).values()) == {2, 3}
    with pytest.raises(InputError):
        bcq.BCQConfig(mix=(0.5, 0.6, 0.0))


def test_lut_kernel_matches_dense_reference():
    pytest.importorskip("numba")
    np = pytest.importorskip("numpy")
    torch.manual_seed(1)
    w = torch.randn(37, 45)
    qw = bcq.quantise_weight(w, None, 3, bcq.BCQConfig(bits=3, group_rows=5))
    x = torch.randn(4, 45)
    ref = (x.double() @ qw.dequantise().double().T).numpy()
    got = bcq.lut_gemm(x.numpy(), qw.codes.numpy(), qw.alpha.numpy(), 5)
    assert got.shape == (4, 37)
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()
    one = bcq.lut_gemm(x[0].numpy(), qw.codes.numpy(), qw.alpha.numpy(), 5)
    assert one.shape == (37,) and np.allclose(one, got[0])


def test_quantise_model_reports_each_layer_and_allocates():
    from hwkit.compress.amp.toy import float_mlp

    torch.manual_seed(0)
    model = float_mlp(24, (32, 16), 4).eval()
    x = torch.randn(256, 24)
    ref = model(x).detach()
    q, rep = bcq.quantise_model(model, x, bcq.BCQConfig(bits=0, rounds=5))
    assert [lay["name"] for lay in rep["layers"]] == ["0", "3", "6"]
    assert {lay["bits"] for lay in rep["layers"]} <= {2, 3} and 2 <= rep["avg_bits"] <= 3
    assert sum(bcq.is_bcq(m) for m in q.modules()) == 3
    for lay in rep["layers"]:
        assert 0 < lay["weight_rel_error"] < 1 and 0 < lay["output_rel_error"] < 1 and lay["score"] > 0
    out = q(x).detach()
    assert float((out - ref).norm() / ref.norm()) < 0.5
    if importlib.util.find_spec("numba") is not None:
        layer = q[0]
        got = layer.lut_forward(x[:3])
        assert torch.allclose(got, layer(x[:3]).detach(), rtol=1e-4, atol=1e-4)
