"""ShiftAddViT-style mixture of a multiplication expert and a shift expert per Linear layer (docs/shiftadd.md).

Each converted ``nn.Linear`` becomes a :class:`MoELinear`: a router ``Linear(d, 2)`` picks, per token, the
multiplication expert (0: the original Linear) or the shift expert (1: DeepShift PS converted from the same
weights). Choices versus the released ShiftAddViT code (``fmoe_new.py``/``engine.py``), as the reference notes:

* the router is trained (the release's NaiveGate gives it no gradient and its balance loss is disabled):
  [VERIFY] choice — by default it learns from the latency-aware balancing loss only, and the gate value is 1
  (so conversion keeps the model's function up to the shift error). ``router_task_grad=True`` adds a
  straight-through top-1 gate (value 1, gradient of the chosen expert's softmax probability); on the digits
  MLP that sent every token of a layer to one expert, whatever the balancing coefficient;
* the latency-aware load-balancing loss of ``NoisyGate_V2`` for top-1 with two experts:
  ``L = CV2(alpha * importance) + CV2(alpha * load)`` with importance = summed softmax of the clean logits,
  load = summed probability that each expert wins under Gaussian noise of std ``noise_std`` (the smooth
  estimator, here exact for two experts: Phi of the logit gap / (std * sqrt 2)), ``alpha`` = per-token latency
  of [mult, shift] (default [6, 4] from the release; the balance point is n_shift : n_mult = 3 : 2);
  total loss = task loss + ``coef`` (0.01) * sum over layers;
* measured limitation (not a bug: a property of the loss): the CV2 terms are met exactly by a *soft* balance
  (every token at p_shift ~ 0.6, i.e. the same logit gap), so the noisy training-time routing is balanced at
  the latency balance point while the deterministic (clean arg-max) routing used in evaluation sends all
  tokens of a layer to one expert. Both shares are reported; ``calibrate_routing`` (parameter
  ``route_share``) moves each router's arg-max threshold to a target share on the calibration split;
* outputs are combined with a plain select (``where``), not the release's log-space combine; both experts are
  evaluated on every token (a functional model for accuracy and export; the token share feeds the cost model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwkit.compress.shiftadd import shift
from hwkit.errors import InputError


@dataclass(frozen=True)
class MoEConfig:
    """Mixture-of-experts reparameterisation settings."""

    weight_bits: int = 5
    """Shift expert bits (DeepShift PS)."""
    latency_mult: float = 6.0
    """Relative per-token latency of the multiplication expert (alpha_0)."""
    latency_shift: float = 4.0
    """Relative per-token latency of the shift expert (alpha_1)."""
    noise_std: float = 0.5
    """Router noise std in training (NoisyGate_V2 uses 1/num_experts)."""
    coef: float = 0.01
    """Weight of the summed balancing losses."""
    router_task_grad: bool = False
    """Let the task loss reach the router through a straight-through gate (measured here: it drives every
    token to one expert); False: the router learns from the latency-aware balancing loss only."""

    def __post_init__(self) -> None:
        if self.latency_mult <= 0 or self.latency_shift <= 0 or self.noise_std <= 0 or self.coef < 0:
            raise InputError("moe needs positive latencies and noise_std, and coef >= 0")


def cv2(x: Any) -> Any:
    """Squared coefficient of variation ``Var(x) / (Mean(x)**2 + 1e-10)``."""
    return x.var(unbiased=False) / (x.mean() ** 2 + 1e-10)


def balance_loss(clean: Any, alpha: Any, noise_std: float) -> Any:
    """Latency-weighted importance + load CV2 for top-1 routing over two experts (logits [T, 2])."""
    import math

    import torch

    importance = alpha * torch.softmax(clean, dim=1).sum(0)
    gap = (clean[:, 1] - clean[:, 0]) / (noise_std * math.sqrt(2.0))
    p_shift = 0.5 * (1 + torch.erf(gap / math.sqrt(2.0)))
    load = alpha * torch.stack([(1 - p_shift).sum(), p_shift.sum()])
    return cv2(importance) + cv2(load)


class MoELinear(nn.Module):
    """Top-1 routed {mult, shift} experts replacing one Linear."""

    def __init__(self, lin: Any, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.mult = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None)
        self.mult.load_state_dict(lin.state_dict())
        scfg = shift.ShiftConfig("ps", cfg.weight_bits)
        self.shift = shift.make_shift_linear(lin.in_features, lin.out_features, lin.bias is not None, scfg)
        self.shift = type(self.shift).from_linear(lin, scfg)
        self.router = nn.Linear(lin.in_features, 2)
        nn.init.zeros_(self.router.weight)
        nn.init.zeros_(self.router.bias)
        self.register_buffer("alpha", torch.tensor([cfg.latency_mult, cfg.latency_shift]))
        self.shift_share = 0.0
        """Fraction of the tokens of the last eager forward pass routed to the shift expert."""
        self.aux_loss: Any = None

    def forward(self, x: Any) -> Any:
        shape = x.shape
        t = x.reshape(-1, shape[-1])
        clean = self.router(t)
        logits = clean + torch.randn_like(clean) * self.cfg.noise_std if self.training else clean
        choice = logits.argmax(dim=1)
        ym, ys = self.mult(t), self.shift(t)
        if self.training and torch.is_grad_enabled():
            if self.cfg.router_task_grad:
                g = torch.softmax(logits, dim=1).gather(1, choice[:, None])
                gate = 1 + g - g.detach()  # straight-through: value 1, gradient of the chosen probability
                ym, ys = ym * gate, ys * gate
            self.aux_loss = balance_loss(clean, self.alpha, self.cfg.noise_std)
        if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            self.shift_share = float(choice.float().mean()) if len(choice) else 0.0
        y = torch.where((choice == 1)[:, None], ys, ym)
        return y.reshape(*shape[:-1], self.out_features)


def is_moe(m: Any) -> bool:
    """True for a MoELinear module."""
    return isinstance(m, MoELinear)


def convert(model: Any, cfg: MoEConfig, skip: tuple[str, ...] = ()) -> Any:
    """Replace each plain nn.Linear (except ``skip``) by a MoELinear, in place."""
    from hwkit.compress.shiftadd.shift import _check_float, linear_names, set_module

    _check_float(model)
    names = linear_names(model, skip)
    if not names:
        raise InputError("the model has no nn.Linear layer to convert")
    cls = MoELinear
    for n in names:
        set_module(model, n, cls(model.get_submodule(n), cfg))
    return model


def train(model: Any, x: Any, y: Any, epochs: int, lr: float, coef: float, seed: int = 0) -> list[dict[str, Any]]:
    """Fine-tune experts and routers: cross-entropy + coef * sum of balancing losses (RAdam, cosine)."""
    import torch

    opt = torch.optim.RAdam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    hist: list[dict[str, Any]] = []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        task = bal = 0.0
        share = {n: 0.0 for n, m in model.named_modules() if is_moe(m)}
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            if len(idx) < 2:
                continue
            opt.zero_grad()
            ce = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            lb = sum(m.aux_loss for m in model.modules() if is_moe(m))
            (ce + coef * lb).backward()
            opt.step()
            task, bal = task + float(ce.detach()) * len(idx), bal + float(lb.detach()) * len(idx)
            for n in share:
                share[n] += model.get_submodule(n).shift_share * len(idx)
        sched.step()
        hist.append({"task_loss": task / len(x), "balance_loss": bal / len(x),
                     "train_shift_share": {n: v / len(x) for n, v in share.items()}})
    for m in model.modules():
        if is_moe(m):
            m.aux_loss = None  # drop the graph (keeps the model deep-copyable)
    model.eval()
    return hist


def shares(model: Any, x: Any) -> dict[str, float]:
    """Fraction of tokens each MoE layer sends to the shift expert on ``x`` (eval mode)."""
    import torch

    model.eval()
    with torch.no_grad():
        model(x)
    return {n: float(m.shift_share) for n, m in model.named_modules() if is_moe(m)}


def calibrate_routing(model: Any, x: Any, share: float) -> dict[str, float]:
    """Shift each router's bias so that its arg-max routing sends ``share`` of the tokens of ``x`` to the shift
    expert (layers in module order, each on the inputs it sees after the earlier ones were calibrated).

    The balancing loss is met by a *soft* balance (every token near the same logit gap), so the trained router
    ranks the tokens but its arg-max threshold sends all of them to one expert; this moves the threshold to the
    ``1 - share`` quantile of the gaps. Returns the share each layer reaches on ``x`` (ties can keep it off).
    """
    import torch

    if not 0 <= share <= 1:
        raise InputError(f"route share must be in [0, 1], got {share}")
    model.eval()
    out = {}
    for n, m in model.named_modules():
        if not is_moe(m):
            continue
        got: list[Any] = []
        h = m.register_forward_hook(lambda _m, i, _o, got=got: got.append(i[0].reshape(-1, i[0].shape[-1])))
        try:
            with torch.no_grad():
                model(x)
        finally:
            h.remove()
        with torch.no_grad():
            lg = m.router(torch.cat(got))
            gap = lg[:, 1] - lg[:, 0]
            if share >= 1:
                tau = float(gap.min()) - 1e-6
            elif share <= 0:
                tau = float(gap.max()) + 1e-6
            else:
                tau = float(torch.quantile(gap.double(), 1 - share))
            m.router.bias[1] -= tau
            out[n] = float(((gap - tau) > 0).float().mean())
    return out


def reparameterise(model: Any, data: Any, params: dict[str, Any], say: Any) -> tuple[Any, dict[str, Any]]:
    """Convert, train (``epochs``; labels needed for > 0) and report token shares per layer."""
    cfg = MoEConfig(weight_bits=int(params.get("weight_bits") or 5),
                    latency_mult=float(params.get("latency_mult") or 6.0),
                    latency_shift=float(params.get("latency_shift") or 4.0))
    convert(model, cfg)
    epochs = int(params.get("epochs") or 0)
    hist: list[dict[str, Any]] = []
    if epochs > 0:
        hist = train(model, data.calib_x, data.calib_y, epochs, float(params.get("lr") or 1e-3), cfg.coef,
                     int(params.get("seed") or 0))
        say(f"MoE trained {epochs} epochs: task loss {hist[0]['task_loss']:.4f} -> {hist[-1]['task_loss']:.4f}")
    calibrated = None
    if params.get("route_share") is not None:  # move the arg-max thresholds to this shift share (calib split)
        calibrated = calibrate_routing(model, data.calib_x, float(params["route_share"]))
        say("MoE routers calibrated to a shift share of " + ", ".join(f"{v:.2f}" for v in calibrated.values()))
    test_x = data.test_x if data.test_x is not None else data.val_x
    share = shares(model, test_x)
    return model, {"config": {"weight_bits": cfg.weight_bits, "latency": [cfg.latency_mult, cfg.latency_shift],
                              "noise_std": cfg.noise_std, "coef": cfg.coef},
                   "train": hist,
                   "layers": [{"name": n, "shift_token_share": s, "mult_token_share": 1 - s,
                               "train_shift_token_share": hist[-1]["train_shift_share"][n] if hist else None}
                              for n, s in share.items()],
                   "balance_point_shift_share": cfg.latency_mult / (cfg.latency_mult + cfg.latency_shift),
                   "calibrated_route_share": calibrated}
