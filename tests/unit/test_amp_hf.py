"""AMP pruning and ShiftAdd BCQ on a small real Hugging Face encoder (BertConfig, no download): token sets with
masks and integer inputs, Hugging Face directories and --arch builders through the CLI, the traced block finder
against the per-candidate reference, --remove, embedding choice, LUT forward of BCQ layers, pruned reload."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="transformers is a dev dependency (requirements-dev.txt)")

from hwkit.cli import main  # noqa: E402
from hwkit.compress.amp import search as amp  # noqa: E402
from hwkit.compress.amp.blocks import find_mlp_blocks, find_mlp_blocks_reference, masked  # noqa: E402
from hwkit.data import tokens as tok  # noqa: E402
from hwkit.load import load_hf_dir  # noqa: E402
from tests.unit import tiny_bert  # noqa: E402

ARCH = "tests.unit.tiny_bert:build"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return tiny_bert.save_dir(tmp_path_factory.mktemp("hf") / "tiny")


@pytest.fixture(scope="module")
def calib_txt(tmp_path_factory):
    p = tmp_path_factory.mktemp("calib") / "sentences.txt"
    p.write_text("\n".join(tiny_bert.sentences(80)) + "\n")
    return p


class IdsOnly(torch.nn.Module):
    """A model whose forward takes input_ids and attention_mask only."""

    def forward(self, input_ids, attention_mask):
        return input_ids


def _npz(path, hf_dir, n=60):
    t = tok.load_text(_write(path.with_suffix(".txt"), tiny_bert.sentences(n, seed=1)), hf_dir, 32)
    np.savez(path, **t.arrays)
    return path


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_token_sets_pad_dynamically_and_keep_only_model_inputs(tmp_path, hf_dir):
    npz = _npz(tmp_path / "ids.npz", hf_dir)
    t, labels = tok.load_tokens(str(npz))
    assert labels is None and {"input_ids", "attention_mask", "token_type_ids"} <= set(t.names)
    short = np.argsort(t.lengths)[:4]
    b = t[short].batch()
    assert b["input_ids"].dtype == torch.int64 and b["input_ids"].shape == (4, int(t.lengths[short].max()))
    assert b["input_ids"].shape[1] < t.arrays["input_ids"].shape[1]  # padded to the subset, not the file
    assert b["attention_mask"].sum(1).tolist() == t.lengths[short].tolist()
    # a model without token_type_ids gets only what its forward takes
    assert set(tok.fit_to_model(t, IdsOnly()).names) == {"input_ids", "attention_mask"}
    bad = tmp_path / "bad.npz"
    np.savez(bad, input_ids=np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(Exception, match="integers"):
        tok.load_tokens(str(bad))


def test_traced_block_finder_equals_the_reference_on_bert(hf_dir):
    m = load_hf_dir(hf_dir).module
    t = tok.load_text(_write(hf_dir.parent / "s.txt", tiny_bert.sentences(4)), hf_dir, 32)
    x = t.batch()
    fast, ref = find_mlp_blocks(m, x), find_mlp_blocks_reference(m, x)
    assert fast == ref
    assert [(b.fc1, b.fc2) for b in fast] == [((f"encoder.layer.{i}.intermediate.dense",),
                                               f"encoder.layer.{i}.output.dense") for i in range(2)]


def test_default_head_embedding_warns_on_pooler_and_on_pruned_block(hf_dir):
    x = tok.load_text(_write(hf_dir.parent / "w.txt", tiny_bert.sentences(4)), hf_dir, 32).batch()
    for model, expect in ((tiny_bert.build(), "pooler"),
                          (transformers.BertModel(tiny_bert.config(), add_pooling_layer=False).eval(), "being pruned")):
        blocks = find_mlp_blocks(model, x)
        said: list[str] = []
        emb = amp.make_embedding(model, x, amp.AmpConfig(embed="head"), blocks, said.append)
        emb.close()
        assert len(said) == 1 and expect in said[0]
        said.clear()
        emb = amp.make_embedding(model, x, amp.AmpConfig(), blocks, said.append)  # auto: pooled last hidden state
        assert said == [] and "mean-pooled last hidden state" in emb.describe
        emb.close()


def test_prune_hf_dir_removes_the_target_share_and_reloads(tmp_path, hf_dir, calib_txt):
    out = tmp_path / "pruned"
    rc = main(["prune", str(hf_dir), "--calib", str(calib_txt), "--remove", "40%", "--batch-size", "16",
               "--reconstruct", "off", "--out", str(out), "--quiet"])  # off: the pruned model equals the masked one
    assert rc == 0
    rep = json.loads((out / "prune_report.json").read_text())
    assert 0.40 <= rep["mlp_params_removed"] <= 0.45
    assert rep["remove"]["target"] == 0.40 and "mean-pooled" in rep["embedding"]
    assert rep["agreement"]["after_prune"]["samples"] == 16
    widths = [b["width_after"] for b in rep["blocks"]]
    # hwkit reloads it; its outputs equal the original model with the pruned neurons masked
    back = load_hf_dir(out).module
    assert [back.encoder.layer[i].intermediate.dense.out_features for i in range(2)] == widths
    orig = load_hf_dir(hf_dir).module
    x = tok.load_text(calib_txt, hf_dir, 32)[:8].batch()
    blocks = find_mlp_blocks(orig, x)
    with torch.no_grad(), masked(orig, blocks, [torch.tensor(b["kept"]) for b in rep["blocks"]]):
        ref = orig(**x).last_hidden_state
    with torch.no_grad():
        got = back(**x).last_hidden_state
    assert torch.allclose(got, ref, atol=1e-5)
    # the documented snippet (docs/amp.md) rebuilds it with transformers alone
    from safetensors.torch import load_file

    cfg = transformers.AutoConfig.from_pretrained(str(out))
    model = transformers.AutoModel.from_config(cfg)
    for name, (n_out, n_in) in cfg.hwkit_pruned["linear_shapes"].items():
        parent, _, child = name.rpartition(".")
        old = model.get_submodule(name)
        setattr(model.get_submodule(parent), child, torch.nn.Linear(n_in, n_out, bias=old.bias is not None))
    model.load_state_dict(load_file(str(out / "model.safetensors")), strict=False)
    with torch.no_grad():
        assert torch.allclose(model.eval()(**x).last_hidden_state, got, atol=1e-6)
    assert (out / "vocab.txt").is_file() and (out / "tokenizer_config.json").is_file()


def test_prune_arch_builder_with_npz_and_relative_delta_e(tmp_path, hf_dir):
    sd = tmp_path / "bert.pt"
    torch.save(tiny_bert.build().state_dict(), sd)
    npz = _npz(tmp_path / "ids.npz", hf_dir)
    out = tmp_path / "out" / "pruned.pt"
    rc = main(["prune", str(sd), "--arch", ARCH, "--calib", str(npz), "--delta-e-rel", "0.05", "--batch-size", "12",
               "--distill-epochs", "2", "--distill-batch", "8", "--reconstruct", "off", "--out", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads((out.parent / "prune_report.json").read_text())
    e0 = rep["loss"]["before"]
    assert rep["delta_e_used"] == pytest.approx(0.05 * e0)
    assert all(s["rise"] <= 0.05 * e0 + 1e-12 for s in rep["trace"] if s["accepted"])
    d = rep["distill"]
    assert d["history"][0]["val_1_minus_cos"] > d["best_val_1_minus_cos"]  # recovery lowered the held-out loss
    assert set(rep["agreement"]) == {"after_prune", "after_distill"}
    widths = json.loads(out.with_suffix(".widths.json").read_text())["widths"]
    assert sorted(widths) == ["encoder.layer.0", "encoder.layer.1"]


def test_prune_npy_of_token_ids_feeds_integer_input_ids(tmp_path):
    ids = tmp_path / "ids.npy"
    np.save(ids, np.random.default_rng(0).integers(5, 40, size=(30, 7)))
    sd = tmp_path / "bert.pt"
    torch.save(tiny_bert.build().state_dict(), sd)
    rc = main(["prune", str(sd), "--arch", ARCH, "--calib", str(ids), "--batch-size", "6", "--out",
               str(tmp_path / "p.pt"), "--quiet"])
    assert rc == 0
    rep = json.loads((tmp_path / "prune_report.json").read_text())
    assert "token ids" in rep["data"] and "mean-pooled" in rep["embedding"]


def _bcq_model(hf_dir, tmp_path):
    from hwkit.compress.shiftadd import bcq

    m = load_hf_dir(hf_dir).module
    t = tok.load_text(_write(tmp_path / "c.txt", tiny_bert.sentences(24, seed=3)), hf_dir, 32)
    bcq.quantise_model(m, t, bcq.BCQConfig(bits=3, rounds=2), ("pooler.dense",))
    return m, t


def test_bcq_layers_run_the_lut_kernel_and_match_dense(tmp_path, hf_dir):
    from hwkit.compress.shiftadd import bcq

    m, t = _bcq_model(hf_dir, tmp_path)
    layers = [x for x in m.modules() if bcq.is_bcq(x)]
    assert len(layers) == 12
    x = t[:3].batch()
    old = bcq.set_lut_mode("off")
    try:
        with torch.no_grad():
            dense = m(**x).last_hidden_state
        assert sum(x.lut_calls for x in layers) == 0
        bcq.set_lut_mode("on")
        with torch.no_grad():
            lut = m(**x).last_hidden_state
        assert all(x.lut_calls == 1 for x in layers)  # every BCQ layer ran the kernel once
        assert torch.allclose(lut, dense, atol=1e-4)
        m(**x).last_hidden_state.sum().backward()  # with autograd: the dense fallback, gradients flow
        assert all(x.lut_calls == 1 for x in layers)
        big = {k: v.repeat(30, 1) for k, v in x.items()}  # more rows than LUT_MAX_ROWS: dense
        with torch.no_grad():
            m(**big)
        assert all(x.lut_calls == 1 for x in layers)
    finally:
        bcq.set_lut_mode(old)


def test_shiftadd_bcq_hf_dir_and_arch(tmp_path, hf_dir, calib_txt):
    out = tmp_path / "bcq"
    rc = main(["shiftadd", str(hf_dir), "--mode", "bcq", "--rounds", "2", "--calib", str(calib_txt),
               "--out", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads((out / "shiftadd_report.json").read_text())
    assert rep["agreement"]["cosine_mean"] > 0.9 and len(rep["layers"]) == 12  # pooler left dense
    back = transformers.AutoModel.from_pretrained(str(out), local_files_only=True)
    assert back.encoder.layer[0].intermediate.dense.weight.shape == (64, 32)
    codes = torch.load(out / "shiftadd.codes.pt", weights_only=True)
    assert "encoder.layer.1.output.dense" in codes and "pooler.dense" not in codes
    # the saved dense model and its codes give back BCQ layers that run the kernel with the same outputs
    from hwkit.compress.shiftadd import bcq

    x = tok.load_text(calib_txt, hf_dir, 32)[:2].batch()
    with torch.no_grad():
        dense = back(**x).last_hidden_state
    bcq.attach_codes(back, codes)
    old = bcq.set_lut_mode("on")
    try:
        with torch.no_grad():
            lut = back(**x).last_hidden_state
    finally:
        bcq.set_lut_mode(old)
    layers = [m for m in back.modules() if bcq.is_bcq(m)]
    assert len(layers) == 12 and all(m.lut_calls == 1 for m in layers)
    assert torch.allclose(lut, dense, atol=1e-4)
    sd = tmp_path / "bert.pt"
    torch.save(tiny_bert.build().state_dict(), sd)
    npz = _npz(tmp_path / "ids.npz", hf_dir)
    rc = main(["shiftadd", str(sd), "--arch", ARCH, "--mode", "bcq", "--rounds", "2", "--calib", str(npz),
               "--out", str(tmp_path / "arch" / "bcq.pt"), "--quiet"])
    assert rc == 0
    assert (tmp_path / "arch" / "bcq.codes.pt").is_file()


def test_prefix_cache_replays_the_unchanged_layers_exactly(hf_dir, calib_txt):
    from hwkit.compress.amp.blocks import Slicer

    m = load_hf_dir(hf_dir).module
    t = tok.load_text(calib_txt, hf_dir, 32)
    val = amp.batches(t[:24], None, 8)
    cfg = amp.AmpConfig(batch_size=8)
    blocks = find_mlp_blocks(m, val[0][0])
    emb = amp.make_embedding(m, val[0][0], cfg, blocks, print)
    sl = Slicer(m, blocks)
    cache = amp._PrefixCache(m, val[0][0], blocks, sl)
    assert cache.prefix[0][0] == "embeddings" and "encoder.layer.0" in cache.prefix[1]
    assert cache.fc1 == [list(b.fc1) for b in blocks]
    assert cache.start(val, emb, cfg) == amp.val_loss(m, emb, val, cfg)
    for li, width in ((1, 20), (1, 7), (0, 30)):  # later block pruned while an earlier one is probed: as the search
        sl.set(li, torch.arange(width))
        assert cache.loss(li, val, emb, cfg) == pytest.approx(amp.val_loss(m, emb, val, cfg), rel=1e-6, abs=1e-9)
    assert cache.ok == {1: True, 0: True}
    emb.close()


def test_length_chunks_give_the_padded_batch_loss_with_fewer_tokens(hf_dir, calib_txt, monkeypatch):
    m = load_hf_dir(hf_dir).module
    x = tok.load_text(calib_txt, hf_dir, 32)[:24].batch()
    pieces = amp.length_chunks(x, 6)
    assert pieces is not None and len(pieces) == 4
    assert sorted(torch.cat([i for _, i in pieces]).tolist()) == list(range(24))
    assert sum(p["input_ids"].numel() for p, _ in pieces) < 0.9 * x["input_ids"].numel()
    assert all(int(p["attention_mask"][:, -1].max()) == 1 for p, _ in pieces)  # each cut to its longest sample
    cfg = amp.AmpConfig(batch_size=24)
    emb = amp.make_embedding(m, x, cfg, [], print)
    with torch.no_grad():
        m(**x)
        padded = float(amp.entropy_loss(emb.pooled(), cfg.temp_inv))
        monkeypatch.setattr(amp, "CHUNK", 6)
        chunked = float(amp._loss(m, emb, x, None, cfg))
        monkeypatch.setattr(amp, "CHUNK", 10**6)
        whole = float(amp._loss(m, emb, x, None, cfg))
    emb.close()
    assert whole == padded and chunked == pytest.approx(padded, rel=1e-5)
    left = {**x, "attention_mask": x["attention_mask"].flip(1)}  # left padding: positions would shift, no cut
    assert amp.length_chunks(left, 6) is None
    # the Taylor scores see every piece: the same scores as from the padded batch
    blocks = find_mlp_blocks(m, x)
    emb = amp.make_embedding(m, x, cfg, blocks, print)
    monkeypatch.setattr(amp, "CHUNK", 6)
    chunked_scores = amp.taylor_scores(m, blocks, [(x, None)], emb, cfg)
    monkeypatch.setattr(amp, "CHUNK", 10**6)
    padded_scores = amp.taylor_scores(m, blocks, [(x, None)], emb, cfg)
    emb.close()
    for c, p in zip(chunked_scores, padded_scores):
        assert torch.allclose(c, p, rtol=1e-4, atol=1e-9)


def test_prefix_cache_replays_every_piece_of_a_chunked_batch(hf_dir, calib_txt, monkeypatch):
    from hwkit.compress.amp.blocks import Slicer

    monkeypatch.setattr(amp, "CHUNK", 4)
    m = load_hf_dir(hf_dir).module
    val = amp.batches(tok.load_text(calib_txt, hf_dir, 32)[:32], None, 16)
    assert amp.length_chunks(val[0][0]) is not None
    cfg = amp.AmpConfig(batch_size=16)
    blocks = find_mlp_blocks(m, val[0][0])
    emb = amp.make_embedding(m, val[0][0], cfg, blocks, print)
    sl = Slicer(m, blocks)
    cache = amp._PrefixCache(m, val[0][0], blocks, sl)
    cache.start(val, emb, cfg)
    for li, width in ((1, 20), (1, 9), (0, 30)):
        sl.set(li, torch.arange(width))
        assert cache.loss(li, val, emb, cfg) == pytest.approx(amp.val_loss(m, emb, val, cfg), rel=1e-6, abs=1e-9)
    assert cache.ok == {1: True, 0: True}
    emb.close()


def test_reconstruction_lowers_the_block_output_error_of_a_pruned_bert(hf_dir, calib_txt):
    from hwkit.compress.amp.blocks import prune_blocks
    from hwkit.compress.amp.reconstruct import next_modules, reconstruct

    teacher = load_hf_dir(hf_dir).module
    t = tok.load_text(calib_txt, hf_dir, 32)
    fit, held = amp.batches(t[:64], None, 16), t[64:]
    blocks = find_mlp_blocks(teacher, fit[0][0])
    assert next_modules(teacher, fit[0][0], blocks) == [f"encoder.layer.{i}.output.LayerNorm" for i in range(2)]
    keep = [torch.arange(0, 64, 3), torch.arange(1, 64, 2)]  # 22 and 32 of 64 neurons
    student = prune_blocks(teacher, blocks, keep)
    before = copy_of(student)
    rep = reconstruct(student, teacher, blocks, [x for x, _ in fit], ridge=1e-3)
    assert [r["target"] for r in rep] == ["next-input", "next-input"]
    assert all(r["rel_err_after"] < 0.8 * r["rel_err_before"] for r in rep)
    assert student.encoder.layer[0].output.dense.weight.shape == (32, 22)

    def ln_input_error(model):  # the residual LayerNorm's input vs the unpruned model's, held-out sentences
        got = {}
        hooks = [mod.register_forward_pre_hook(lambda _m, i, k=k: got.__setitem__(k, i[0]))
                 for k, mod in enumerate([model.encoder.layer[1].output.LayerNorm])]
        hooks += [teacher.encoder.layer[1].output.LayerNorm.register_forward_pre_hook(
            lambda _m, i: got.__setitem__("t", i[0]))]
        with torch.no_grad():
            x = held.batch()
            model(**x)
            teacher(**x)
        for h in hooks:
            h.remove()
        mask = x["attention_mask"].bool()
        return float(((got[0] - got["t"])[mask] ** 2).mean())

    assert ln_input_error(student) < 0.8 * ln_input_error(before)
    ref = amp.embed_tokens(teacher, held, "mean")
    assert (amp.agreement(ref, amp.embed_tokens(student, held, "mean"))["cosine_mean"]
            > amp.agreement(ref, amp.embed_tokens(before, held, "mean"))["cosine_mean"])


def test_reconstruction_gradient_fit_changes_fc1_and_lowers_the_layernorm_output_error(hf_dir, calib_txt):
    """The block-wise gradient fit after the closed-form fc2 fit (``tune_steps``): it identifies GELU between fc1
    and fc2, moves fc1 (which the closed form leaves alone), and lowers the error of the residual LayerNorm's output
    against the unpruned model's on sentences it did not fit on, below the closed form alone."""
    import torch.nn.functional as F

    from hwkit.compress.amp.blocks import prune_blocks
    from hwkit.compress.amp.reconstruct import _which_act, reconstruct

    z = torch.linspace(-4, 4, 101)[None]
    assert _which_act(z, F.gelu(z)) == "gelu" and _which_act(z, F.relu(z)) == "relu"
    assert _which_act(z, 2 * z) is None
    teacher = load_hf_dir(hf_dir).module
    t = tok.load_text(calib_txt, hf_dir, 32)
    fit, val, held = amp.batches(t[:48], None, 16), amp.batches(t[48:64], None, 16), t[64:]
    blocks = find_mlp_blocks(teacher, fit[0][0])
    keep = [torch.arange(0, 64, 3), torch.arange(1, 64, 2)]
    closed = prune_blocks(teacher, blocks, keep)
    tuned = copy_of(closed)
    fc1_start = [closed.encoder.layer[i].intermediate.dense.weight.detach().clone() for i in range(2)]
    reconstruct(closed, teacher, blocks, [x for x, _ in fit], ridge=1e-3)
    rep = reconstruct(tuned, teacher, blocks, [x for x, _ in fit], ridge=1e-3, tune_steps=150, tune_lr=1e-3,
                      val_batches=[x for x, _ in val], tune_batch=256)
    for i, r in enumerate(rep):
        assert r["tune"]["activation"] == "gelu"
        assert r["tune"]["val_after"] < r["tune"]["val_before"] and r["tune"]["best_step"] > 0
        assert torch.equal(closed.encoder.layer[i].intermediate.dense.weight, fc1_start[i])
        assert not torch.allclose(tuned.encoder.layer[i].intermediate.dense.weight, fc1_start[i])
        assert tuned.encoder.layer[i].intermediate.dense.weight.requires_grad  # flags restored

    def ln_output_error(model):  # the last residual LayerNorm's output vs the unpruned model's, unseen sentences
        got = {}
        h1 = model.encoder.layer[1].output.LayerNorm.register_forward_hook(lambda _m, _i, o: got.__setitem__(0, o))
        h2 = teacher.encoder.layer[1].output.LayerNorm.register_forward_hook(lambda _m, _i, o: got.__setitem__(1, o))
        with torch.no_grad():
            x = held.batch()
            model(**x)
            teacher(**x)
        h1.remove()
        h2.remove()
        return float(((got[0] - got[1])[x["attention_mask"].bool()] ** 2).mean())

    assert ln_output_error(tuned) < 0.95 * ln_output_error(closed)


