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

import contextlib
import copy
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hwkit.compress.amp.blocks import MlpBlock, Slicer, call_model, find_mlp_blocks, flat_tensors, small_batch
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
    pool: str = "auto"
    """How a 3-D embedding (batch, tokens, dim) is pooled: cls (token 0) | mean | max (masked by the
    attention mask when the model gets one) | auto (mean for ``embed="output"``, cls for the head input)."""
    embed_module: str | None = None
    """Module whose input is the embedding (``embed="head"``); None: the last Linear the model calls (its head)."""
    embed: str = "auto"
    """Where the embedding comes from: head (the input of ``embed_module``) | output (the model's last hidden
    state, pooled with the attention mask) | auto (output for token inputs or a ``last_hidden_state`` output,
    else head)."""
    delta_e_rel: float | None = None
    """ΔE as a fraction of the entropy before pruning (overrides ``delta_e`` when set)."""
    remove: float | None = None
    """Target fraction of MLP parameters to remove: ΔE is searched (bisection) for it; overrides ΔE."""
    min_width: int = 1
    """Smallest hidden width a probe may try (deviation from upstream, which can reach 0)."""
    rise: str = "signed"
    """signed: accept when E − E_prev ≤ ΔE (upstream); abs: when |E − E_prev| ≤ ΔE (upstream's commented-out
    alternative, stricter on small models where pruning can also *lower* the entropy)."""
    reconstruct: str = "auto"
    """Closed-form re-fit of each pruned block's fc2 after the search (:mod:`hwkit.compress.amp.reconstruct`):
    on | off | auto (on for token inputs: Hugging Face encoders and --arch builders fed token sets)."""
    remove_exact: bool = False
    """With ``remove``: finish every ΔE search of the bisection (by default a search stops once its removed share is
    known to be below the target or above target + 0.02; the widths found are the same, the probes fewer)."""
    reconstruct_ridge: float = 0.1
    """Ridge strength of the re-fit, relative to the mean diagonal of the kept activations' Gram matrix."""


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
    embedding: str = ""
    """What the criterion measured (e.g. the mean-pooled last hidden state)."""
    remove: dict[str, Any] | None = None
    """With ``cfg.remove``: the target, the fraction reached, the ΔE found and the searches tried."""
    mlp_removed: float = 0.0
    """Fraction of the blocks' MLP parameters removed."""
    threshold: float = 0.0
    """The ΔE (nats) the final search used."""
    pool: str = ""
    """The token pooling the embedding used (output embeddings)."""

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


POOLS = ("auto", "cls", "mean", "max")
EMBEDS = ("auto", "head", "output")


def pool_tokens(h: Any, mask: Any, pool: str) -> Any:
    """Pool ``h`` [B, T, d] over tokens: cls (token 0), mean or max over the positions ``mask`` [B, T] marks."""
    if pool == "cls":
        return h[:, 0]
    if mask is None:
        return h.mean(dim=1) if pool == "mean" else h.max(dim=1).values
    m = mask.to(h.dtype).unsqueeze(-1)
    if pool == "mean":
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    return h.masked_fill(m == 0, float("-inf")).max(dim=1).values


class _Embedding:
    """Captures the input of the embedding module on every forward."""

    def __init__(self, model: Any, name: str, pool: str) -> None:
        mods = dict(model.named_modules())
        if name not in mods:
            raise InputError(f"embedding module '{name}' is not in the model")
        self.pool = pool
        self.z: Any = None
        self.describe = f"input of {name}"
        self.handle = mods[name].register_forward_pre_hook(self._hook)

    def _hook(self, _m: Any, inp: Any) -> None:
        self.z = inp[0] if isinstance(inp, tuple) else inp

    def pooled(self) -> Any:
        z = self.z
        if z.ndim == 3:
            z = pool_tokens(z, None, "cls" if self.pool in ("cls", "auto") else self.pool)
        return z

    def close(self) -> None:
        self.handle.remove()


def last_hidden(out: Any) -> Any:
    """The last hidden state of a model output (``last_hidden_state``, else its first tensor)."""
    h = getattr(out, "last_hidden_state", None)
    if h is None:
        ts = flat_tensors(out)
        if not ts:
            raise UnsupportedLayerError("the model returns no tensor to take an embedding from")
        h = ts[0]
    return h


class _OutputEmbedding:
    """The model's last hidden state (every forward), pooled over the tokens its attention mask marks."""

    def __init__(self, model: Any, pool: str) -> None:
        self.pool = "mean" if pool == "auto" else pool
        self.h: Any = None
        self.mask: Any = None
        self.describe = f"{self.pool}-pooled last hidden state (attention-masked)"
        self.handle = model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, _m: Any, args: Any, kwargs: Any, out: Any) -> None:
        self.h = last_hidden(out)
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and getattr(args[1], "ndim", 0) == 2:
            mask = args[1]
        self.mask = mask if mask is not None and self.h.ndim == 3 and mask.shape == self.h.shape[:2] else None

    @property
    def z(self) -> Any:
        return self.h

    def pooled(self) -> Any:
        return pool_tokens(self.h, self.mask, self.pool) if self.h.ndim == 3 else self.h

    def tokens(self) -> tuple[Any, Any]:
        """The hidden states [B, T, d] and the mask [B, T] (None when the model got none)."""
        return self.h, self.mask

    def close(self) -> None:
        self.handle.remove()


