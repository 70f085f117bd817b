"""Small models that mimic the block structure of common model families (tests and benchmarks).

No weights are downloaded: these are built here and trained on scikit-learn's bundled digits in
seconds. The module names follow each family (timm ViT ``mlp.fc1/fc2``, Hugging Face BERT
``intermediate.dense``/``output.dense``, OpenCLIP ``mlp.c_fc``/``mlp.c_proj``, DINOv2 SwiGLU
``mlp.w12``/``mlp.w3``, LLaMA ``mlp.gate_proj``/``up_proj``/``down_proj``, EVA ``mlp.ffn_ln``) so
that AMP's structural block finder is exercised on each shape; the finder never reads the names.
"""

from __future__ import annotations

from typing import Any

from torch import nn

FAMILIES = ("vit", "bert", "clip", "swiglu", "llama", "eva-subln")


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, fused_qkv: bool) -> None:
        super().__init__()
        self.heads = heads
        self.fused = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Any) -> Any:
        import torch

        b, t, d = x.shape
        if self.fused:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q, k, v = self.query(x), self.key(x), self.value(x)

        def heads(z: Any) -> Any:
            return z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)

        y = torch.nn.functional.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class _Mlp(nn.Module):
    """timm ``Mlp`` (fc1/act/fc2), EVA with ``ffn_ln`` over the hidden dimension."""

    def __init__(self, dim: int, hidden: int, subln: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.ffn_ln = nn.LayerNorm(hidden) if subln else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Any) -> Any:
        return self.fc2(self.ffn_ln(self.act(self.fc1(x))))


class _ClipMlp(nn.Sequential):
    """OpenCLIP: ``nn.Sequential(OrderedDict(c_fc, gelu, c_proj))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        from collections import OrderedDict

        super().__init__(OrderedDict(c_fc=nn.Linear(dim, hidden), gelu=nn.GELU(), c_proj=nn.Linear(hidden, dim)))


class _SwiGLUFused(nn.Module):
    """DINOv2 ``SwiGLUFFN``: w12 gives [gate; value] (2H), w3 projects back."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Any) -> Any:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(nn.functional.silu(x1) * x2)


class _LlamaMlp(nn.Module):
    """LLaMA: down_proj(silu(gate_proj(x)) * up_proj(x))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Any) -> Any:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class _BertIntermediate(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, hidden)

    def forward(self, x: Any) -> Any:
        return nn.functional.gelu(self.dense(x))


class _BertOutput(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, dim)
        self.LayerNorm = nn.LayerNorm(dim)

    def forward(self, h: Any, x: Any) -> Any:
        return self.LayerNorm(self.dense(h) + x)


class _Block(nn.Module):
    def __init__(self, family: str, dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.family = family
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads, fused_qkv=family != "bert")
        self.norm2 = nn.LayerNorm(dim)
        if family == "bert":  # post-norm, HF names
            self.intermediate, self.output = _BertIntermediate(dim, hidden), _BertOutput(dim, hidden)
        elif family == "clip":
            self.mlp: nn.Module = _ClipMlp(dim, hidden)
        elif family == "swiglu":
            self.mlp = _SwiGLUFused(dim, hidden)
        elif family == "llama":
            self.mlp = _LlamaMlp(dim, hidden)
        else:
            self.mlp = _Mlp(dim, hidden, subln=family == "eva-subln")

    def forward(self, x: Any) -> Any:
        if self.family == "bert":
            x = self.norm1(x + self.attn(x))
            return self.output(self.intermediate(x), x)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """A ViT-style classifier over 2x2 patches of 8x8 digits: patch embedding, CLS token, ``depth``
    pre-norm blocks (post-norm for ``bert``), final norm, CLS pooling, linear head."""

    def __init__(self, family: str = "vit", dim: int = 32, hidden: int = 64, depth: int = 4, heads: int = 2,
                 patch: int = 2, image: int = 8, n_classes: int = 10) -> None:
        import torch

        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        self.patch, self.image = patch, image
        n_tok = (image // patch) ** 2
        self.patch_embed = nn.Linear(patch * patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n_tok + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(family, dim, hidden, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: Any) -> Any:
        import torch

        b, p, s = x.shape[0], self.patch, self.image
        t = x.reshape(b, s // p, p, s // p, p).permute(0, 1, 3, 2, 4).reshape(b, -1, p * p) / 16.0
        z = torch.cat([self.cls_token.expand(b, -1, -1), self.patch_embed(t)], dim=1) + self.pos_embed
        for blk in self.blocks:
            z = blk(z)
        return self.head(self.norm(z)[:, 0])


def float_mlp(in_features: int = 64, hidden: tuple[int, ...] = (64, 32), out_features: int = 10) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU stacks and a Linear head (the float twin of hwkit's qmlp)."""
    layers: list[nn.Module] = []
    w = in_features
    for h in hidden:
        layers += [nn.Linear(w, h), nn.BatchNorm1d(h), nn.ReLU()]
        w = h
    layers.append(nn.Linear(w, out_features))
    return nn.Sequential(*layers)


def train_classifier(model: nn.Module, x: Any, y: Any, epochs: int = 30, lr: float = 3e-3, batch: int = 64,
                     seed: int = 0) -> nn.Module:
    """Adam + cosine schedule with cross-entropy; returns the model in eval mode (seconds on digits)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            if len(idx) < 2:
                continue
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


def digits_splits(seed: int = 0) -> dict[str, tuple[Any, Any]]:
    """scikit-learn's bundled digits (1,797 8x8 images, values 0..16) as float/long tensors, split
    stratified and seeded into train (60 %), val (20 %, the AMP search set) and test (20 %)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_va, x_te, y_va, y_te = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)

    def t(a: Any, b: Any) -> tuple[Any, Any]:
        return torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.long)

    return {"train": t(x_tr, y_tr), "val": t(x_va, y_va), "test": t(x_te, y_te)}