def copy_of(model):
    import copy

    return copy.deepcopy(model)


def test_prune_reconstructs_by_default_for_token_sets_and_recovers_on_extra_text(tmp_path, hf_dir, calib_txt):
    extra = _write(tmp_path / "extra.txt", tiny_bert.sentences(40, seed=7))
    common = ["prune", str(hf_dir), "--calib", str(calib_txt), "--delta-e-rel", "0.5", "--batch-size", "16",
              "--quiet"]
    assert main([*common, "--reconstruct", "off", "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--recover-calib", str(extra), "--distill-epochs", "1", "--out", str(tmp_path / "rec")]) == 0
    plain = json.loads((tmp_path / "plain" / "prune_report.json").read_text())
    rec = json.loads((tmp_path / "rec" / "prune_report.json").read_text())
    assert plain["reconstruct"] is None and set(plain["agreement"]) == {"after_prune"}
    assert [b["width_after"] for b in plain["blocks"]] == [b["width_after"] for b in rec["blocks"]]
    r = rec["reconstruct"]
    assert r["samples"] == 48 + 40 and "--recover-calib" in r["data"]
    assert all(b["rel_err_after"] < b["rel_err_before"] for b in r["blocks"])
    assert r["tune_steps"] == 600 and all(b["tune"]["activation"] == "gelu" for b in r["blocks"])  # the default
    assert all(b["tune"]["val_after"] <= b["tune"]["val_before"] for b in r["blocks"])
    assert set(rec["agreement"]) == {"after_prune", "after_reconstruct", "after_distill"}
    a = rec["agreement"]
    assert a["after_reconstruct"]["cosine_mean"] > a["after_prune"]["cosine_mean"]
    assert a["after_prune"] == plain["agreement"]["after_prune"]
    assert main([*common, "--recover-calib", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_reconstruction_of_a_plain_mlp_stack_skips_the_shared_layer():
    from hwkit.compress.amp.blocks import prune_blocks
    from hwkit.compress.amp.reconstruct import reconstruct

    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 24), torch.nn.ReLU(),
                                  torch.nn.Linear(24, 5)).eval()
    x = torch.randn(256, 8)
    blocks = find_mlp_blocks(teacher, x[:4])
    assert [(b.fc1[0], b.fc2) for b in blocks] == [("0", "2"), ("2", "4")]
    student = prune_blocks(teacher, blocks, [torch.arange(0, 32, 2), torch.arange(0, 24, 2)])
    rep = reconstruct(student, teacher, blocks, [x[:128], x[128:]], ridge=1e-3)
    assert rep[0]["target"].startswith("skipped") and rep[1]["target"] == "fc2-output"
    assert rep[1]["rel_err_after"] < rep[1]["rel_err_before"]
    with torch.no_grad():
        assert student(x).shape == (256, 5)


