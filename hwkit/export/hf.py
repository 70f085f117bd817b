"""ONNX export of a Hugging Face encoder directory (token inputs) for the ONNX Runtime flows.

``hwkit compile MODEL_DIR --target cpu`` takes a directory ``AutoModel.from_pretrained`` reads, a pruned one
written by ``hwkit prune`` or a BCQ one written by ``hwkit shiftadd`` (its dense dequantised weights; see
:func:`hwkit.load.load_hf_dir`). The graph's inputs are the token inputs the model's ``forward`` names, among
``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, ``[batch, sequence]``, both axes dynamic); its
output is ``last_hidden_state`` ``[batch, sequence, hidden]``.

Golden batch and test split: seeded token sequences of ``--input-shape 1,T`` tokens at most (default 32, capped by
the model's position table), each of its own length (right-padded, ``attention_mask`` 0 on the padding), ids drawn
from the vocabulary, ``token_type_ids`` 0. They are saved as ``.npz`` of named arrays; the reference outputs come
from PyTorch on the same model before export.

This module imports torch at the top (it defines an ``nn.Module``); it is imported only inside the passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwkit.errors import InputError, UnsupportedLayerError

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"
DEFAULT_TOKENS = 32


class TokenEncoder(nn.Module):
    """A Hugging Face encoder called with positional token inputs, returning its last hidden state."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, inputs)))
        h = getattr(out, OUTPUT, None)
        return h if h is not None else out[0]


def input_names(model: Any) -> tuple[str, ...]:
    """The token inputs ``model.forward`` takes, in :data:`TOKEN_INPUTS` order (``input_ids`` required)."""
    from hwkit.data.tokens import accepted_inputs

    names, _var = accepted_inputs(model)
    got = tuple(n for n in TOKEN_INPUTS if n in names)
    if "input_ids" not in got:
        raise UnsupportedLayerError("the Hugging Face model's forward takes no input_ids; only token encoders "
                                    "compile from a model directory")
    return got


def sequence_length(model: Any, shape: tuple[int, ...] | None) -> int:
    """Tokens per sample: the last dimension of ``--input-shape`` when given, else 32, within the position table."""
    cap = int(getattr(getattr(model, "config", None), "max_position_embeddings", 0) or 0) or None
    if shape is not None:
        if len(shape) != 2 or shape[1] < 1:
            got = ",".join(map(str, shape))
            raise InputError(f"--input-shape for a token model is 1,T (tokens per sample), got {got}")
        t = int(shape[1])
        if cap is not None and t > cap:
            raise InputError(f"--input-shape 1,{t}: the model has {cap} positions")
        return t
    return min(DEFAULT_TOKENS, cap) if cap else DEFAULT_TOKENS


def token_samples(model: Any, names: tuple[str, ...], n: int, tokens: int, seed: int,
                  padded: bool = True) -> dict[str, np.ndarray]:
    """``n`` seeded samples of ``tokens`` tokens: random vocabulary ids, each sample of its own length between a
    quarter of ``tokens`` and ``tokens`` (right padding, mask 0 there) unless ``padded`` is False."""
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0)
    if vocab < 2:
        raise UnsupportedLayerError("the model config has no vocab_size; cannot make token samples")
    rng = np.random.default_rng(seed)
    ids = rng.integers(min(5, vocab - 1), vocab, size=(n, tokens), dtype=np.int64)
    mask = np.ones((n, tokens), dtype=np.int64)
    if padded and tokens > 1:
        lengths = rng.integers(max(1, tokens // 4), tokens + 1, size=n)
        lengths[0] = tokens  # the longest sample sets the batch's width
        mask = (np.arange(tokens)[None] < lengths[:, None]).astype(np.int64)
        ids = np.where(mask == 1, ids, 0)
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {k: out[k] for k in names}


def run_torch(model: Any, names: tuple[str, ...], x: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    """PyTorch outputs (last hidden state) for the named arrays ``x``, in batches."""
    enc = TokenEncoder(model, names).eval()
    n = len(x[names[0]])
    out = []
    with torch.inference_mode():
        for i in range(0, n, batch):
            out.append(enc(*(torch.from_numpy(x[k][i:i + batch]) for k in names)).numpy())
    return np.concatenate(out)


def export(model: Any, names: tuple[str, ...], example: dict[str, np.ndarray], out: Path) -> None:
    """``model`` to ONNX at ``out`` (TorchScript exporter; batch and sequence axes dynamic)."""
    axes = {k: {0: "batch", 1: "sequence"} for k in (*names, OUTPUT)}
    args = tuple(torch.from_numpy(example[k][:2]) for k in names)
    try:
        with torch.no_grad():
            torch.onnx.export(TokenEncoder(model, names).eval(), args, str(out), input_names=list(names),
                              output_names=[OUTPUT], dynamic_axes=axes, dynamo=False)
    except Exception as exc:  # the exporter raises many types; all mean "cannot export this model"
        text = str(exc).strip().splitlines()
        raise UnsupportedLayerError(f"cannot export the Hugging Face model to ONNX: {type(exc).__name__}: "
                                    f"{text[0] if text else ''}") from exc
