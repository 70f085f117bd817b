"""Analytical operation counts and energy of dense, shift and binary-coded (LUT) linear and conv layers.

Energy per operation (45 nm, 0.9 V): Horowitz, "Computing's energy problem", ISSCC 2014 — fp32 mult 3.7 pJ,
fp32 add 0.9 pJ, int32 add 0.1 pJ, int8 add 0.03 pJ, int32 mult 3.1 pJ, int8 mult 0.2 pJ. Horowitz gives no shift
energy: the shift (0.1 pJ, the same as an int32 add) and LUT query (0.37 pJ) costs are the unit costs of ShiftAddLLM's
``energy/hw_utils.py::get_unit_energy`` — [UNCONFIRMED]: not measured, not from Horowitz. Memory traffic is not
counted (compute only), so the numbers are labelled ``analytical-estimate``.

Counting rules (per sample, i.e. per token/row of the input):

* dense Linear N x K: N*K fp32 mults, N*(K-1) fp32 adds (+N for the bias);
* shift Linear (DeepShift, activations in 32-bit fixed point): one shift per *non-zero* weight, and the
  accumulation of those terms plus the bias as int32 adds (the sign is an add/subtract choice);
* Conv2d (dense or shift): the Linear rule per output position, with ``N`` = output channels and ``K`` =
  ``in_channels / groups * kh * kw`` (a shift conv: one shift per non-zero weight of each output channel and
  int adds, per output position); the output spatial size comes from a forward hook on one sample input;
* mixture of experts (ShiftAddViT): the mult and shift expert counts weighted by the measured token shares,
  plus the router (a dense Linear to 2 logits) and one compare;
* binary-coded Linear, q bits, LUT-GEMV with mu = 8 (ShiftAddLLM): per 8-input chunk a 256-entry LUT of signed
  sums built incrementally (256 fp32 adds, shared by all rows and bits); per row, bit and chunk one LUT query
  and one fp32 add; each scale (one per bit, row group and chunk) applied as ``apot_terms`` shifts and
  ``apot_terms - 1`` adds (with float scales: one fp32 mult instead); + the bias.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

LABEL = "analytical-estimate"


@dataclass(frozen=True)
class EnergyTable:
    """Energy per operation in picojoules."""

    fp32_mult_pj: float = 3.7
    fp32_add_pj: float = 0.9
    int32_add_pj: float = 0.1
    int8_add_pj: float = 0.03
    int32_mult_pj: float = 3.1
    int8_mult_pj: float = 0.2
    shift_pj: float = 0.1
    """[UNCONFIRMED] ShiftAddLLM hw_utils unit cost (Horowitz has no shift entry)."""
    lut_query_pj: float = 0.37
    """[UNCONFIRMED] ShiftAddLLM hw_utils unit cost."""
    node: str = "45 nm (Horowitz ISSCC 2014; shift and LUT costs from ShiftAddLLM energy/hw_utils.py)"


@dataclass(frozen=True)
class OpCounts:
    """Operations of one forward pass per sample, by type."""

    fp_mult: int = 0
    fp_add: int = 0
    int_add: int = 0
    shift: int = 0
    lut_query: int = 0

    def __add__(self, o: OpCounts) -> OpCounts:
        return OpCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(o).values())))

    def energy_pj(self, t: EnergyTable | None = None) -> float:
        """Compute energy in pJ under table ``t`` (int adds priced as int32)."""
        t = t or EnergyTable()
        return (self.fp_mult * t.fp32_mult_pj + self.fp_add * t.fp32_add_pj + self.int_add * t.int32_add_pj
                + self.shift * t.shift_pj + self.lut_query * t.lut_query_pj)


def dense_ops(n_out: int, n_in: int, bias: bool) -> OpCounts:
    """A float Linear."""
    return OpCounts(fp_mult=n_out * n_in, fp_add=n_out * (n_in - 1) + (n_out if bias else 0))


def shift_ops(nonzero_per_row: Any, bias: bool) -> OpCounts:
    """A shift Linear given the number of non-zero weights in each output row."""
    nz = [int(v) for v in nonzero_per_row]
    adds = sum(max(v - 1, 0) for v in nz) + (len(nz) if bias else 0)
    return OpCounts(shift=sum(nz), int_add=adds)


def lut_ops(n_out: int, n_in: int, bits: int, bias: bool, apot_terms: int | None,
            mu: int = 8) -> OpCounts:
    """A binary-coded Linear run as LUT-GEMV (``apot_terms`` None: float scales)."""
    chunks = -(-n_in // mu)
    build = chunks * (2 ** mu)
    queries = n_out * bits * chunks
    # each row accumulates its per-chunk, per-bit partial sums; a scale is applied once per (row, bit, chunk)
    # since the rows of a group share the scale but not the partial sum.
    scale_apps = n_out * bits * chunks
    if apot_terms is None:
        return OpCounts(fp_mult=scale_apps, fp_add=build + queries + (n_out if bias else 0),
                        lut_query=queries)
    return OpCounts(shift=scale_apps * apot_terms,
                    fp_add=build + queries + scale_apps * (apot_terms - 1) + (n_out if bias else 0),
                    lut_query=queries)


def scaled(c: OpCounts, f: float) -> OpCounts:
    """Expected counts when a layer runs on a fraction ``f`` of the tokens (rounded)."""
    return OpCounts(*(round(v * f) for v in asdict(c).values()))


def _is_conv(m: Any) -> bool:
    from torch import nn

    from hwkit.compress.shiftadd import shift

    return isinstance(m, nn.Conv2d) or shift.is_shift_conv(m)


def conv_positions(model: Any, sample: Any) -> dict[str, int]:
    """Output positions (H_out * W_out) of each Conv2d / ShiftConv2d, from one eval-mode forward pass of
    ``sample[:1]`` with forward hooks; {} (and no forward pass) for a model without conv layers."""
    from hwkit.compress.hooks import run_hooked
    from hwkit.compress.shiftadd import moe as shift_moe
    from hwkit.errors import InputError

    convs = [(n, m) for n, m in model.named_modules() if _is_conv(m)]
    if not convs:
        return {}
    if sample is None:
        raise InputError("counting the operations of Conv2d layers needs a sample input")
    seen: dict[str, int] = {}

    def keep(name: str) -> Any:
        return lambda _m, _i, o: seen.__setitem__(name, int(o.shape[-2]) * int(o.shape[-1]))

    shares = {m: m.shift_share for m in model.modules() if shift_moe.is_moe(m)}  # a forward pass overwrites them
    was_training = model.training
    try:
        run_hooked(model.eval(), sample[:1], [(m, keep(n)) for n, m in convs])
    finally:
        model.train(was_training)
        for m, v in shares.items():
            m.shift_share = v
    return seen


def model_ops(model: Any, sample: Any = None) -> dict[str, OpCounts]:
    """Per-layer operation counts of a model holding nn.Linear, nn.Conv2d, ShiftLinear, ShiftConv2d and BCQLinear
    layers. ``sample`` (an input batch; only its first row is run) is needed when the model has conv layers."""
    from torch import nn

    from hwkit.compress.shiftadd import bcq, shift
    from hwkit.compress.shiftadd import moe as shift_moe

    positions = conv_positions(model, sample)
    out: dict[str, OpCounts] = {}
    inside: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if shift_moe.is_moe(m):
            inside.append(name)
            sign, _ = m.shift.codes()
            share = m.shift_share
            out[name] = (scaled(dense_ops(m.out_features, m.in_features, m.mult.bias is not None), 1 - share)
                         + scaled(shift_ops((sign != 0).sum(dim=1).tolist(), m.mult.bias is not None), share)
                         + dense_ops(2, m.in_features, True) + OpCounts(fp_add=1))  # router + top-1 compare
        elif shift.is_shift(m):
            sign, _ = m.codes()
            ops = shift_ops((sign != 0).flatten(1).sum(dim=1).tolist(), m.bias is not None)
            out[name] = scaled(ops, positions[name]) if shift.is_shift_conv(m) else ops
        elif bcq.is_bcq(m):
            out[name] = lut_ops(m.out_features, m.in_features, m.bits, m.bias is not None,
                                m.apot_terms)
        elif isinstance(m, nn.Linear):
            out[name] = dense_ops(m.out_features, m.in_features, m.bias is not None)
        elif isinstance(m, nn.Conv2d):
            out[name] = scaled(dense_ops(m.out_channels, m.weight[0].numel(), m.bias is not None), positions[name])
    return out


def energy_report(dense: dict[str, OpCounts], reparam: dict[str, OpCounts],
                  table: EnergyTable | None = None) -> dict[str, Any]:
    """Energy of both models per sample and the saving, labelled as an analytical estimate."""
    t = table or EnergyTable()
    tot_d = sum(dense.values(), OpCounts())
    tot_r = sum(reparam.values(), OpCounts())
    e_d, e_r = tot_d.energy_pj(t), tot_r.energy_pj(t)
    return {
        "kind": LABEL,
        "scope": "compute of Linear/Conv2d layers only, per sample (no memory traffic, no activations/norms)",
        "table": asdict(t),
        "dense": {"ops": asdict(tot_d), "energy_pj": e_d},
        "reparameterised": {"ops": asdict(tot_r), "energy_pj": e_r},
        "saving": 1 - e_r / e_d if e_d else 0.0,
        "layers": {n: {"dense_pj": dense[n].energy_pj(t), "reparameterised_pj": reparam[n].energy_pj(t),
                       "ops": asdict(reparam[n])} for n in reparam if n in dense},
    }