def test_remove_search_stops_early_with_the_same_widths(tmp_path):
    """--remove: ΔE searches whose share is already known to be off target stop early; the widths, the ΔE and the
    loss equal those of the search that finishes every ΔE search, with fewer probes."""
    hf = tiny_bert.save_dir(tmp_path / "tiny4", num_hidden_layers=4)
    t = tok.load_text(_write(tmp_path / "s.txt", tiny_bert.sentences(64)), hf, 32)
    m = load_hf_dir(hf).module
    cal, val = amp.batches(t[:32], None, 16), amp.batches(t[32:64], None, 16)
    for target in (0.4,):
        full, fast = (amp.amp_search(m, cal, val, amp.AmpConfig(remove=target, remove_exact=exact, batch_size=16))
                      for exact in (True, False))
        assert fast.widths_after == full.widths_after and fast.threshold == full.threshold
        assert fast.loss_after == full.loss_after and fast.mlp_removed == full.mlp_removed >= target
        assert not any(s.get("stopped_early") for s in full.remove["searches"])
        assert any(s.get("stopped_early") for s in fast.remove["searches"])
        assert fast.remove["probes_evaluated"] < full.remove["probes_evaluated"]
        assert [s["delta_e"] for s in fast.remove["searches"]] == [s["delta_e"] for s in full.remove["searches"]]


