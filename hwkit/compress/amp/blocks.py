"""Find the two-layer MLPs of a model by structure, and slice their hidden neurons physically.

An *MLP block* is ``fc1 -> pointwise ops -> fc2`` where the hidden tensor (the input of fc2, H wide)
is used by nothing but fc2. It is found by running the model on an example batch, not by names, so
timm ViTs (``mlp.fc1/fc2``), Hugging Face BERT-style encoders (``intermediate.dense`` /
``output.dense``), CLIP (``c_fc``/``c_proj``), fused SwiGLU (``w12`` of 2H outputs, then ``w3``),
separate gate/up projections (LLaMA-style) and plain ``nn.Sequential`` MLPs (Brevitas
``QuantLinear`` included: it subclasses ``nn.Linear``) are all found by the same rules:

1. fc1 and fc2 are ``nn.Linear`` modules called once each and one right after the other (no
   other Linear runs between them); ``fc1.out_features`` is H or 2H (fused GLU) with
   ``H = fc2.in_features``. A Linear called just before fc1 on the *same input tensor* with the same
   width is a gate partner and is sliced with fc1.
2. **Exclusive**: perturbing fc1's output while pinning fc2's input to its clean value leaves
   the model output unchanged (the hidden tensor feeds nothing else: rejects residual streams).
3. **Token-local**: perturbing one position (sample 0, token 0) of fc1's output changes fc2's
   input at that position only (rejects attention, which mixes tokens).
4. **Channel-local**: the same perturbation on channel j changes channel j only (j and j+H for
   fused GLU); when it does not, the block is accepted only if a norm with H-sized parameters
   runs between fc1 and fc2 (EVA ``ffn_ln`` / ``subln``), which is then sliced too.
5. **Sliceable**: removing one neuron (trial, restored afterwards) leaves a model that still runs
   and gives outputs of the same shapes.

Slicing writes new ``.data`` into the existing parameters (so Brevitas quantisers that track the
weight parameter keep tracking it) and updates ``in_features``/``out_features``/``num_features``/
``normalized_shape``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hwkit.errors import UnsupportedLayerError


@dataclass(frozen=True)
class MlpBlock:
    """One MLP whose hidden neurons can be pruned."""

    fc1: tuple[str, ...]
    """Module names of the layers producing the hidden tensor (fc1, plus a gate partner if any)."""
    fc2: str
    """Module name of the layer consuming it."""
    hidden: int
    """Hidden width H (fc2.in_features) when found."""
    fused_glu: bool
    """fc1 outputs 2H: rows j and j+H are the two halves of neuron j."""
    norms: tuple[str, ...] = ()
    """Modules between fc1 and fc2 with H-sized parameters or buffers (sliced with the block)."""

    @property
    def name(self) -> str:
        """The common prefix of fc1 and fc2 (e.g. ``blocks.3.mlp``), or ``fc1->fc2`` when there is none."""
        a, b = self.fc1[-1].split("."), self.fc2.split(".")
        common = []
        for x, y in zip(a, b):
            if x != y:
                break
            common.append(x)
        return ".".join(common) if common else f"{self.fc1[-1]}->{self.fc2}"


def call_model(model: Any, x: Any) -> Any:
    """Run ``model`` on ``x`` (a tensor, a tuple of positional inputs, or a dict of keyword inputs)."""
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, tuple):
        return model(*x)
    return model(x)


def flat_tensors(out: Any) -> list[Any]:
    """Every tensor in a model output (a tensor, tuple/list, dict or Hugging Face ModelOutput)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flat_tensors(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in flat_tensors(v)]
    return []


def _first(inp: Any) -> Any:
    return inp[0] if isinstance(inp, tuple) else inp


