"""Label-free training of shift and mult/shift MoE models by distillation against a teacher (docs/shiftadd.md).

``shift.finetune`` and ``shift_moe.train`` fine-tune classifiers with cross-entropy on labelled inputs. A
pretrained encoder has no task loss, so :func:`distill` takes the objective as a function of (model, batch):
the caller compares the student's outputs (embeddings, hidden states) with targets from the float teacher.
When the model holds :mod:`hwkit.compress.shiftadd.moe` layers, their latency-aware balancing losses are added with
weight ``coef`` (``MoEConfig.coef``), as in ``shift_moe.train``. The balancing losses and token shares are taken
with forward hooks, so a model whose forward calls a MoE layer several times (one call per sentence or per
packed chunk) is trained and measured on all its tokens, not only on the last call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hwkit.compress.shiftadd import moe as shift_moe
from hwkit.errors import InputError


@dataclass(frozen=True)
class DistillConfig:
    """Distillation schedule: RAdam with a cosine learning rate over ``epochs``, shuffled batches of ``batch_size``
    items (``seed``); ``coef`` weighs the summed MoE balancing losses (no effect on a model without MoE layers)."""

    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 16
    coef: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1 or self.coef < 0:
            raise InputError("distillation needs epochs >= 0, lr > 0, batch_size >= 1 and coef >= 0")


class RouteMeter:
    """Context manager: hooks every MoE layer of ``model`` and accumulates, over all its forward calls, the tokens
    routed to the shift expert and (in training) the balancing losses."""

    def __init__(self, model: Any) -> None:
        self.layers = {n: m for n, m in model.named_modules() if shift_moe.is_moe(m)}
        self.tokens = dict.fromkeys(self.layers, 0)
        self.shift_tokens = dict.fromkeys(self.layers, 0.0)
        self.aux: list[Any] = []
        self._hooks: list[Any] = []

    def _hook(self, name: str) -> Any:
        def hook(m: Any, inputs: Any, _out: Any) -> None:
            x = inputs[0]
            n = x.numel() // x.shape[-1]
            self.tokens[name] += n
            self.shift_tokens[name] += m.shift_share * n
            if m.training and m.aux_loss is not None:
                self.aux.append(m.aux_loss)
                m.aux_loss = None
        return hook

    def __enter__(self) -> RouteMeter:
        self._hooks = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]
        return self

    def __exit__(self, *_exc: Any) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def take_balance(self) -> Any:
        """Sum of the balancing losses collected since the last call (0.0 when none)."""
        out = sum(self.aux) if self.aux else 0.0
        self.aux = []
        return out

    def shares(self) -> dict[str, float]:
        """Token-weighted shift share per MoE layer over everything measured so far."""
        return {n: self.shift_tokens[n] / self.tokens[n] if self.tokens[n] else 0.0 for n in self.layers}


def distill(model: Any, items: Any, loss_fn: Callable[[Any, Any], Any], cfg: DistillConfig) -> list[dict[str, Any]]:
    """Train the trainable parameters of ``model`` on shuffled batches of ``items`` (a tensor: indices or inputs).

    The loss of a batch is ``loss_fn(model, batch) + cfg.coef * (sum of the MoE balancing losses of its forward
    calls)``. Returns per epoch the mean task and balancing losses and the noisy training-time shift share of each
    MoE layer (token-weighted). Leaves the model in eval mode with no balancing-loss graph attached.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("distill: the model has no trainable parameter")
    opt = torch.optim.RAdam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.epochs, 1))
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # router noise
    hist: list[dict[str, Any]] = []
    try:
        for _ in range(cfg.epochs):
            model.train()
            order = items[torch.randperm(len(items), generator=g)]
            sums, seen = [0.0, 0.0], 0
            with RouteMeter(model) as meter:
                for start in range(0, len(order), cfg.batch_size):
                    batch = order[start:start + cfg.batch_size]
                    opt.zero_grad()
                    task = loss_fn(model, batch)
                    bal = meter.take_balance()
                    (task + cfg.coef * bal).backward()
                    opt.step()
                    sums[0] += float(task.detach()) * len(batch)
                    sums[1] += float(bal.detach() if torch.is_tensor(bal) else bal) * len(batch)
                    seen += len(batch)
            sched.step()
            hist.append({"task_loss": sums[0] / max(seen, 1), "balance_loss": sums[1] / max(seen, 1),
                         "train_shift_share": meter.shares()})
    finally:
        for m in model.modules():
            if shift_moe.is_moe(m):
                m.aux_loss = None  # drop the graph (keeps the model deep-copyable)
        model.eval()
    return hist


def token_shares(model: Any, run: Callable[[], Any]) -> dict[str, float]:
    """Run ``run()`` (forward passes of ``model`` in eval mode) and return the token-weighted arg-max shift share
    of each MoE layer over all its calls; also stores it in each layer's ``shift_share`` (read by
    ``opcost.model_ops`` for the energy estimate)."""
    import torch

    model.eval()
    with RouteMeter(model) as meter, torch.no_grad():
        run()
    out = meter.shares()
    for n, s in out.items():
        meter.layers[n].shift_share = s
    return out