def wants_output_embedding(model: Any, example: Any) -> bool:
    """``embed="auto"``: token inputs (a dict with input_ids) or an output with ``last_hidden_state``."""
    import torch

    if isinstance(example, dict) and "input_ids" in example:
        return True
    with torch.no_grad():
        out = call_model(model, example)
    return getattr(out, "last_hidden_state", None) is not None


def make_embedding(model: Any, example: Any, cfg: AmpConfig, blocks: Sequence[MlpBlock],
                   warn: Callable[[str], None]) -> Any:
    """The embedding the criterion and recovery use (see ``AmpConfig.embed``), with a warning when the default
    head input is a pooler or the hidden tensor of a block being pruned."""
    if cfg.embed not in EMBEDS or cfg.pool not in POOLS:
        raise InputError(f"embed must be one of {', '.join(EMBEDS)} and pool one of {', '.join(POOLS)}")
    use_output = cfg.embed == "output" or (cfg.embed == "auto" and cfg.embed_module is None
                                           and wants_output_embedding(model, example))
    if use_output:
        return _OutputEmbedding(model, cfg.pool)
    name = cfg.embed_module or head_name(model, example)
    if cfg.embed_module is None:
        if "pooler" in name.split(".")[-1] or "pooler" in name.split("."):
            warn(f"the embedding defaults to the input of '{name}', a pooler: the criterion and the distillation "
                 "target become one token's pooled state; use --embed output (mean-pooled last hidden state) "
                 "or --embed-module")
        for b in blocks:
            if name == b.fc2:
                warn(f"the embedding defaults to the input of '{name}', the hidden activation of the MLP block "
                     f"{b.name} being pruned; use --embed output or --embed-module")
    return _Embedding(model, name, cfg.pool)


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


CHUNK: int | None = None
"""Samples per piece when a padded token batch is evaluated in length-sorted pieces (:func:`length_chunks`);
None: the pieces are chosen by :func:`length_groups`."""

PIECE_ROWS = 32
"""What one more forward costs, in token rows, when :func:`length_groups` chooses the pieces (the Python and
per-call work of a BERT-sized forward on one CPU thread is about that of 10-200 token rows, depending on how many
layers the forward runs)."""


def length_groups(lengths: Sequence[int], piece_rows: int = PIECE_ROWS) -> list[int]:
    """Sizes of consecutive pieces of ``lengths`` (sorted longest first) that minimise the padded rows
    (Σ size × the piece's first length) plus ``piece_rows`` per piece (dynamic programming, O(n²))."""
    return list(_length_groups(tuple(lengths), piece_rows))


@functools.lru_cache(maxsize=64)
def _length_groups(lengths: tuple[int, ...], piece_rows: int) -> tuple[int, ...]:
    n = len(lengths)
    best = [0] + [0] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        best[j], cut[j] = min((best[i] + lengths[i] * (j - i) + piece_rows, i) for i in range(j))
    sizes = []
    while n > 0:
        sizes.append(n - cut[n])
        n = cut[n]
    return tuple(sizes[::-1])


def length_chunks(x: Any, size: int | None = None) -> list[tuple[dict[str, Any], Any]] | None:
    """A right-padded token batch (dict with a 2-D ``attention_mask``) as pieces sorted by length, each cut to its
    own longest sample: ``[(inputs, sample indices), ...]``. The pieces compute exactly what the padded batch
    computes for the real tokens (masked attention, positions from 0) with fewer padded tokens: on the 64-sentence
    MiniLM validation batch 1,550 token rows in 7 pieces (:func:`length_groups`; 1,888 in 4 pieces of 16) instead
    of 3,520. Pieces of ``size`` samples (default :data:`CHUNK`) when given. None when ``x`` is not such a batch or
    cutting saves less than 10 %."""
    import torch

    size = size or CHUNK

    mask = x.get("attention_mask") if isinstance(x, dict) else None
    if mask is None or not isinstance(mask, torch.Tensor) or mask.dim() != 2 or len(mask) <= (size or 1):
        return None
    lengths = mask.sum(1)
    if not torch.equal(mask.bool(), torch.arange(mask.shape[1])[None] < lengths[:, None]):
        return None  # not right-padded: positions would shift
    order = torch.argsort(lengths, descending=True, stable=True)
    if size:
        sizes = [min(size, len(order) - i) for i in range(0, len(order), size)]
    else:
        sizes = length_groups([max(int(v), 1) for v in lengths[order]])
    pieces, rows, i = [], 0, 0
    for cnt in sizes:
        idx = order[i:i + cnt]
        i += cnt
        n = max(int(lengths[idx].max()), 1)
        rows += n * len(idx)
        pieces.append(({k: (v[idx, :n] if isinstance(v, torch.Tensor) and v.shape == mask.shape
                            else v[idx] if isinstance(v, torch.Tensor) and v.dim() >= 1 and len(v) == len(mask)
                            else v) for k, v in x.items()}, idx))
    return pieces if rows < 0.9 * mask.numel() else None


