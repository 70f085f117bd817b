"""AMP — Adaptive MLP Pruning (C. Shen, arXiv:2603.08100; official code visresearch/AMP).

Faithful to ``score.py::ScoreEstimator`` (see /work/shared/reference/amp.md) with these choices:

* **Criterion** (``criterion="entropy"``, default): z = the embedding fed to the model's last Linear
  (the head), i.e. after the final norm and before the projection (OpenCLIP ``ln_post`` output);
  3-D inputs are pooled by the CLS token (``pool="cls"``) or the token mean. ẑ = z/‖z‖ in fp32,
  logits = temp_inv · ẑẑᵀ **with the diagonal kept**, E = −mean_i Σ_j p_ij log p_ij computed with
  ``log_softmax``. One device, so the "global batch" is the local batch and gradients flow through
  both sides by autograd. ``criterion="ce"``: one-hot cross-entropy of the model's logits (needs labels).
* **Scores**: S[ℓ, j] = mean over batches of (1/B) Σ_b |Σ_t a[b,t,j]·g[b,t,j]|, a = input of fc2,
  g = ∂E/∂a (``torch.autograd.grad``; parameters are not updated), computed once on the unpruned
  model in eval mode, fp32. ``layer_wise=True`` re-scores block ℓ on the partly pruned model
  before searching it (``layer_wise/layer_score.py``).
* **Search**: blocks last to first; ``steps`` (6) halvings from [0, H]; a probe ``mid`` is accepted
  when E_val − E_prev ≤ ΔE, where E_prev is the validation loss after the previous (later) block
  was pruned. Each probe physically slices the block from its original tensors (so Brevitas
  weight scales are recomputed from the kept weights, as they will be in the exported model).
  Deviation: probes never go below ``min_width`` (default 1) neurons: FINN and ONNX cannot
  build a zero-width layer (upstream can reach 0 when H < 64).
* **Validation batches** are fixed: the validation set is cut in order into ``batch_size`` batches
  (drop_last, as upstream; the set is shuffled once with ``seed`` by the caller), identical for
  every probe. ΔE depends on the batch size (the softmax runs over B candidates): keep it fixed.
* **Stored order** (deviation): kept neurons are stored in their original relative order, not in
  importance order as upstream ``prune_mlp_by_idxs`` does. The function is the same, but the
  summation order then matches the masked full model, which makes the pruned model equal to it
  bit for bit here (importance order differed by ~1e-6). ``AmpResult.order`` keeps the ranking.
* **Recovery** (:func:`distill`): MSE between the student's and the unpruned teacher's embedding
  (the head input; every token when it is 3-D), AdamW betas (0.9, 0.95), warm-up then cosine lr,
  fixed weight decay (upstream uses a cosine 0.04→0.2 schedule), early stopping on the held-out
  MSE with the best state restored. Upstream distils pre-norm features with the norm/head
  removed; here the head is kept and its input is matched, so the classifier can be reused.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hwkit.compress.amp.blocks import MlpBlock, Slicer, call_model, find_mlp_blocks
from hwkit.errors import InputError, UnsupportedLayerError

CRITERIA = ("entropy", "ce")


@dataclass(frozen=True)
class AmpConfig:
    """Settings of the AMP search (defaults: the shipped OpenCLIP-g config except where noted)."""

    criterion: str = "entropy"
    """entropy (label-free, the paper's) | ce (one-hot cross-entropy, needs labels)."""
    temp_inv: float = 15.0
    """1/τ of the similarity softmax (OpenCLIP configs: 15; EVA/DINOv2: 20)."""
    delta_e: float = 1e-2
    """ΔE: accepted rise of the validation loss per block, in nats (OpenCLIP-g: 1e-2)."""
    steps: int = 6
    """Binary-search halvings per block (upstream ``max_num_prune = 6``)."""
    batch_size: int = 128
    """Samples per scoring/validation batch (the softmax runs over this many; upstream 128/GPU)."""
    layer_wise: bool = False
    """Re-score each block on the partly pruned model before searching it (upstream --layer_wise_prune)."""
    pool: str = "cls"
    """How a 3-D embedding (batch, tokens, dim) is pooled: cls (token 0) | mean."""
    embed_module: str | None = None
    """Module whose input is the embedding; None: the last Linear the model calls (its head)."""
    min_width: int = 1
    """Smallest hidden width a probe may try (deviation from upstream, which can reach 0)."""
    rise: str = "signed"
    """signed: accept when E − E_prev ≤ ΔE (upstream); abs: when |E − E_prev| ≤ ΔE (upstream's commented-out
    alternative, stricter on small models where pruning can also *lower* the entropy)."""


@dataclass(frozen=True)
class DistillConfig:
    """Feature-distillation recovery after pruning."""

    epochs: int = 30
    """Maximum epochs."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    batch_size: int = 64
    """Samples per step."""
    weight_decay: float = 0.05
    """AdamW weight decay (fixed)."""
    patience: int = 5
    """Stop after this many epochs without a better held-out MSE (0: never)."""
    warmup_epochs: int = 1
    """Linear warm-up epochs before the cosine decay."""
    seed: int = 0
    """Shuffling seed."""


@dataclass(frozen=True)
class SearchStep:
    """One probe of the binary search."""

    block: str
    """Block name."""
    step: int
    """0-based probe number within the block."""
    width: int
    """Hidden neurons kept in this probe."""
    loss: float
    """Validation loss (entropy or CE, nats) with this probe."""
    rise: float
    """loss − E_prev (nats)."""
    accepted: bool
    """rise ≤ ΔE."""


@dataclass
class AmpResult:
    """What :func:`amp_search` returns (the pruned model is a new module; the input is untouched)."""

    model: Any
    blocks: list[MlpBlock]
    keep: list[Any]
    """Per block, the kept neuron indices (into the original width), ascending."""
    scores: list[Any]
    """Per block, the Taylor scores of the original neurons."""
    trace: list[SearchStep]
    loss_before: float
    loss_after: float
    search_s: float
    score_s: float
    config: AmpConfig
    order: list[Any] = field(default_factory=list)
    """Per block, all neuron indices by descending score (the ranking the search used)."""

    @property
    def widths_before(self) -> list[int]:
        """Original hidden widths."""
        return [b.hidden for b in self.blocks]

    @property
    def widths_after(self) -> list[int]:
        """Kept hidden widths."""
        return [len(k) for k in self.keep]


# ------------------------------------------------------------------------------------------ criterion


def entropy_loss(z: Any, temp_inv: float) -> Any:
    """Mean entropy of the softmax over in-batch cosine similarities (diagonal kept), fp32."""
    import torch.nn.functional as F

    zn = F.normalize(z.float().flatten(1), dim=-1)
    logp = (temp_inv * zn @ zn.T).log_softmax(dim=-1)
    return -(logp.exp() * logp).sum(dim=-1).mean()


class _Embedding:
    """Captures the input of the embedding module on every forward."""

    def __init__(self, model: Any, name: str, pool: str) -> None:
        mods = dict(model.named_modules())
        if name not in mods:
            raise InputError(f"embedding module '{name}' is not in the model")
        self.pool, self.z = pool, None
        self.handle = mods[name].register_forward_pre_hook(self._hook)

    def _hook(self, _m: Any, inp: Any) -> None:
        self.z = inp[0] if isinstance(inp, tuple) else inp

    def pooled(self) -> Any:
        z = self.z
        if z.ndim == 3:
            z = z[:, 0] if self.pool == "cls" else z.mean(dim=1)
        return z

    def close(self) -> None:
        self.handle.remove()


def head_name(model: Any, example: Any) -> str:
    """The last Linear the model calls (its classification/projection head)."""
    import torch
    from torch import nn

    last: list[str] = []
    hs = [m.register_forward_pre_hook(lambda _m, _i, n=n: last.append(n))
          for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            call_model(model, example)
    finally:
        for h in hs:
            h.remove()
    if not last:
        raise UnsupportedLayerError("the model calls no nn.Linear; name the embedding module explicitly")
    return last[-1]


def _loss(model: Any, emb: _Embedding, x: Any, y: Any, cfg: AmpConfig) -> Any:
    import torch.nn.functional as F

    out = call_model(model, x)
    if cfg.criterion == "ce":
        return F.cross_entropy(out.float(), y)
    return entropy_loss(emb.pooled(), cfg.temp_inv)


def batches(x: Any, y: Any, size: int) -> list[tuple[Any, Any]]:
    """Fixed batches in order, dropping the last incomplete one (upstream drop_last=True)."""
    n = (len(x) // size) * size
    if n == 0:
        raise InputError(f"need at least one full batch of {size} samples, got {len(x)}")
    return [(x[i:i + size], None if y is None else y[i:i + size]) for i in range(0, n, size)]


def val_loss(model: Any, emb: _Embedding, val: Sequence[tuple[Any, Any]], cfg: AmpConfig) -> float:
    """Mean per-batch loss over the fixed validation batches."""
    import torch

    with torch.no_grad():
        return float(sum(float(_loss(model, emb, x, y, cfg)) for x, y in val) / len(val))


def taylor_scores(model: Any, blocks: Sequence[MlpBlock], calib: Sequence[tuple[Any, Any]], emb: _Embedding,
                  cfg: AmpConfig) -> list[Any]:
    """First-order Taylor importance |Σ_tokens a·g| per sample, averaged over samples and batches."""
    import torch

    mods = dict(model.named_modules())
    acts: dict[int, Any] = {}

    def hook(i: int):  # type: ignore[no-untyped-def]
        def h(_m: Any, inp: Any) -> None:
            acts[i] = inp[0] if isinstance(inp, tuple) else inp
        return h

    handles = [mods[b.fc2].register_forward_pre_hook(hook(i)) for i, b in enumerate(blocks)]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    scores = [torch.zeros(mods[b.fc2].in_features) for b in blocks]
    try:
        for p, _ in flags:
            p.requires_grad_(True)  # for the graph only: autograd.grad below never touches .grad
        for x, y in calib:
            acts.clear()
            with torch.enable_grad():
                loss = _loss(model, emb, x, y, cfg)
                a = [acts[i] for i in range(len(blocks))]
                grads = torch.autograd.grad(loss, a, allow_unused=True)
            for i, (ai, gi) in enumerate(zip(a, grads)):
                if gi is None:
                    continue
                prod = (ai.detach().float() * gi.float()).reshape(ai.shape[0], -1, ai.shape[-1])
                scores[i] += prod.sum(dim=1).abs().mean(dim=0)
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
    return [s / len(calib) for s in scores]


# ------------------------------------------------------------------------------------------- search


def amp_search(model: Any, calib: Sequence[tuple[Any, Any]], val: Sequence[tuple[Any, Any]],
               cfg: AmpConfig = AmpConfig(), blocks: Sequence[MlpBlock] | None = None,
               log: Callable[[str], None] | None = None) -> AmpResult:
    """Score once, then binary-search every block's width from last to first; returns a pruned copy."""
    import torch

    if cfg.criterion not in CRITERIA:
        raise InputError(f"criterion must be one of {', '.join(CRITERIA)}, got {cfg.criterion!r}")
    if cfg.criterion == "ce" and any(y is None for _, y in [*calib, *val]):
        raise InputError("criterion 'ce' needs labels for the calibration and validation data")
    if cfg.rise not in ("signed", "abs"):
        raise InputError(f"rise must be signed or abs, got {cfg.rise!r}")
    if cfg.steps < 1 or cfg.min_width < 1:
        raise InputError("steps and min_width must be >= 1")
    work = copy.deepcopy(model).eval()
    blocks = list(blocks) if blocks is not None else find_mlp_blocks(work, val[0][0])
    if not blocks:
        raise UnsupportedLayerError("no prunable MLP block found (fc1 -> pointwise -> fc2 whose hidden tensor "
                                    "feeds only fc2)")
    emb = _Embedding(work, cfg.embed_module or head_name(work, val[0][0]), cfg.pool)
    say = log or (lambda _s: None)
    try:
        t0 = time.perf_counter()
        scores = taylor_scores(work, blocks, calib, emb, cfg)
        score_s = time.perf_counter() - t0
        slicer = Slicer(work, blocks)
        e_prev = e0 = val_loss(work, emb, val, cfg)
        say(f"AMP: {len(blocks)} MLP blocks, {cfg.criterion} loss before pruning {e0:.5f}")
        trace: list[SearchStep] = []
        keep: list[Any] = [torch.arange(b.hidden) for b in blocks]
        orders: list[Any] = [torch.arange(b.hidden) for b in blocks]
        for li in reversed(range(len(blocks))):
            b = blocks[li]
            if cfg.layer_wise and li != len(blocks) - 1:
                scores[li] = taylor_scores(work, [b], calib, emb, cfg)[0]
            order = torch.argsort(scores[li], descending=True, stable=True)
            lo, hi, k, e_keep = 0, b.hidden, b.hidden, None
            for step in range(cfg.steps):
                mid = (lo + hi) // 2
                if mid < cfg.min_width:
                    break
                slicer.set(li, order[:mid].sort().values)
                e = val_loss(work, emb, val, cfg)
                ok = (abs(e - e_prev) if cfg.rise == "abs" else e - e_prev) <= cfg.delta_e
                trace.append(SearchStep(b.name, step, mid, e, e - e_prev, ok))
                if ok:
                    hi, k, e_keep = mid, mid, e
                else:
                    lo = mid
            orders[li] = order
            keep[li] = order[:k].sort().values
            slicer.set(li, keep[li])
            e_prev = e_keep if e_keep is not None else val_loss(work, emb, val, cfg)
            say(f"AMP: {b.name}: {b.hidden} -> {k} neurons, loss {e_prev:.5f}")
        search_s = time.perf_counter() - t0 - score_s
    finally:
        emb.close()
    return AmpResult(work, list(blocks), keep, scores, trace, e0, e_prev, search_s, score_s, cfg, orders)


# ----------------------------------------------------------------------------------------- recovery


def features(model: Any, name: str) -> _Embedding:
    """A hook capturing the input of module ``name`` (the distillation feature)."""
    return _Embedding(model, name, "none")


def distill(student: Any, teacher: Any, x_train: Any, x_val: Any, embed_module: str,
            cfg: DistillConfig = DistillConfig(), progress: Callable[[int, float, float], None] | None = None
            ) -> dict[str, Any]:
    """Feature distillation in place: MSE(student features, teacher features) on ``embed_module``'s input.

    Returns the history (per-epoch train/held-out MSE), the best epoch and why it stopped.
    """
    import math

    import torch
    import torch.nn.functional as F

    teacher = teacher.eval()
    s_feat, t_feat = features(student, embed_module), features(teacher, embed_module)
    with torch.no_grad():
        student.eval()
        t_out, s_out = teacher(x_val), student(x_val)
        t_val = t_feat.z.detach().clone()
        # A plain MLP's last hidden layer is its embedding: once pruned, its width differs from the
        # teacher's, and the logits (same width in both) are matched instead.
        on_logits = s_feat.z.shape != t_val.shape
        if on_logits:
            t_val = t_out.detach().clone()
    del s_out
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(x_train) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g = torch.Generator().manual_seed(cfg.seed)

    def pair(xb: Any) -> tuple[Any, Any]:
        with torch.no_grad():
            t = teacher(xb)
        s = student(xb)
        return (s, t) if on_logits else (s_feat.z, t_feat.z.detach())

    def held_out() -> float:
        student.eval()
        with torch.no_grad():
            out = student(x_val)
            return float(F.mse_loss((out if on_logits else s_feat.z).float(), t_val.float()))

    best, best_state, best_epoch, bad, history, stopped = held_out(), None, 0, 0, [], "max epochs"
    history.append({"epoch": 0, "train_mse": None, "val_mse": best})
    try:
        for epoch in range(1, cfg.epochs + 1):
            student.train()
            perm = torch.randperm(len(x_train), generator=g)
            run = 0.0
            for i in range(steps_per_epoch):
                xb = x_train[perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
                s_z, t_z = pair(xb)
                loss = F.mse_loss(s_z.float(), t_z.float())
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                run += loss.item()
            v = held_out()
            history.append({"epoch": epoch, "train_mse": run / steps_per_epoch, "val_mse": v})
            if progress:
                progress(epoch, run / steps_per_epoch, v)
            if v < best:
                best, best_epoch, bad = v, epoch, 0
                best_state = copy.deepcopy(student.state_dict())
            else:
                bad += 1
                if cfg.patience and bad >= cfg.patience:
                    stopped = f"early stop: {cfg.patience} epochs without a better held-out MSE"
                    break
    finally:
        s_feat.close()
        t_feat.close()
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return {"history": history, "best_epoch": best_epoch, "best_val_mse": best, "stopped": stopped,
            "target": "logits" if on_logits else f"input of {embed_module}",
            "config": asdict(cfg)}


# ------------------------------------------------------------------------------------------ metrics


def count_params(model: Any) -> int:
    """All parameters (learnable or not)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_flops(model: Any, example: Any) -> int:
    """FLOPs of one sample (torch's FlopCounterMode: matmuls, convolutions, attention; 2 per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    one = example[:1] if isinstance(example, torch.Tensor) else example
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:  # FlopCounterMode's module tracker trips over Brevitas tensors that need grad
            p.requires_grad_(False)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            call_model(model.eval(), one)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return int(fc.get_total_flops())


def accuracy(model: Any, x: Any, y: Any, batch: int = 512) -> float:
    """Top-1 accuracy."""
    import torch

    model.eval()
    with torch.no_grad():
        pred = torch.cat([call_model(model, x[i:i + batch]).argmax(-1) for i in range(0, len(x), batch)])
    return float((pred == y).float().mean())