def test_cached_probes_land_on_the_plain_widths_with_less_linear_work(tmp_path, monkeypatch):
    """The prefix cache and the cached full-width fc1 of the block being searched change no probe's result: the
    --remove search lands on the same widths, ΔE and loss as a search whose every probe runs the whole model, and
    the multiply work of the Linear layers (rows x in x out of every F.linear call) goes down at each step."""
    import torch.nn.functional as F

    hf = tiny_bert.save_dir(tmp_path / "tiny4", num_hidden_layers=4)
    t = tok.load_text(_write(tmp_path / "s.txt", tiny_bert.sentences(64, seed=3)), hf, 32)
    m = load_hf_dir(hf).module
    cal, val = amp.batches(t[:32], None, 16), amp.batches(t[32:64], None, 16)
    linear, work = F.linear, [0]

    def counted(x, w, b=None):
        work[0] += x.numel() // x.shape[-1] * w.shape[0] * w.shape[1]
        return linear(x, w, b)

    monkeypatch.setattr(F, "linear", counted)
    cfg = amp.AmpConfig(remove=0.4, batch_size=16)
    runs = {}
    for name in ("plain", "prefix", "prefix+fc1"):
        with monkeypatch.context() as mp:
            if name == "plain":
                mp.setattr(amp._PrefixCache, "loss", lambda self, li, v, emb, c: amp.val_loss(self.model, emb, v, c))
            if name == "prefix":
                mp.setattr(amp, "FC1_MIN", 10**9)
            work[0] = 0
            res = amp.amp_search(m, cal, val, cfg)
            runs[name] = (res, work[0])
    plain = runs["plain"][0]
    for name in ("prefix", "prefix+fc1"):
        res = runs[name][0]
        assert res.widths_after == plain.widths_after and res.threshold == plain.threshold
        assert res.loss_after == pytest.approx(plain.loss_after, rel=1e-6)
        assert [s.width for s in res.trace] == [s.width for s in plain.trace]
        assert [s.loss for s in res.trace] == pytest.approx([s.loss for s in plain.trace], rel=1e-6)
    assert runs["prefix+fc1"][1] < runs["prefix"][1] < 0.8 * runs["plain"][1]