def _trace(model: Any, x: Any) -> tuple[list[str], dict[str, tuple[int, int]], dict[str, Any], dict[str, Any]]:
    """Linear call order, each module's (start, end) event index, Linear inputs and outputs."""
    import torch
    from torch import nn

    clock = [0]
    span: dict[str, list[int]] = {}
    calls: dict[str, int] = {}
    order: list[str] = []
    ins: dict[str, Any] = {}
    outs: dict[str, Any] = {}
    handles = []

    def pre(name: str, is_lin: bool) -> Callable[[Any, Any], None]:
        def hook(_m: Any, inp: Any) -> None:
            clock[0] += 1
            span.setdefault(name, [clock[0], 0])[0] = clock[0]
            if is_lin:
                calls[name] = calls.get(name, 0) + 1
                order.append(name)
                ins[name] = _first(inp)
        return hook

    def post(name: str, is_lin: bool) -> Callable[[Any, Any, Any], None]:
        def hook(_m: Any, _inp: Any, out: Any) -> None:
            clock[0] += 1
            span[name][1] = clock[0]
            if is_lin:
                outs[name] = out
        return hook

    for name, m in model.named_modules():
        if not name:
            continue
        lin = isinstance(m, nn.Linear)
        handles.append(m.register_forward_pre_hook(pre(name, lin)))
        handles.append(m.register_forward_hook(post(name, lin)))
    try:
        with torch.no_grad():
            call_model(model, x)
    finally:
        for h in handles:
            h.remove()
    once = [n for n in order if calls[n] == 1]
    return once, {k: (v[0], v[1]) for k, v in span.items()}, ins, outs


@contextlib.contextmanager
def _hooks(model: Any, fwd: dict[str, Any] | None = None, pre: dict[str, Any] | None = None) -> Iterator[None]:
    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_hook(f) for n, f in (fwd or {}).items()]
    handles += [mods[n].register_forward_pre_hook(f) for n, f in (pre or {}).items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _candidates(model: Any, order: Sequence[str], span: dict[str, tuple[int, int]], mods: dict[str, Any],
                ins: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], str, int, bool, tuple[str, ...], Any]]:
    """Each adjacent Linear pair (in call ``order``) shaped like an MLP block, before any exclusiveness check:
    (fc1 group, fc2, hidden width, fused GLU, hidden norms, fc2's input activation from ``ins``)."""
    import torch
    from torch import nn

    for k in range(1, len(order)):
        f1, f2 = order[k - 1], order[k]
        m1, m2 = mods[f1], mods[f2]
        hidden = m2.in_features
        if m1.out_features not in (hidden, 2 * hidden) or hidden < 2:
            continue
        a = ins.get(f2)
        if not isinstance(a, torch.Tensor) or a.shape[-1] != hidden or a.ndim < 2 or a.shape[0] < 2:
            continue
        glu = m1.out_features == 2 * hidden
        group: tuple[str, ...] = (f1,)
        if k >= 2:
            g = order[k - 2]
            mg = mods[g]
            if (isinstance(mg, nn.Linear) and mg.out_features == m1.out_features and not glu
                    and ins.get(g) is ins.get(f1)):
                group = (g, f1)
        start = span[group[0]][1]
        between = [n for n, (s, e) in span.items() if s > start and e < span[f2][0] and n not in group]
        yield group, f2, hidden, glu, _hidden_norms(model, between, hidden), a


def _hidden_norms(model: Any, between: Sequence[str], hidden: int) -> tuple[str, ...]:
    from torch import nn

    mods = dict(model.named_modules())
    out = []
    for n in between:
        m = mods[n]
        if isinstance(m, nn.Linear):
            continue
        tensors = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
        if any(t.ndim >= 1 and t.shape[0] == hidden for t in tensors):
            out.append(n)
    return tuple(out)


def _perturbed_fc2_input(model: Any, x: Any, fc1: Sequence[str], fc2: str, edit: Any) -> Any:
    """fc2's input when ``edit(out) -> out`` is applied to every fc1 output."""
    import torch

    got: dict[str, Any] = {}

    def fwd(_m: Any, _i: Any, out: Any) -> Any:
        return edit(out)

    def cap(_m: Any, inp: Any) -> None:
        got["a"] = _first(inp).detach().clone()

    with _hooks(model, {n: fwd for n in fc1}, {fc2: cap}), torch.no_grad():
        call_model(model, x)
    return got["a"]


