"""Tokenised calibration sets for models with several integer inputs (Hugging Face encoders and the like).

A set is read from

* a ``.npz`` of named integer arrays ``[N, T]`` (``input_ids`` required; ``attention_mask``,
  ``token_type_ids`` and any other per-token input optional; a 1-D ``labels`` array optional), or
* a text file (``.txt``: one sample per line, blank lines skipped) tokenised with the model's tokenizer
  (``AutoTokenizer.from_pretrained(dir, local_files_only=True)``: nothing is downloaded).

Samples are kept right-padded at their full length; :meth:`Tokens.batch` cuts a subset to the longest
sample in it (dynamic padding) and returns ``int64`` tensors with an ``attention_mask``, ready for
``model(**batch)``. Only the inputs the model's ``forward`` accepts are passed (:func:`fit_to_model`).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwkit.errors import InputError

SUFFIXES = (".npz", ".txt")
"""File types read as token sets."""
MASK = "attention_mask"


def is_token_file(spec: str) -> bool:
    """True when ``spec`` names a token set (by its suffix)."""
    return Path(spec).suffix.lower() in SUFFIXES


@dataclass
class Tokens:
    """N right-padded samples of named integer inputs (numpy ``[N, T]``), with each sample's length."""

    arrays: dict[str, Any]
    lengths: Any
    """Tokens per sample (the attention mask's extent)."""

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, idx: Any) -> Tokens:
        import numpy as np

        if hasattr(idx, "numpy"):
            idx = idx.numpy()
        if isinstance(idx, int | np.integer):
            idx = slice(int(idx), int(idx) + 1)
        return Tokens({k: v[idx] for k, v in self.arrays.items()}, self.lengths[idx])

    @property
    def names(self) -> list[str]:
        """Input names."""
        return list(self.arrays)

    def batch(self) -> dict[str, Any]:
        """All samples as int64 tensors cut to the longest of them (dynamic padding)."""
        import torch

        t = max(1, int(self.lengths.max())) if len(self) else 1
        return {k: torch.from_numpy(v[:, :t].astype("int64", copy=False)).contiguous() for k, v in self.arrays.items()}

    def batches(self, size: int) -> list[dict[str, Any]]:
        """Consecutive batches of ``size`` (the last one may be smaller), each padded to its own longest sample."""
        return [self[i:i + size].batch() for i in range(0, len(self), size)]

    def tokens(self) -> int:
        """Real (unpadded) tokens in the set."""
        return int(self.lengths.sum())


def concat(parts: list[Tokens]) -> Tokens:
    """One token set of ``parts`` (same input names), padded to the widest."""
    import numpy as np

    names = parts[0].names
    if any(p.names != names for p in parts):
        raise InputError("token sets with different inputs cannot be joined: "
                         + " vs ".join(", ".join(p.names) for p in parts))
    width = max(p.arrays[names[0]].shape[1] for p in parts)
    return Tokens({k: np.concatenate([np.pad(p.arrays[k], ((0, 0), (0, width - p.arrays[k].shape[1])))
                                      for p in parts]) for k in names},
                  np.concatenate([p.lengths for p in parts]))


def _lengths_from_mask(mask: Any, path: str) -> Any:
    import numpy as np

    m = np.asarray(mask) != 0
    if m.ndim != 2:
        raise InputError(f"{path}: attention_mask must be 2-D [samples, tokens]")
    lengths = m.sum(axis=1)
    right = np.arange(m.shape[1])[None, :] < lengths[:, None]
    if not np.array_equal(m, right):
        raise InputError(f"{path}: attention_mask must be right-padded (ones, then zeros) in every row")
    return lengths.astype(np.int64)


def load_npz(path: Path) -> tuple[Tokens, Any]:
    """A token set and its labels (or None) from a ``.npz`` of named arrays."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} ({exc})") from None
    labels = arrays.pop("labels", None)
    if "input_ids" not in arrays:
        raise InputError(f"{path}: a token set needs an 'input_ids' array (has: {', '.join(sorted(arrays)) or 'none'})")
    ids = arrays["input_ids"]
    if ids.ndim != 2 or ids.shape[0] < 1:
        raise InputError(f"{path}: input_ids must be 2-D [samples, tokens], got shape {list(ids.shape)}")
    for k, v in arrays.items():
        if v.shape != ids.shape:
            raise InputError(f"{path}: '{k}' has shape {list(v.shape)}, input_ids {list(ids.shape)}")
        if not np.issubdtype(v.dtype, np.integer) and not np.issubdtype(v.dtype, np.bool_):
            raise InputError(f"{path}: '{k}' must hold integers (token ids / masks), got {v.dtype}")
    if MASK in arrays:
        lengths = _lengths_from_mask(arrays[MASK], str(path))
    else:
        lengths = np.full(len(ids), ids.shape[1], dtype=np.int64)
        arrays[MASK] = np.ones_like(ids)
    if labels is not None and (labels.ndim != 1 or len(labels) != len(ids)
                               or not np.issubdtype(labels.dtype, np.integer)):
        raise InputError(f"{path}: 'labels' must be 1-D integers, one per sample")
    return Tokens({k: np.ascontiguousarray(v.astype(np.int64)) for k, v in arrays.items()}, lengths), labels


def tokenizer_for(model_dir: Path) -> Any:
    """The Hugging Face tokenizer saved in ``model_dir`` (local files only)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise InputError("tokenising a text file needs the 'transformers' package (pip install transformers)") from None
    try:
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"no usable tokenizer in {model_dir} ({first})") from None