def test_length_groups_minimise_padded_rows_plus_a_cost_per_piece():
    import itertools
    import random

    r = random.Random(0)
    for _ in range(30):
        n = r.randint(1, 9)
        lengths = sorted((r.randint(1, 40) for _ in range(n)), reverse=True)
        c = r.choice((0, 8, 32, 200))

        def cost(sizes, lengths=lengths, c=c):
            i, total = 0, 0
            for k in sizes:
                total += lengths[i] * k + c
                i += k
            return total

        best = min(cost([b - a for a, b in zip((0, *cuts), (*cuts, n))])
                   for m in range(n) for cuts in itertools.combinations(range(1, n), m))
        got = amp.length_groups(lengths, c)
        assert sum(got) == n and min(got) >= 1 and cost(got) == best
    assert amp.length_groups([50, 10, 10, 10], 0) == [1, 3]
    assert amp.length_groups([50, 10, 10, 10], 10**6) == [4]


def test_embed_tokens_keeps_the_order_and_matches_one_sentence_at_a_time(hf_dir, calib_txt):
    m = load_hf_dir(hf_dir).module
    t = tok.load_text(calib_txt, hf_dir, 32)[:20]
    assert len(set(t.lengths.tolist())) > 3
    got = amp.embed_tokens(m, t, "mean", batch=6)
    alone = torch.cat([amp.embed_tokens(m, t[i], "mean") for i in range(len(t))])
    assert got.shape == alone.shape and torch.allclose(got, alone, rtol=1e-5, atol=1e-6)