def _check_candidate(model: Any, x: Any, fc1: tuple[str, ...], fc2: str, hidden: int, glu: bool,
                     clean_out: list[Any], clean_a: Any, norms: tuple[str, ...]) -> bool:
    import torch

    gen = torch.Generator().manual_seed(0)
    big = 1e3 * (1.0 + float(clean_a.abs().max()))
    # 2. exclusive: noise on fc1's output, fc2's input pinned -> model output unchanged
    opaque = []

    def noisy(out: Any) -> Any:
        if not isinstance(out, torch.Tensor):  # e.g. a Brevitas QuantTensor: cannot be perturbed, not a block
            opaque.append(out)
            return out
        return out + torch.randn(out.shape, generator=gen, dtype=out.dtype) * big

    def pin(_m: Any, inp: Any) -> Any:
        return (clean_a.clone(), *inp[1:]) if isinstance(inp, tuple) else clean_a.clone()

    mods = dict(model.named_modules())
    with _hooks(model, {n: (lambda _m, _i, o: noisy(o)) for n in fc1}, {fc2: pin}), torch.no_grad():
        out = flat_tensors(call_model(model, x))
    if opaque or len(out) != len(clean_out) or not all(torch.equal(a, b) for a, b in zip(out, clean_out)):
        return False
    # 3./4. token- and channel-locality, and that fc1 feeds fc2 at all
    width = mods[fc1[-1]].out_features
    depends = False
    # Channels poked: the ends plus a few spread between them. In a quantised MLP a single channel can be
    # dead (a BatchNorm scale near 0, or a 2-bit activation pinned at a rail), so two probes can both miss.
    probes = {0, width - 1, *((hidden,) if glu else ()), *(round(k * (width - 1) / 7) for k in range(1, 7))}
    for j in sorted(probes):
        for sign in (1.0, -1.0):
            def poke(out: Any, j: int = j, sign: float = sign) -> Any:
                out = out.clone()
                out[(0,) * (out.ndim - 1) + (j,)] += sign * big
                return out

            diff = (_perturbed_fc2_input(model, x, fc1, fc2, poke) != clean_a).reshape(-1, hidden)
            if not diff.any():
                continue
            depends = True
            rows = diff.any(dim=1).nonzero().flatten().tolist()
            if rows != [0]:
                return False  # another sample or token changed: not token-local
            chans = diff[0].nonzero().flatten().tolist()
            if chans != [j % hidden] and not norms:
                return False
    return depends


def _trial_slice(model: Any, block: MlpBlock, x: Any, clean_out: list[Any]) -> bool:
    return _trial_slice_all(model, [block], x, clean_out)


def find_mlp_blocks_reference(model: Any, example: Any) -> list[MlpBlock]:
    """The prunable MLP blocks by perturbation: about 20 forward passes per candidate (the reference for
    :func:`find_mlp_blocks`, which traces once; see the module docstring for the rules).

    ``example`` is a small batch (at least 2 samples) the model accepts; the model should be in eval mode.
    """
    import torch

    order, span, ins, outs = _trace(model, example)
    mods = dict(model.named_modules())
    with torch.no_grad():
        clean_out = [t.detach().clone() for t in flat_tensors(call_model(model, example))]
    blocks: list[MlpBlock] = []
    for group, f2, hidden, glu, norms, a in _candidates(model, order, span, mods, ins):
        clean_a = a.detach().clone()
        if not _check_candidate(model, example, group, f2, hidden, glu, clean_out, clean_a, norms):
            continue
        block = MlpBlock(group, f2, hidden, glu, norms)
        if _trial_slice(model, block, example, clean_out):
            blocks.append(block)
    del outs
    return blocks


