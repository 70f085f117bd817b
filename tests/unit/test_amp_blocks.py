"""AMP's structural MLP finder and physical slicing, on small models mimicking each family."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hwkit.compress.amp.blocks import Slicer, find_mlp_blocks, masked, prune_blocks  # noqa: E402
from hwkit.compress.amp.toy import FAMILIES, TinyTransformer, float_mlp  # noqa: E402

EXPECTED = {
    "vit": ("mlp.fc1",), "bert": ("intermediate.dense",), "clip": ("mlp.c_fc",), "swiglu": ("mlp.w12",),
    "llama": ("mlp.gate_proj", "mlp.up_proj"), "eva-subln": ("mlp.fc1",),
}
FC2 = {"vit": "mlp.fc2", "bert": "output.dense", "clip": "mlp.c_proj", "swiglu": "mlp.w3", "llama": "mlp.down_proj",
       "eva-subln": "mlp.fc2"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _x(n: int = 6, seed: int = 0):
    return torch.rand(n, 64, generator=torch.Generator().manual_seed(seed)) * 16


@pytest.mark.parametrize("family", FAMILIES)
def test_finds_exactly_the_mlps_of_each_family(family):
    torch.manual_seed(0)
    m = TinyTransformer(family, dim=16, hidden=24, depth=2, heads=2).eval()
    blocks = find_mlp_blocks(m, _x())
    # attention (q/k/v -> proj), the patch embedding, the residual stream and the head are not MLPs
    assert [b.fc1 for b in blocks] == [tuple(f"blocks.{i}.{n}" for n in EXPECTED[family]) for i in range(2)]
    assert [b.fc2 for b in blocks] == [f"blocks.{i}.{FC2[family]}" for i in range(2)]
    assert all(b.hidden == 24 for b in blocks)
    assert all(b.fused_glu == (family == "swiglu") for b in blocks)
    assert [bool(b.norms) for b in blocks] == [family == "eva-subln"] * 2


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "eva-subln"])
def test_pruned_model_matches_masked_model(family):
    torch.manual_seed(1)
    m = TinyTransformer(family, dim=16, hidden=24, depth=2, heads=2).eval()
    x = _x(8, 1)
    blocks = find_mlp_blocks(m, x)
    g = torch.Generator().manual_seed(0)
    keep = [torch.randperm(24, generator=g)[:k] for k in (5, 17)]
    p = prune_blocks(m, blocks, keep)
    assert [dict(p.named_modules())[b.fc2].in_features for b in blocks] == [5, 17]
    with torch.no_grad(), masked(m, blocks, keep):
        ref = m(x)
    with torch.no_grad():
        out = p(x)
    assert torch.allclose(out, ref, rtol=0, atol=1e-6)
    assert sum(t.numel() for t in p.parameters()) < sum(t.numel() for t in m.parameters())


def test_hidden_norm_is_sliced_with_the_block():
    m = TinyTransformer("eva-subln", dim=16, hidden=24, depth=1).eval()
    blocks = find_mlp_blocks(m, _x())
    p = prune_blocks(m, blocks, [torch.arange(7)])
    ln = p.blocks[0].mlp.ffn_ln
    assert ln.weight.shape == (7,) and ln.normalized_shape == (7,)
    assert p(_x()).shape == (6, 10)


def test_plain_mlp_stack_slicing_is_order_independent():
    torch.manual_seed(0)
    m = float_mlp(64, (20, 12), 10)
    m.train()
    m(_x(64))  # give BatchNorm non-trivial statistics
    m.eval()
    blocks = find_mlp_blocks(m, _x())
    assert [(b.fc1, b.fc2, b.norms) for b in blocks] == [(("0",), "3", ("1",)), (("3",), "6", ("4",))]
    keep = [torch.tensor([3, 0, 7, 19]), torch.tensor([11, 2])]
    p1 = prune_blocks(m, blocks, keep)
    import copy

    p2 = copy.deepcopy(m)
    s = Slicer(p2, blocks)
    s.set(1, keep[1])
    s.set(0, keep[0])
    for (k1, v1), (k2, v2) in zip(p1.state_dict().items(), p2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert p1[3].weight.shape == (2, 4) and p1[1].running_mean.shape == (4,)
    with torch.no_grad(), masked(m, blocks, keep):
        ref = m(_x())
    assert torch.allclose(p1(_x()), ref, rtol=0, atol=1e-6)


def test_brevitas_qmlp_blocks_are_found_and_rebuild():
    from hwkit.models.mlp import build_qmlp
    from tests.conftest import make_qmlp

    q = make_qmlp(16, (16, 8), 4)
    x = torch.randint(0, 256, (8, 16)).float()
    blocks = find_mlp_blocks(q, x)
    assert [(b.fc1, b.fc2) for b in blocks] == [(("0",), "3"), (("3",), "6")]
    p = prune_blocks(q, blocks, [torch.arange(0, 16, 2), torch.arange(5)])
    rebuilt = build_qmlp(16, [8, 5], 4, weight_bits=2, act_bits=2)
    rebuilt.load_state_dict(p.state_dict(), strict=True)
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), p(x))
