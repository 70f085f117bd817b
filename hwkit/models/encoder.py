"""A small Brevitas-quantised transformer encoder shaped for finn-plus's attention layers.

Tokens -> QuantLinear embedding (+ learned positional encoding) -> ``layers`` x encoder block ->
flattened tokens -> QuantLinear head. An encoder block is post-norm, as finn-plus's transformer
examples are:

    x = norm1(x + MHA(x, x, x))        MHA: Brevitas QuantMultiheadAttention, separate q/k/v projections
    x = norm2(x + fc2(relu(fc1(x))))   FFN: QuantLinear -> QuantReLU -> QuantLinear

Every tensor finn-plus has to see as an integer is quantised: the inputs of both residual adds share
one quantiser (so the float scales can move past the add), the queries, keys, values, the softmax
input and the attention weights are quantised signed (finn-plus's attention layer takes signed
types), and each norm is followed by a QuantIdentity. ``norm`` chooses the normalisation:
``"batch"`` (BatchNorm over the embedding channels: streamlined into the next thresholds, the whole
graph stays integer) or ``"layer"`` (LayerNorm: finn-plus's LayerNorm HW layer, which computes in
float) or ``"none"``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _act(bits: int, signed: bool = True) -> Any:
    from brevitas.quant import Int8ActPerTensorFloat, Uint8ActPerTensorFloat

    base = Int8ActPerTensorFloat if signed else Uint8ActPerTensorFloat
    return base.let(bit_width=bits)


def _weight(bits: int, values: str = "int") -> Any:
    """Per-tensor signed ``bits``-bit weights: every integer (``"int"``) or powers of two on that grid
    (``"pow2"``: hwkit's ShiftAdd quantiser, exponents 0..bits-2, see hwkit.compress.shiftadd.finn)."""
    from brevitas.quant import Int8WeightPerTensorFloat

    if values == "pow2":
        from hwkit.compress.shiftadd.pow2 import Pow2IntScaling, Pow2RoundSte

        return Int8WeightPerTensorFloat.let(bit_width=bits, float_to_int_impl=Pow2RoundSte,
                                            int_scaling_impl=Pow2IntScaling)
    if values != "int":
        raise ValueError(f"weights must be 'int' or 'pow2', not {values!r}")
    return Int8WeightPerTensorFloat.let(bit_width=bits)


def _bias() -> Any:
    from brevitas.quant import Int16Bias

    return Int16Bias


def _qlinear(i: int, o: int, bits: int, quant_bias: bool = True) -> nn.Module:
    import brevitas.nn as qnn

    return qnn.QuantLinear(i, o, bias=True, weight_quant=_weight(bits), bias_quant=_bias() if quant_bias else None,
                           input_quant=None, output_quant=None, return_quant_tensor=quant_bias)


class TokenNorm(nn.Module):
    """BatchNorm1d over the last (channel) axis of a (batch, tokens, channels) tensor."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


def _norm(kind: str, dim: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "batch":
        return TokenNorm(dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'layer', 'batch' or 'none', not {kind!r}")


class Mlp(nn.Module):
    """The encoder block's feed-forward network (what AMP prunes).

    It passes plain tensors (float biases, no QuantTensor between its layers), so that AMP's tracing
    sees fc1 -> ReLU -> fc2; the exported graph is the same (the quantisers are there either way, and
    finn-plus absorbs the float biases into the next thresholds).
    """

    def __init__(self, dim: int, hidden: int, bits: int, weights: str = "int") -> None:
        super().__init__()
        import brevitas.nn as qnn

        self.fc1 = qnn.QuantLinear(dim, hidden, bias=True, weight_quant=_weight(bits, weights), bias_quant=None)
        self.act = qnn.QuantReLU(act_quant=_act(bits, signed=False))
        self.fc2 = qnn.QuantLinear(hidden, dim, bias=True, weight_quant=_weight(bits, weights), bias_quant=None)

    def forward(self, x: Any) -> Any:
        x = x.value if hasattr(x, "value") else x  # the quantised values (the graph keeps the quantiser)
        return self.fc2(self.act(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Post-norm transformer encoder block (see the module docstring)."""

    def __init__(self, dim: int, heads: int, hidden: int, bits: int, norm: str, weights: str = "int") -> None:
        super().__init__()
        import brevitas.nn as qnn

        self.attn = qnn.QuantMultiheadAttention(
            dim, heads, bias=True, batch_first=True, packed_in_proj=False,
            in_proj_input_quant=None, in_proj_weight_quant=_weight(bits, weights), in_proj_bias_quant=_bias(),
            softmax_input_quant=_act(bits), attn_output_weights_quant=_act(bits),
            q_scaled_quant=_act(bits), k_transposed_quant=_act(bits), v_quant=_act(bits),
            out_proj_input_quant=_act(bits), out_proj_weight_quant=_weight(bits, weights), out_proj_bias_quant=_bias(),
            out_proj_output_quant=None, return_quant_tensor=True)
        self.add1 = qnn.QuantEltwiseAdd(input_quant=_act(bits), output_quant=None, return_quant_tensor=True)
        self.norm1 = _norm(norm, dim)
        self.q1 = qnn.QuantIdentity(act_quant=_act(bits), return_quant_tensor=True)
        self.mlp = Mlp(dim, hidden, bits, weights)
        self.add2 = qnn.QuantEltwiseAdd(input_quant=_act(bits), output_quant=None, return_quant_tensor=True)
        self.norm2 = _norm(norm, dim)
        self.q2 = qnn.QuantIdentity(act_quant=_act(bits), return_quant_tensor=True)

    def forward(self, x: Any) -> Any:
        x = self.q1(self.norm1(self.add1(x, self.attn(x, x, x, need_weights=False)[0])))
        return self.q2(self.norm2(self.add2(x, self.mlp(x))))


class QuantEncoder(nn.Module):
    """Token classifier: (batch, tokens, features + tokens) integers -> class logits.

    ``weights="pow2"`` makes the encoder blocks' weights (attention projections and FFN) ShiftAdd
    power-of-two weights; the embedding and the head keep ``input_bits`` integer weights.

    The input's last ``tokens`` features are the token's position, one-hot (:func:`with_positions`):
    the embedding's weights on them are the learned positional encoding, so the encoding needs no
    separate add of a (tokens, dim) tensor, which finn-plus could not absorb into a threshold.
    """

    def __init__(self, tokens: int = 8, features: int = 8, dim: int = 16, heads: int = 1, layers: int = 1,
                 hidden: int | list[int] = 32, classes: int = 10, bits: int = 4, input_bits: int = 8,
                 norm: str = "batch", weights: str = "int") -> None:
        super().__init__()
        import brevitas.nn as qnn

        hiddens = list(hidden) if isinstance(hidden, list | tuple) else [hidden] * layers
        if len(hiddens) != layers:
            raise ValueError(f"hidden: {len(hiddens)} widths for {layers} layers")
        self.tokens = tokens
        self.embed = _qlinear(features + tokens, dim, input_bits, quant_bias=False)
        self.q_embed = qnn.QuantIdentity(act_quant=_act(bits), return_quant_tensor=True)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, h, bits, norm, weights) for h in hiddens)
        self.head = _qlinear(tokens * dim, classes, input_bits, quant_bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.q_embed(self.embed(x))
        for block in self.blocks:
            x = block(x)
        x = x.value if hasattr(x, "value") else x  # plain tensors for the head (AMP's embedding is its input)
        return self.head(x.flatten(1))


def build_encoder(**kwargs: Any) -> QuantEncoder:
    """Architecture ``encoder`` (arguments as :class:`QuantEncoder`)."""
    return QuantEncoder(**kwargs)


def with_positions(x: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, features) -> (batch, tokens, features + tokens): each token's one-hot position appended."""
    b, t, _ = x.shape
    eye = torch.eye(t, dtype=x.dtype, device=x.device).expand(b, t, t)
    return torch.cat([x, eye], dim=2)


def digits_tokens(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as 8 tokens (image rows) of 8 pixels (0..16) plus the one-hot position:
    (x_train, y_train, x_test, y_test), a fixed 80/20 split."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))
    x = with_positions(torch.tensor(d.images[order], dtype=torch.float32))
    y = torch.tensor(d.target[order], dtype=torch.long)
    cut = int(0.8 * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def train_encoder(model: QuantEncoder, x: torch.Tensor, y: torch.Tensor, epochs: int = 10, lr: float = 3e-3,
                  batch: int = 64, seed: int = 0) -> QuantEncoder:
    """Adam with cross-entropy, cosine-decayed learning rate; returns ``model`` in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    steps = epochs * ((len(y) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on (x, y)."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def checkpoint(model: QuantEncoder, arch_kwargs: dict[str, Any], golden: torch.Tensor,
               meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A hwkit checkpoint (docs/model-input.md) of an ``encoder`` model; inputs are UINT5 (0..16 pixels)."""
    return {"hwkit_checkpoint": 1, "arch": "encoder", "arch_kwargs": dict(arch_kwargs),
            "state_dict": model.state_dict(), "input_shape": [1, *golden.shape[1:]], "input_dtype": "UINT5",
            "golden_inputs": golden, "meta": dict(meta or {})}