def small_batch(x: Any, n: int) -> Any:
    """The first ``n`` samples of an input (a tensor, a tuple of tensors or a dict of tensors)."""
    if isinstance(x, dict):
        return {k: v[:n] for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(t[:n] for t in x)
    return x[:n]


def _trace_spans(model: Any, x: Any) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """Each named module's (start, end) event index in one forward (its last call) and its number of calls."""
    import torch

    clock = [0]
    span: dict[str, list[int]] = {}
    calls: dict[str, int] = {}
    handles = []

    def pre(name: str) -> Callable[[Any, Any], None]:
        def hook(_m: Any, _i: Any) -> None:
            clock[0] += 1
            span[name] = [clock[0], 0]
            calls[name] = calls.get(name, 0) + 1
        return hook

    def post(name: str) -> Callable[[Any, Any, Any], None]:
        def hook(_m: Any, _i: Any, _o: Any) -> None:
            clock[0] += 1
            span[name][1] = clock[0]
        return hook

    for name, m in model.named_modules():
        if name:
            handles += [m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name))]
    try:
        with torch.no_grad():
            call_model(model, x)
    finally:
        for h in handles:
            h.remove()
    return {k: (v[0], v[1]) for k, v in span.items()}, calls


def _reachable(roots: Sequence[Any], blocked: Any, targets: set[Any]) -> bool:
    """Whether an autograd node in ``targets`` is reachable from ``roots`` without passing ``blocked``."""
    seen: set[Any] = set()
    stack = [r for r in roots if r is not None and r is not blocked]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in targets:
            return True
        for nxt, _ in node.next_functions:
            if nxt is not None and nxt is not blocked and nxt not in seen:
                stack.append(nxt)
    return False


def _graph_checks(fc1: tuple[str, ...], fc2: str, hidden: int, glu: bool, norms: tuple[str, ...],
                  graph: dict[str, Any], roots: Sequence[Any]) -> bool | None:
    """Checks 2-4 from the autograd graph of one traced forward (None: the graph cannot tell).

    2. exclusive: no fc1 output node is reachable from the model outputs once fc2's node is blocked;
    3./4. locality: d a[0, j] / d fc1 is non-zero only at position 0 and channel j (j + H for a fused GLU) for
    probed channels j of fc2's input a, which must depend on fc1 for at least one of them."""
    import torch

    outs = [graph["out"][n] for n in fc1]
    nodes = [graph["out_fn"][n] for n in fc1]
    a, blocked = graph["in"][fc2], graph["out_fn"][fc2]
    if any(t is None or not t.requires_grad for t in outs) or any(n is None for n in nodes) or blocked is None:
        return None
    if a is None or not a.requires_grad:
        return None
    if _reachable(roots, blocked, set(nodes)):
        return False
    flat = a.reshape(-1, hidden)
    probes = sorted({0, hidden - 1, *(round(k * (hidden - 1) / 7) for k in range(1, 7))})
    depends = False
    for j in probes:
        grads = torch.autograd.grad(flat[0, j], outs, retain_graph=True, allow_unused=True)
        for t, g in zip(outs, grads):
            if g is None:
                continue
            nz = (g.reshape(-1, t.shape[-1]) != 0)
            if not nz.any():
                continue
            depends = True
            if nz.any(dim=1).nonzero().flatten().tolist() != [0]:
                return False
            chans = nz[0].nonzero().flatten().tolist()
            allowed = {j, j + hidden} if glu and t.shape[-1] == 2 * hidden else {j}
            if not set(chans) <= allowed and not norms:
                return False
    return depends