def loss_pieces(x: Any, emb: Any, cfg: AmpConfig) -> list[tuple[dict[str, Any], Any]] | None:
    """The length pieces :func:`_loss` runs ``x`` in (None: one forward of the whole batch)."""
    return length_chunks(x) if cfg.criterion == "entropy" and isinstance(emb, _OutputEmbedding) else None


def _loss(model: Any, emb: Any, x: Any, y: Any, cfg: AmpConfig) -> Any:
    import torch
    import torch.nn.functional as F

    pieces = loss_pieces(x, emb, cfg)
    if pieces is not None:  # same embeddings, fewer padded tokens; the softmax still spans the whole batch
        parts, idx = [], []
        for xb, ib in pieces:
            call_model(model, xb)
            parts.append(emb.pooled())
            idx.append(ib)
        z = torch.empty(len(x["attention_mask"]), *parts[0].shape[1:], dtype=parts[0].dtype)
        z[torch.cat(idx)] = torch.cat(parts)
        return entropy_loss(z, cfg.temp_inv)
    out = call_model(model, x)
    if cfg.criterion == "ce":
        return F.cross_entropy(out.float(), y)
    return entropy_loss(emb.pooled(), cfg.temp_inv)


def batches(x: Any, y: Any, size: int) -> list[tuple[Any, Any]]:
    """Fixed batches in order, dropping the last incomplete one (upstream drop_last=True). A token set
    (:class:`hwkit.data.tokens.Tokens`) gives dicts of int64 tensors, each padded to its own longest sample."""
    n = (len(x) // size) * size
    if n == 0:
        raise InputError(f"need at least one full batch of {size} samples, got {len(x)}")

    def cut(i: int) -> Any:
        part = x[i:i + size]
        return part.batch() if hasattr(part, "batch") else part

    return [(cut(i), None if y is None else y[i:i + size]) for i in range(0, n, size)]


def val_loss(model: Any, emb: Any, val: Sequence[tuple[Any, Any]], cfg: AmpConfig) -> float:
    """Mean per-batch loss over the fixed validation batches."""
    import torch

    with torch.no_grad():
        return float(sum(float(_loss(model, emb, x, y, cfg)) for x, y in val) / len(val))


def taylor_scores(model: Any, blocks: Sequence[MlpBlock], calib: Sequence[tuple[Any, Any]], emb: Any,
                  cfg: AmpConfig) -> list[Any]:
    """First-order Taylor importance |Σ_tokens a·g| per sample, averaged over samples and batches."""
    import torch

    mods = dict(model.named_modules())
    acts: dict[int, list[Any]] = {}  # per block, fc2's input of every forward (a batch may run as length pieces)

    def hook(i: int) -> Callable[[Any, Any], None]:
        def h(_m: Any, inp: Any) -> None:
            acts.setdefault(i, []).append(inp[0] if isinstance(inp, tuple) else inp)
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
                a = [(i, t) for i in range(len(blocks)) for t in acts.get(i, [])]
                grads = torch.autograd.grad(loss, [t for _, t in a], allow_unused=True)
            sums = [torch.zeros_like(sc) for sc in scores]
            count = [0] * len(blocks)
            for (i, ai), gi in zip(a, grads):
                count[i] += ai.shape[0]
                if gi is None:
                    continue
                prod = (ai.detach().float() * gi.float()).reshape(ai.shape[0], -1, ai.shape[-1])
                sums[i] += prod.sum(dim=1).abs().sum(dim=0)  # per sample |Σ_tokens a·g| (padding has g = 0)
            for i in range(len(blocks)):
                if count[i]:
                    scores[i] += sums[i] / count[i]
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
    return [s / len(calib) for s in scores]


# ------------------------------------------------------------------------------------------- search


def neuron_costs(model: Any, blocks: Sequence[MlpBlock]) -> list[int]:
    """Parameters per hidden neuron of each block (fc1 rows incl. bias and gate partner, fc2 column, norms)."""
    mods = dict(model.named_modules())
    out = []
    for b in blocks:
        c = 0
        for n in b.fc1:
            m = mods[n]
            c += (m.in_features + (1 if m.bias is not None else 0)) * (2 if b.fused_glu else 1)
        c += mods[b.fc2].out_features
        for n in b.norms:
            c += sum(1 for t in mods[n].parameters(recurse=False) if t.ndim >= 1 and t.shape[0] == b.hidden)
        out.append(c)
    return out


def removed_fraction(blocks: Sequence[MlpBlock], widths: Sequence[int], costs: Sequence[int]) -> float:
    """Fraction of the blocks' MLP parameters removed at ``widths``."""
    total = sum(b.hidden * c for b, c in zip(blocks, costs))
    return sum((b.hidden - w) * c for b, w, c in zip(blocks, widths, costs)) / max(total, 1)


FC1_MIN = 16
"""Kept widths below this are computed by the sliced fc1 itself, not sliced from its cached full output (a matrix
product a few columns wide can take another kernel whose rounding differs)."""


class _Columns:
    """A tensor [..., n] stored column by column, so that a subset of its last dimension is copied fast."""

    def __init__(self, t: Any) -> None:
        self.lead = t.shape[:-1]
        self.t = t.reshape(-1, t.shape[-1]).t().contiguous()

    def take(self, idx: Any) -> Any:
        """``t[..., idx]`` (contiguous)."""
        return self.t.index_select(0, idx).t().contiguous().reshape(*self.lead, len(idx))


class _PrefixCache:
    """Skips the work before block ``li``, and block ``li``'s fc1, while block ``li`` is searched.

    Blocks are searched last to first, so while block ``li`` is probed every block before it is at full width:
    the modules that finish before its fc1 starts (maximal ones, called once per forward) compute the same
    outputs in every probe. Their outputs are recorded per validation batch by :meth:`start` (the pass of the
    unpruned model, for every block at once) and returned from then on instead of running them. With the
    ``slicer``, block ``li``'s fc1 (plain ``nn.Linear`` layers called once per forward, not also the fc2 of another
    block) is run once at full width on its recorded input and each probe takes the kept neurons' columns of that
    output instead of multiplying by the kept rows: the same numbers (each output column is the same dot product;
    widths below :data:`FC1_MIN` are multiplied as before). Before block ``li``'s first cached probe, the model's
    outputs on the cheapest piece of the first batch are computed plainly and cached (twice) and compared.
    """

    def __init__(self, model: Any, example: Any, blocks: Sequence[MlpBlock], slicer: Slicer | None = None) -> None:
        from torch import nn

        from hwkit.compress.amp.blocks import _trace_spans

        self.model = model
        self.slicer = slicer
        spans, calls = _trace_spans(model, example)
        self.mods = dict(model.named_modules())
        self.prefix: list[list[str]] = []
        self.fc1: list[list[str]] = []
        for b in blocks:
            start = min(spans[n][0] for n in b.fc1)
            done = [n for n, (_s, e) in spans.items() if e < start and calls.get(n) == 1]
            done_set = set(done)
            maximal = [n for n in done if not any(n.startswith(p + ".") for p in done_set if p != n)]
            self.prefix.append(maximal)
            plain = slicer is not None and all(
                type(self.mods[n]) is nn.Linear and calls.get(n) == 1 and n not in slicer.cols
                and "weight" in slicer.full[n] for n in b.fc1)
            self.fc1.append(list(b.fc1) if plain else [])
        self.outs: dict[tuple[str, int], list[Any]] = {}
        """(module, batch) -> the module's output of every forward call of that batch (one per length piece)."""
        self.fc1_full: dict[tuple[str, int], list[Any]] = {}
        """(fc1, batch) -> its full-width output of every forward call, stored by columns."""
        self.ok: dict[int, bool] = {}
        self.started = False

    def start(self, val: Sequence[tuple[Any, Any]], emb: Any, cfg: AmpConfig) -> float:
        """val_loss of the model as it is (every block at full width), recording what every block's probes replay."""
        import torch
        import torch.nn.functional as F

        names = sorted({n for p in self.prefix for n in p})
        fc1 = sorted({n for f in self.fc1 for n in f})
        losses = []
        for bi, (x, y) in enumerate(val):
            for n in names:
                self.outs[(n, bi)] = []
            ins: dict[str, list[Any]] = {n: [] for n in fc1}
            hs = [self.mods[n].register_forward_hook(lambda _m, _i, o, got=self.outs[(n, bi)]: got.append(o))
                  for n in names]
            hs += [self.mods[n].register_forward_pre_hook(lambda _m, i, got=ins[n]: got.append(i[0])) for n in fc1]
            try:
                with torch.no_grad():
                    losses.append(float(_loss(self.model, emb, x, y, cfg)))
            finally:
                for h in hs:
                    h.remove()
            with torch.no_grad():
                for n in fc1:
                    assert self.slicer is not None
                    w, b = self.slicer.full[n]["weight"], self.slicer.full[n].get("bias")
                    self.fc1_full[(n, bi)] = [_Columns(F.linear(t, w, b)) for t in ins[n]]
        self.started = True
        return sum(losses) / len(losses)

    def loss(self, li: int, val: Sequence[tuple[Any, Any]], emb: Any, cfg: AmpConfig) -> float:
        """val_loss with block ``li``'s prefix (and fc1) replayed (checked on first use)."""
        import torch

        if not self.started or not (self.prefix[li] or self.fc1[li]) or self.ok.get(li) is False:
            return val_loss(self.model, emb, val, cfg)
        with torch.no_grad():
            if li not in self.ok:
                self.ok[li] = self._check(li, val[0][0], emb, cfg)
                if not self.ok[li]:
                    return val_loss(self.model, emb, val, cfg)
            total = 0.0
            for bi, (x, y) in enumerate(val):
                with self._replay(li, bi):
                    total += float(_loss(self.model, emb, x, y, cfg))
            return total / len(val)

    def _check(self, li: int, x: Any, emb: Any, cfg: AmpConfig) -> bool:
        """The model's outputs on the piece of ``x`` with the fewest token rows: plain vs replayed (twice)."""
        import torch

        pieces = loss_pieces(x, emb, cfg)
        k = 0 if pieces is None else min(range(len(pieces)), key=lambda i: pieces[i][0]["attention_mask"].numel())
        xp = x if pieces is None else pieces[k][0]
        plain = [t.float() for t in flat_tensors(call_model(self.model, xp))]
        for _ in range(2):
            with self._replay(li, 0, k):
                got = [t.float() for t in flat_tensors(call_model(self.model, xp))]
            if len(got) != len(plain) or not all(
                    g.shape == p.shape and torch.allclose(g, p, rtol=1e-5, atol=1e-5 * max(1.0, float(p.abs().max())))
                    for g, p in zip(got, plain)):
                return False
        return True

    @contextlib.contextmanager
    def _replay(self, li: int, bi: int, first: int = 0) -> Iterator[None]:
        """Block ``li``'s prefix modules return their recorded outputs of batch ``bi`` (and its fc1 the kept columns
        of its full output), one per forward call in order from call ``first``."""
        mods = []
        for n in self.prefix[li]:
            m = self.mods[n]
            it = iter(self.outs[(n, bi)][first:])
            m.forward = (lambda *_a, _it=it, **_k: next(_it))
            mods.append(m)
        if self.slicer is not None:
            for n in self.fc1[li]:
                idx = self.slicer._row_idx(n)
                if len(idx) < FC1_MIN:
                    continue
                m = self.mods[n]
                it = iter(self.fc1_full[(n, bi)][first:])
                m.forward = (lambda *_a, _it=it, _idx=idx, **_k: next(_it).take(_idx))
                mods.append(m)
        try:
            yield
        finally:
            for m in mods:
                del m.forward


def amp_search(model: Any, calib: Sequence[tuple[Any, Any]], val: Sequence[tuple[Any, Any]],
               cfg: AmpConfig = AmpConfig(), blocks: Sequence[MlpBlock] | None = None,
               log: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None) -> AmpResult:
    """Score once, then binary-search every block's width from last to first; returns a pruned copy.

    With ``cfg.remove`` the per-block threshold ΔE is bisected (geometrically) until the removed fraction of
    MLP parameters reaches the target; probe losses are memoised by the widths of all blocks, so the
    searches share their common probes."""
    import torch

    if cfg.criterion not in CRITERIA:
        raise InputError(f"criterion must be one of {', '.join(CRITERIA)}, got {cfg.criterion!r}")
    if cfg.criterion == "ce" and any(y is None for _, y in [*calib, *val]):
        raise InputError("criterion 'ce' needs labels for the calibration and validation data")
    if cfg.rise not in ("signed", "abs"):
        raise InputError(f"rise must be signed or abs, got {cfg.rise!r}")
    if cfg.steps < 1 or cfg.min_width < 1:
        raise InputError("steps and min_width must be >= 1")
    if cfg.remove is not None and not 0 < cfg.remove < 1:
        raise InputError(f"remove must be a fraction in (0, 1), got {cfg.remove}")
    if cfg.delta_e_rel is not None and cfg.delta_e_rel < 0:
        raise InputError(f"delta_e_rel must be >= 0, got {cfg.delta_e_rel}")
    say = log or (lambda _s: None)
    work = copy.deepcopy(model).eval()
    small = small_batch(val[0][0], 4)
    blocks = list(blocks) if blocks is not None else find_mlp_blocks(work, small)
    if not blocks:
        raise UnsupportedLayerError("no prunable MLP block found (fc1 -> pointwise -> fc2 whose hidden tensor "
                                    "feeds only fc2)")
    emb = make_embedding(work, small, cfg, blocks, warn or say)
    say(f"AMP: embedding = {emb.describe}")
    try:
        t0 = time.perf_counter()
        scores = taylor_scores(work, blocks, calib, emb, cfg)
        score_s = time.perf_counter() - t0
        slicer = Slicer(work, blocks)
        cache = _PrefixCache(work, small, blocks, slicer)
        e0 = cache.start(val, emb, cfg)
        say(f"AMP: {len(blocks)} MLP blocks, {cfg.criterion} loss before pruning {e0:.5f}")
        costs = neuron_costs(work, blocks)
        memo: dict[tuple[int, ...], float] = {tuple(b.hidden for b in blocks): e0}  # the unpruned model
        rescored: dict[tuple[int, ...], Any] = {}
        nb = len(blocks)

        def order_of(li: int, widths: list[int]) -> Any:
            if cfg.layer_wise and li != nb - 1:
                key = tuple(widths[li + 1:])
                if key not in rescored:
                    rescored[key] = taylor_scores(work, [blocks[li]], calib, emb, cfg)[0]
                return torch.argsort(rescored[key], descending=True, stable=True)
            return torch.argsort(scores[li], descending=True, stable=True)

        def narrowest(h: int) -> int:
            """The smallest width the halvings can reach from [0, h] (every probe accepted)."""
            hi = h
            for _ in range(cfg.steps):
                if hi // 2 < cfg.min_width:
                    break
                hi //= 2
            return hi

        floor = [narrowest(b.hidden) for b in blocks]

        def search(th: float, verbose: bool, target: float | None = None
                   ) -> tuple[list[int], list[Any], list[SearchStep], float]:
            """One search at ΔE ``th``. With ``target`` it stops as soon as the removed fraction is known to be
            below ``target`` or above ``target`` + 0.02 whatever the blocks not yet searched do (only that class
            matters to the --remove bisection): the block being searched is then returned at the widest width
            it can still end on and the blocks not searched whole (so the fraction of the returned widths falls in
            the same class), and the loss returned is NaN."""
            slicer.restore()
            widths = [b.hidden for b in blocks]
            orders: list[Any] = [torch.arange(b.hidden) for b in blocks]
            trace: list[SearchStep] = []
            e_prev = e0
            for li in reversed(range(nb)):
                b = blocks[li]
                order = order_of(li, widths)
                lo, hi, k, e_keep = 0, b.hidden, b.hidden, None
                for step in range(cfg.steps):
                    # the width this search ends on lies in [max(lo, floor), hi]: stop when that already decides
                    if target is not None and decided(li, widths, hi, max(lo, floor[li]), target):
                        widths[li] = hi
                        return widths, orders, trace, float("nan")
                    mid = (lo + hi) // 2
                    if mid < cfg.min_width:
                        break
                    key = (*widths[:li], mid, *widths[li + 1:])
                    if key not in memo:
                        slicer.set(li, order[:mid].sort().values)
                        memo[key] = cache.loss(li, val, emb, cfg)
                    e = memo[key]
                    ok = (abs(e - e_prev) if cfg.rise == "abs" else e - e_prev) <= th
                    trace.append(SearchStep(b.name, step, mid, e, e - e_prev, ok))
                    if ok:
                        hi, k, e_keep = mid, mid, e
                    else:
                        lo = mid
                orders[li] = order
                widths[li] = k
                slicer.set(li, order[:k].sort().values)
                if e_keep is None:
                    key = tuple(widths)
                    if key not in memo:
                        memo[key] = cache.loss(li, val, emb, cfg)
                    e_keep = memo[key]
                e_prev = e_keep
                if verbose:
                    say(f"AMP: {b.name}: {b.hidden} -> {k} neurons, loss {e_prev:.5f}")
                if target is not None and li > 0 and decided(li, widths, k, k, target):
                    return widths, orders, trace, float("nan")
            return widths, orders, trace, e_prev

        def decided(li: int, widths: list[int], widest: int, narrowest_k: int, target: float) -> bool:
            """Whether the removed share is surely below ``target`` or above ``target`` + 0.02 when block ``li`` ends
            between ``narrowest_k`` and ``widest`` neurons and the blocks before it anywhere they can reach."""
            least = removed_fraction(blocks, [*(b.hidden for b in blocks[:li]), widest, *widths[li + 1:]], costs)
            most = removed_fraction(blocks, [*floor[:li], narrowest_k, *widths[li + 1:]], costs)
            return least > target + 0.02 or most < target

        remove_info: dict[str, Any] | None = None
        if cfg.remove is None:
            th = cfg.delta_e if cfg.delta_e_rel is None else cfg.delta_e_rel * abs(e0)
            widths, orders, trace, e_last = search(th, True)
        else:
            th, target = 1e-2 * max(abs(e0), 1e-6), cfg.remove
            below: tuple[float, float] | None = None
            above: tuple[float, float] | None = None
            tried = []
            for _ in range(16):
                w, _o, _t, e_end = search(th, False, None if cfg.remove_exact else target)
                r = removed_fraction(blocks, w, costs)
                partial = e_end != e_end  # stopped early: r is a lower bound above target + 0.02 or below target
                tried.append({"delta_e": th, "removed": r, **({"stopped_early": True} if partial else {})})
                say(f"AMP: ΔE {th:.3g} nats ({th / max(abs(e0), 1e-12):.3g} of E0) removes "
                    f"{'at least ' if partial and r > target else 'less than ' if partial else ''}"
                    f"{(r if not partial or r > target else target) * 100:.1f} % of the MLP parameters")
                if r >= target:
                    above = (th, r) if above is None or th < above[0] else above
                else:
                    below = (th, r) if below is None or th > below[0] else below
                if above is not None and above[1] - target <= 0.02:
                    break
                if above is not None and below is not None:
                    if above[0] / max(below[0], 1e-30) < 1.2:
                        break  # close enough: the widths are interpolated below
                    th = (above[0] * below[0]) ** 0.5
                elif above is not None:
                    th = above[0] / 8
                    if th < 1e-9 * max(abs(e0), 1e-6):
                        break
                else:
                    th = below[0] * 8 if below is not None else th * 8
            th = above[0] if above is not None else below[0]  # type: ignore[index]
            widths, orders, trace, e_last = search(th, True)
            got = removed_fraction(blocks, widths, costs)
            interpolated = None
            if got - target > 0.02:
                # the removed share jumps across a tiny ΔE change (the loss is not monotone in the widths): take the
                # widths part of the way from the largest search below the target (or the full model) to this one
                low = search(below[0], False)[0] if below is not None else [b.hidden for b in blocks]
                for step in range(1, 1001):
                    lam = step / 1000
                    w = [round(lo_w + lam * (hi_w - lo_w)) for lo_w, hi_w in zip(low, widths)]
                    if removed_fraction(blocks, w, costs) >= target:
                        break
                interpolated = {"from_widths": low, "to_widths": list(widths), "fraction": lam}
                widths = [max(cfg.min_width, x) for x in w]
                for i, k in enumerate(widths):
                    slicer.set(i, orders[i][:k].sort().values)
                e_last = val_loss(work, emb, val, cfg)
                got = removed_fraction(blocks, widths, costs)
                say(f"AMP: widths interpolated {lam:.3f} of the way between the searches at ΔE "
                    f"{below[0] if below is not None else 0:.3g} and {th:.3g}: {widths}, loss {e_last:.5f}")
            if got < target:
                (warn or say)(f"--remove {target * 100:.0f} %: the search reached only {got * 100:.1f} % "
                              f"(largest ΔE tried {th:.3g}); the blocks cannot shrink further with {cfg.steps} "
                              "halvings and min_width")
            remove_info = {"target": target, "removed": got, "delta_e": th, "delta_e_rel": th / max(abs(e0), 1e-12),
                           "searches": tried, "probes_evaluated": len(memo) - 1, "interpolated": interpolated}
        keep = [orders[i][:w].sort().values for i, w in enumerate(widths)]
        for i, k in enumerate(keep):
            slicer.set(i, k)
        search_s = time.perf_counter() - t0 - score_s
    finally:
        emb.close()
    res = AmpResult(work, list(blocks), keep, scores, trace, e0, e_last, search_s, score_s, cfg, orders)
    res.embedding = emb.describe
    res.remove = remove_info
    res.mlp_removed = removed_fraction(blocks, widths, costs)
    res.threshold = th
    res.pool = emb.pool
    return res


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

    one = small_batch(example, 1)
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

    def part(i: int) -> Any:
        p = x[i:i + batch]
        return p.batch() if hasattr(p, "batch") else p

    with torch.no_grad():
        pred = torch.cat([flat_tensors(call_model(model, part(i)))[0].argmax(-1) for i in range(0, len(x), batch)])
    return float((pred == y).float().mean())


# ------------------------------------------------------------------------------------ token encoders


def embed_tokens(model: Any, x: Any, pool: str, batch: int = 64) -> Any:
    """Pooled embeddings of a token set (:class:`hwkit.data.tokens.Tokens`), no gradients, in the set's order;
    computed in batches of similar length (sorted longest first, each padded to its own longest sample)."""
    import numpy as np
    import torch

    emb = _OutputEmbedding(model, pool)
    order = np.argsort(-np.asarray(x.lengths), kind="stable")
    out: Any = None
    try:
        with torch.no_grad():
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                call_model(model.eval(), x[idx].batch())
                z = emb.pooled().float()
                if out is None:
                    out = torch.empty(len(order), *z.shape[1:])
                out[torch.from_numpy(idx)] = z
    finally:
        emb.close()
    return out if out is not None else torch.empty(0)


def agreement(ref: Any, got: Any, k: int = 10) -> dict[str, float]:
    """How well embeddings ``got`` [N, d] agree with ``ref``: per-sample cosine (mean, min) and the mean overlap of
    each sample's ``k`` nearest neighbours (cosine, itself excluded) in the two spaces."""
    import torch
    import torch.nn.functional as F

    a, b = F.normalize(ref.float(), dim=1), F.normalize(got.float(), dim=1)
    cos = (a * b).sum(1)
    res = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "samples": len(a)}
    kk = min(k, len(a) - 1)
    if kk >= 1:
        eye = torch.eye(len(a), dtype=torch.bool)
        na = (a @ a.T).masked_fill(eye, -2).topk(kk, dim=1).indices
        nb = (b @ b.T).masked_fill(eye, -2).topk(kk, dim=1).indices
        hits = [len(set(r.tolist()) & set(s.tolist())) / kk for r, s in zip(na, nb)]
        res[f"top{kk}_overlap"] = float(sum(hits) / len(hits))
    return res