def max_length_of(model_dir: Path | None, default: int = 128) -> int:
    """sentence-transformers' ``max_seq_length`` when the directory has one, else ``default``."""
    if model_dir is not None:
        cfg = model_dir / "sentence_bert_config.json"
        if cfg.is_file():
            try:
                return int(json.loads(cfg.read_text())["max_seq_length"])
            except (ValueError, KeyError, TypeError):
                pass
    return default


def tokenize(lines: list[str], tokenizer: Any, max_length: int) -> Tokens:
    """Tokenise ``lines`` (no padding, truncated to ``max_length``) into a right-padded set."""
    import numpy as np

    enc = tokenizer(lines, truncation=True, max_length=max_length, padding=False)
    names = [k for k in enc if k != "special_tokens_mask"]
    lengths = np.array([len(t) for t in enc["input_ids"]], dtype=np.int64)
    width = int(lengths.max())
    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else 0
    arrays = {}
    for k in names:
        a = np.full((len(lines), width), pad if k == "input_ids" else 0, dtype=np.int64)
        for i, row in enumerate(enc[k]):
            a[i, : len(row)] = row
        arrays[k] = a
    arrays[MASK] = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    return Tokens(arrays, lengths)


def load_text(path: Path, model_dir: Path | None, max_length: int | None = None) -> Tokens:
    """A token set from a text file, one sample per line, with the tokenizer of ``model_dir``."""
    if model_dir is None or not model_dir.is_dir():
        raise InputError(f"{path}: a text calibration file needs the model's tokenizer: give a Hugging Face model "
                         "directory as the model, or --tokenizer DIR")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} ({exc})") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputError(f"{path}: no text (one sample per line)")
    return tokenize(lines, tokenizer_for(model_dir), max_length or max_length_of(model_dir))


def load_tokens(spec: str, tokenizer_dir: Path | None = None, max_length: int | None = None) -> tuple[Tokens, Any]:
    """``.npz`` or ``.txt`` token set (and labels from the ``.npz``, else None)."""
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--calib {spec}: file not found")
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    return load_text(path, tokenizer_dir, max_length), None


def accepted_inputs(model: Any) -> tuple[set[str], bool]:
    """The keyword inputs ``model.forward`` names, and whether it takes ``**kwargs``."""
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return set(), True
    names = {n for n, p in sig.parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def fit_to_model(tokens: Tokens, model: Any) -> Tokens:
    """Drop the inputs the model's forward does not take; the model must take ``input_ids`` and, when the
    samples differ in length, ``attention_mask`` (else padding would change its outputs)."""
    import numpy as np

    names, var_kw = accepted_inputs(model)
    if var_kw:
        return tokens
    if "input_ids" not in names:
        raise InputError(f"the model's forward takes no 'input_ids' (it takes: {', '.join(sorted(names))})")
    keep = {k: v for k, v in tokens.arrays.items() if k in names}
    if MASK not in keep and len(np.unique(tokens.lengths)) > 1:
        raise InputError("the model's forward takes no 'attention_mask', so padded samples would change its "
                         "outputs: give samples of equal length")
    return Tokens(keep, tokens.lengths)


def is_hf_dir(path: Path) -> bool:
    """A directory with a Hugging Face ``config.json``."""
    return path.is_dir() and (path / "config.json").is_file()


def st_pooling(model_dir: Path | None) -> str | None:
    """The pooling a sentence-transformers directory declares (mean | cls | max), or None."""
    if model_dir is None:
        return None
    mods = model_dir / "modules.json"
    if not mods.is_file():
        return None
    try:
        entries = json.loads(mods.read_text())
        pool = next(e for e in entries if str(e.get("type", "")).endswith("Pooling"))
        cfg = json.loads((model_dir / pool["path"] / "config.json").read_text())
    except (ValueError, StopIteration, OSError, KeyError, TypeError, AttributeError):
        return None
    for key, name in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                      ("pooling_mode_max_tokens", "max")):
        if cfg.get(key):
            return name
    return None