def find_mlp_blocks(model: Any, example: Any) -> list[MlpBlock]:
    """The prunable MLP blocks of ``model`` in forward order (see the module docstring for the rules).

    ``example`` is a small batch (at least 2 samples) the model accepts; the model should be in eval mode.
    One forward with autograd records every Linear's input and output; exclusiveness and token/channel
    locality are read from the autograd graph (a graph walk and one small local gradient per probed
    channel), then confirmed numerically on all accepted blocks at once (noise on every fc1 output with every
    fc2 input pinned leaves the outputs unchanged; all blocks sliced by one neuron still run). A candidate
    the graph cannot judge, or a failed joint confirmation, falls back to the per-candidate perturbation
    checks of :func:`find_mlp_blocks_reference`.
    """
    import torch

    order, span, _ins, _outs = _trace(model, example)
    mods = dict(model.named_modules())
    graph: dict[str, dict[str, Any]] = {"in": {}, "out": {}, "out_fn": {}}
    names = set(order)

    def pre(n: str) -> Callable[[Any, Any], None]:
        def hook(_m: Any, inp: Any) -> None:
            graph["in"][n] = _first(inp) if isinstance(_first(inp), torch.Tensor) else None
        return hook

    def post(n: str) -> Callable[[Any, Any, Any], None]:
        def hook(_m: Any, _i: Any, out: Any) -> None:
            ok = isinstance(out, torch.Tensor)
            graph["out"][n] = out if ok else None
            graph["out_fn"][n] = out.grad_fn if ok else None
        return hook

    handles = [h for n in names for h in (mods[n].register_forward_pre_hook(pre(n)),
                                          mods[n].register_forward_hook(post(n)))]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad():
            out = flat_tensors(call_model(model, example))
        roots = [t.grad_fn for t in out if t.requires_grad]
        clean_out = [t.detach().clone() for t in out]
        pending: list[tuple[MlpBlock, Any]] = []
        fallback: list[tuple[MlpBlock, Any]] = []
        for group, f2, hidden, glu, norms, a in _candidates(model, order, span, mods, graph["in"]):
            block = MlpBlock(group, f2, hidden, glu, norms)
            verdict = _graph_checks(group, f2, hidden, glu, norms, graph, roots)
            if verdict is None:
                fallback.append((block, a.detach().clone()))
            elif verdict:
                pending.append((block, a.detach().clone()))
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
        graph.clear()
    del out
    if pending and not _joint_exclusive(model, example, pending, clean_out):
        fallback += pending
        pending = []
    for block, clean_a in fallback:
        if _check_candidate(model, example, block.fc1, block.fc2, block.hidden, block.fused_glu, clean_out, clean_a,
                            block.norms):
            pending.append((block, clean_a))
    found = [b for b, _ in pending]
    if found and not _trial_slice_all(model, found, example, clean_out):
        found = [b for b in found if _trial_slice(model, b, example, clean_out)]
    return sorted(found, key=lambda b: order.index(b.fc2))


def _joint_exclusive(model: Any, x: Any, blocks: Sequence[tuple[MlpBlock, Any]], clean_out: list[Any]) -> bool:
    """Large noise on every block's fc1 outputs with every fc2 input pinned to its clean value: outputs unchanged."""
    import torch

    gen = torch.Generator().manual_seed(0)
    fwd, pre = {}, {}
    for b, clean_a in blocks:
        big = 1e3 * (1.0 + float(clean_a.abs().max()))

        def noisy(_m: Any, _i: Any, o: Any, big: float = big) -> Any:
            return o + torch.randn(o.shape, generator=gen, dtype=o.dtype) * big

        def pin(_m: Any, inp: Any, clean_a: Any = clean_a) -> Any:
            return (clean_a.clone(), *inp[1:]) if isinstance(inp, tuple) else clean_a.clone()

        for n in b.fc1:
            fwd[n] = noisy
        pre[b.fc2] = pin
    with _hooks(model, fwd, pre), torch.no_grad():
        out = flat_tensors(call_model(model, x))
    return len(out) == len(clean_out) and all(torch.equal(a, b) for a, b in zip(out, clean_out))


def _trial_slice_all(model: Any, blocks: Sequence[MlpBlock], x: Any, clean_out: list[Any]) -> bool:
    """Every block one neuron narrower at once (restored afterwards): the model runs, same output shapes."""
    import torch

    sl = Slicer(model, blocks)
    try:
        for i, b in enumerate(blocks):
            sl.set(i, torch.arange(1, b.hidden))
        with torch.no_grad():
            out = flat_tensors(call_model(model, x))
        return len(out) == len(clean_out) and all(a.shape == b.shape for a, b in zip(out, clean_out))
    except (RuntimeError, ValueError, IndexError):
        return False
    finally:
        sl.restore()


# ---------------------------------------------------------------------------------------------- slicing