def _length_batches(lengths: Any, size: int, gen: Any) -> list[Any]:
    """Shuffled batches of similar length (sorted within windows of 8 batches) to keep padding small."""
    import torch

    perm = torch.randperm(len(lengths), generator=gen)
    out = []
    win = 8 * size
    for i in range(0, len(perm), win):
        w = perm[i:i + win]
        w = w[torch.argsort(torch.as_tensor(lengths)[w], stable=True)]
        out += [w[j:j + size] for j in range(0, len(w), size)]
    order = torch.randperm(len(out), generator=gen).tolist()
    return [out[i] for i in order]


def distill_tokens(student: Any, teacher: Any, x_train: Any, x_val: Any, pool: str,
                   cfg: DistillConfig = DistillConfig(), hidden_weight: float = 1.0,
                   progress: Callable[[int, float, float], None] | None = None) -> dict[str, Any]:
    """Recovery of a pruned token encoder in place, against the unpruned ``teacher``.

    Loss per batch: ``1 - cos`` of the pooled sentence embeddings + ``hidden_weight`` x the MSE of the last
    hidden states over the real tokens, normalised by the teacher's mean square (scale-free). Batches of
    similar length (dynamic padding); AdamW, linear warm-up then cosine decay, embedding tables frozen;
    early stopping on the held-out ``1 - cos`` with the best state restored.
    """
    import math

    import torch
    import torch.nn.functional as F
    from torch import nn

    teacher = teacher.eval()
    frozen = {id(p) for m in student.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    params = [p for p in student.parameters() if id(p) not in frozen]
    flags = [(p, p.requires_grad) for p in student.parameters()]
    for p in student.parameters():
        p.requires_grad_(id(p) not in frozen)
    s_emb, t_emb = _OutputEmbedding(student, pool), _OutputEmbedding(teacher, pool)
    t_val = embed_tokens(teacher, x_val, pool)

    def held_out() -> float:
        e = embed_tokens(student, x_val, pool)
        return float((1 - F.cosine_similarity(e, t_val, dim=1)).mean())

    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = len(_length_batches(x_train.lengths, cfg.batch_size, torch.Generator().manual_seed(0)))
    total = cfg.epochs * steps_per_epoch
    warm = max(1, min(cfg.warmup_epochs * steps_per_epoch, total // 5))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    best = held_out()
    best_state, best_epoch, bad, stopped = None, 0, 0, "max epochs"
    history: list[dict[str, Any]] = [{"epoch": 0, "train_loss": None, "val_1_minus_cos": best}]
    t0 = time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            student.train()
            run = 0.0
            idx_batches = _length_batches(x_train.lengths, cfg.batch_size, g)
            for idx in idx_batches:
                xb = x_train[idx].batch()
                with torch.no_grad():
                    call_model(teacher, xb)
                    th, mask = t_emb.tokens()
                    te = t_emb.pooled().float()
                call_model(student, xb)
                sh, _ = s_emb.tokens()
                se = s_emb.pooled().float()
                loss = (1 - F.cosine_similarity(se, te, dim=1)).mean()
                if hidden_weight:
                    m = (mask if mask is not None else torch.ones(th.shape[:2])).to(th.dtype).unsqueeze(-1)
                    den = ((th.float() ** 2) * m).sum().clamp(min=1e-12)
                    loss = loss + hidden_weight * (((sh.float() - th.float()) ** 2) * m).sum() / den
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                run += float(loss.detach())
            v = held_out()
            history.append({"epoch": epoch, "train_loss": run / len(idx_batches), "val_1_minus_cos": v,
                            "elapsed_s": time.perf_counter() - t0})
            if progress:
                progress(epoch, run / len(idx_batches), v)
            if v < best:
                best, best_epoch, bad = v, epoch, 0
                best_state = copy.deepcopy(student.state_dict())
            else:
                bad += 1
                if cfg.patience and bad >= cfg.patience:
                    stopped = f"early stop: {cfg.patience} epochs without a better held-out 1 - cos"
                    break
    finally:
        s_emb.close()
        t_emb.close()
        for p, flag in flags:
            p.requires_grad_(flag)
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return {"history": history, "best_epoch": best_epoch, "best_val_1_minus_cos": best, "stopped": stopped,
            "target": f"{pool}-pooled embedding (1 - cos) + {hidden_weight} x normalised last-hidden-state MSE",
            "config": asdict(cfg), "train_s": time.perf_counter() - t0}
