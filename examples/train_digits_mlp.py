"""Train the bundled example: a 2-bit (w2a2) MLP on scikit-learn's digits, saved as a hwkit checkpoint.

    .venv/bin/python examples/train_digits_mlp.py [--out examples/mlp_w2a2_digits.pt] [--epochs 60]

Inputs are the raw pixel intensities 0..16 (integers), so the FINN input type is UINT8 and no
input quantiser is needed. Deterministic for a given seed on one machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from hwkit.models.mlp import build_qmlp

ARCH_KWARGS = {"in_features": 64, "hidden": [64, 32], "out_features": 10, "weight_bits": 2, "act_bits": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("mlp_w2a2_digits.pt"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=args.seed, stratify=y)
    xt, yt = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr)
    xe, ye = torch.tensor(x_te, dtype=torch.float32), torch.tensor(y_te)

    model = build_qmlp(**ARCH_KWARGS)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    gen = torch.Generator().manual_seed(args.seed)
    best, best_state = -1.0, None
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xe).argmax(1) == ye).float().mean().item()
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"epoch {epoch + 1:3d}  test accuracy {acc:.4f}")
    assert best_state is not None
    ckpt = {
        "hwkit_checkpoint": 1,
        "arch": "qmlp",
        "arch_kwargs": ARCH_KWARGS,
        "state_dict": best_state,
        "input_shape": [1, 64],
        "input_dtype": "UINT8",
        "golden_inputs": torch.tensor(np.asarray(x_te[:64]), dtype=torch.float32),
        "meta": {"dataset": f"sklearn digits (25% stratified test split, seed {args.seed})",
                 "test_accuracy": round(best, 4), "epochs": args.epochs, "script": "examples/train_digits_mlp.py"},
    }
    torch.save(ckpt, args.out)
    print(f"best test accuracy {best:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