class Slicer:
    """Sets the hidden width of every block of a model from copies of its original full tensors.

    A Linear can be fc2 of one block and fc1 of the next (plain MLP stacks), so rows and columns are
    sliced from the original tensors together: the result never depends on the order of the calls.
    """

    def __init__(self, model: Any, blocks: Sequence[MlpBlock]) -> None:
        import torch

        self.model = model
        self.blocks = list(blocks)
        self.mods = dict(model.named_modules())
        self.keep = [torch.arange(b.hidden) for b in self.blocks]
        self.rows: dict[str, int] = {}
        self.cols: dict[str, int] = {}
        self.norm: dict[str, int] = {}
        for i, b in enumerate(self.blocks):
            for n in b.fc1:
                self.rows[n] = i
            self.cols[b.fc2] = i
            for n in b.norms:
                self.norm[n] = i
        self.full: dict[str, dict[str, Any]] = {}
        for n in {*self.rows, *self.cols, *self.norm}:
            m = self.mods[n]
            pairs = [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
            self.full[n] = {k: v.detach().clone() for k, v in pairs if v is not None}

    def set(self, i: int, keep: Any) -> None:
        """Block ``i`` keeps the hidden neurons ``keep`` (indices into its full width, in this order)."""
        import torch

        keep = torch.as_tensor(keep, dtype=torch.long)
        if keep.numel() < 1:
            raise UnsupportedLayerError(f"block {self.blocks[i].name}: cannot prune to 0 neurons")
        self.keep[i] = keep
        b = self.blocks[i]
        for n in {*b.fc1, b.fc2, *b.norms}:
            self._apply(n)

    def _row_idx(self, n: str) -> Any:
        import torch

        b = self.blocks[self.rows[n]]
        k = self.keep[self.rows[n]]
        return torch.cat([k, k + b.hidden]) if b.fused_glu else k

    def _apply(self, n: str) -> None:
        m, full = self.mods[n], self.full[n]
        if n in self.rows or n in self.cols:
            w = full["weight"]
            if n in self.rows:
                w = w[self._row_idx(n)]
                if "bias" in full:
                    m.bias.data = full["bias"][self._row_idx(n)]  # indexing copies
                m.out_features = w.shape[0]
            if n in self.cols:
                w = w[:, self.keep[self.cols[n]]]
                m.in_features = w.shape[1]
            m.weight.data = w if w is not full["weight"] else w.clone()
        if n in self.norm:
            i = self.norm[n]
            k, h = self.keep[i], self.blocks[i].hidden
            for key, t in full.items():
                if t.ndim >= 1 and t.shape[0] == h:
                    getattr(m, key).data = t[k]  # indexing copies
            if hasattr(m, "num_features"):
                m.num_features = len(k)
            if hasattr(m, "normalized_shape"):
                m.normalized_shape = (len(k),)

    def restore(self) -> None:
        """Every block back to full width in the original order."""
        import torch

        for i, b in enumerate(self.blocks):
            self.set(i, torch.arange(b.hidden))


def width(model: Any, block: MlpBlock) -> int:
    """The block's current hidden width."""
    return int(dict(model.named_modules())[block.fc2].in_features)


def prune_blocks(model: Any, blocks: Sequence[MlpBlock], keep: Sequence[Any]) -> Any:
    """A pruned deep copy of ``model``: block i keeps neurons ``keep[i]`` (the input is untouched)."""
    import copy

    out = copy.deepcopy(model)
    sl = Slicer(out, blocks)
    for i, k in enumerate(keep):
        sl.set(i, k)
    return out


@contextlib.contextmanager
def masked(model: Any, blocks: Sequence[MlpBlock], keep: Sequence[Any]) -> Iterator[Any]:
    """``model`` with the hidden neurons outside ``keep`` zeroed at fc2's input (for comparisons)."""
    import torch

    def mask_hook(idx: Any, h: int) -> Callable[[Any, Any], Any]:
        mask = torch.zeros(h)
        mask[torch.as_tensor(idx, dtype=torch.long)] = 1.0

        def hook(_m: Any, inp: Any) -> Any:
            a = _first(inp)
            return (a * mask.to(a.dtype), *inp[1:]) if isinstance(inp, tuple) else a * mask.to(a.dtype)
        return hook

    with _hooks(model, pre={b.fc2: mask_hook(k, b.hidden) for b, k in zip(blocks, keep)}):
        yield model
