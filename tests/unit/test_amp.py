"""AMP's criterion, Taylor scores and adaptive search on small models trained here on digits."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from hwkit.compress.amp import search as amp  # noqa: E402
from hwkit.compress.amp.blocks import find_mlp_blocks, masked, prune_blocks  # noqa: E402
from hwkit.compress.amp.toy import TinyTransformer, digits_splits, train_classifier  # noqa: E402

B = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return digits_splits(0)


@pytest.fixture(scope="module")
def vits(digits):
    """Three small ViTs trained on digits with different seeds (~5 s each on 1 thread)."""
    out = []
    for seed in range(3):
        torch.manual_seed(seed)
        out.append(train_classifier(TinyTransformer("vit", dim=32, hidden=64, depth=3), *digits["train"],
                                    epochs=15, seed=seed))
    return out


def test_entropy_keeps_self_similarity_and_is_fp32():
    z = torch.ones(8, 4, dtype=torch.float64)
    assert amp.entropy_loss(z, 15.0).dtype == torch.float32
    assert math.isclose(float(amp.entropy_loss(z, 15.0)), math.log(8), rel_tol=1e-6)  # identical rows: uniform
    e = torch.eye(8)
    # orthogonal rows: each row peaks on its own (diagonal) entry; without the diagonal this would be log(7)
    p_self = math.exp(2) / (math.exp(2) + 7)
    ref = -(p_self * math.log(p_self) + (1 - p_self) * math.log((1 - p_self) / 7))
    assert math.isclose(float(amp.entropy_loss(e, 2.0)), ref, rel_tol=1e-5)


def test_taylor_score_is_abs_of_token_sum_averaged(digits):
    torch.manual_seed(0)
    m = TinyTransformer("vit", dim=16, hidden=24, depth=1).eval()
    x = digits["train"][0][:2 * B]
    blocks = find_mlp_blocks(m, x[:8])
    cfg = amp.AmpConfig(batch_size=B)
    emb = amp._Embedding(m, "head", "cls")
    got = amp.taylor_scores(m, blocks, amp.batches(x, None, B), emb, cfg)[0]
    ref = torch.zeros(24)
    for i in range(2):  # by hand: retain the hidden activation, backprop the entropy
        cap: dict = {}
        h = m.blocks[0].mlp.fc2.register_forward_pre_hook(lambda _m, inp, c=cap: c.setdefault("a", inp[0]))
        out_e = amp.entropy_loss(m.norm(_trunk(m, x[i * B:(i + 1) * B]))[:, 0], 15.0)
        h.remove()
        (g,) = torch.autograd.grad(out_e, cap["a"])
        ref += (cap["a"] * g).sum(dim=1).abs().mean(dim=0).detach()
    emb.close()
    assert torch.allclose(got, ref / 2, rtol=1e-4, atol=1e-9)
    assert all(p.requires_grad for p in m.parameters()) and all(p.grad is None for p in m.parameters())


def _trunk(m, x):
    b = x.shape[0]
    t = x.reshape(b, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(b, -1, 4) / 16.0
    z = torch.cat([m.cls_token.expand(b, -1, -1), m.patch_embed(t)], dim=1) + m.pos_embed
    for blk in m.blocks:
        z = blk(z)
    return z


def test_search_gives_non_uniform_widths_that_match_the_masked_model(digits, vits):
    m = vits[0]
    calib, val = amp.batches(*digits["train"], B), amp.batches(*digits["val"], B)
    cfg = amp.AmpConfig(batch_size=B, delta_e=1e-2)
    r = amp.amp_search(m, calib, val, cfg)
    widths = r.widths_after
    assert len(set(widths)) > 1 and min(widths) < 64, widths
    # last block first, 6 probes per block at most, starting at H/2, and the rule holds
    assert [s.block for s in r.trace][0] == r.blocks[-1].name
    assert r.trace[0].width == 32
    assert all(s.accepted == (s.rise <= cfg.delta_e) for s in r.trace)
    assert all(sum(s.block == b.name for s in r.trace) <= 6 for b in r.blocks)
    x = digits["test"][0]
    with torch.no_grad(), masked(m, r.blocks, r.keep):
        ref = m(x)
    with torch.no_grad():
        assert torch.allclose(r.model(x), ref, rtol=0, atol=1e-6)
    assert amp.count_params(r.model) < amp.count_params(m)
    assert amp.count_flops(r.model, x) < amp.count_flops(m, x)
    # the input model is untouched
    assert all(b.hidden == 64 for b in find_mlp_blocks(m, x[:8]))


def test_entropy_scores_beat_random_and_magnitude_at_equal_budget(digits, vits):
    res = {"amp": [], "random": [], "magnitude": []}
    calib = amp.batches(*digits["train"], B)
    for seed, m in enumerate(vits):
        blocks = find_mlp_blocks(m, digits["val"][0][:8])
        emb = amp._Embedding(m, "head", "cls")
        scores = amp.taylor_scores(m, blocks, calib, emb, amp.AmpConfig(batch_size=B))
        emb.close()
        k = 16  # keep 25 % of every block
        mods = dict(m.named_modules())
        mag = [mods[b.fc1[0]].weight.norm(dim=1) * mods[b.fc2].weight.norm(dim=0) for b in blocks]
        g = torch.Generator().manual_seed(seed)
        for name, keep in (("amp", [s.argsort(descending=True)[:k] for s in scores]),
                           ("random", [torch.randperm(64, generator=g)[:k] for _ in blocks]),
                           ("magnitude", [s.argsort(descending=True)[:k] for s in mag])):
            res[name].append(amp.accuracy(prune_blocks(m, blocks, keep), *digits["test"]))
    mean = {k: sum(v) / len(v) for k, v in res.items()}
    assert mean["amp"] > mean["random"] and mean["amp"] > mean["magnitude"], res


def test_ce_criterion_needs_labels_and_runs(digits, vits):
    from hwkit.errors import InputError

    x, y = digits["val"]
    with pytest.raises(InputError, match="labels"):
        amp.amp_search(vits[0], amp.batches(x, None, B), amp.batches(x, None, B), amp.AmpConfig(criterion="ce"))
    r = amp.amp_search(vits[0], amp.batches(*digits["train"], B), amp.batches(x, y, B),
                       amp.AmpConfig(criterion="ce", batch_size=B, delta_e=0.05, steps=3))
    assert len(r.trace) <= 9 and r.loss_before < 1.0


def test_distillation_recovers_accuracy_and_stops_early(digits, vits):
    import copy

    m = vits[1]
    r = amp.amp_search(m, amp.batches(*digits["train"], B), amp.batches(*digits["val"], B),
                       amp.AmpConfig(batch_size=B, delta_e=3e-2))
    student = copy.deepcopy(r.model)
    seen = []
    h = amp.distill(student, m, digits["train"][0][:512], digits["val"][0], "head",
                    amp.DistillConfig(epochs=6, patience=2, lr=2e-3), lambda e, tr, va: seen.append(e))
    assert seen == list(range(1, len(seen) + 1)) and h["history"][0]["epoch"] == 0
    assert h["best_val_mse"] < h["history"][0]["val_mse"]
    acc = [amp.accuracy(mm, *digits["test"]) for mm in (m, r.model, student)]
    assert acc[2] >= acc[1], acc
