"""A small real Hugging Face encoder built from a config (no download) for the AMP / ShiftAdd token tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = ["the", "a", "an", "of", "to", "in", "and", "is", "was", "for", "on", "with", "as", "by", "at", "from", "this",
         "that", "it", "be", "are", "were", "model", "layer", "input", "output", "weight", "bias", "token", "mask",
         "sentence", "word", "number", "small", "large", "fast", "slow", "data", "set", "test", "train", "value", "sum",
         "mean", "cat", "dog", "bird", "fish", "tree", "house", "car", "road", "river", "city"]


def config(**kw: Any) -> Any:
    from transformers import BertConfig

    base = {"vocab_size": 5 + len(WORDS), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 64, "hidden_act": "gelu"}
    return BertConfig(**{**base, **kw})


def build(**kw: Any) -> Any:
    """``--arch tests.unit.tiny_bert:build``: a BertModel with seeded random weights."""
    import torch
    from transformers import BertModel

    torch.manual_seed(int(kw.pop("seed", 0)))
    return BertModel(config(**kw)).eval()


def save_dir(path: Path, **kw: Any) -> Path:
    """The model (save_pretrained) and a word-level BERT tokenizer in ``path``."""
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    build(**kw).save_pretrained(str(path))
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(path))
    return path


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` random word sequences of 3..14 words (different lengths: padding and masks matter)."""
    import random

    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(3, 14))) for _ in range(n)]
