"""Train the bundled CQMLP example: 2-bit (w2a2) CAN-bus IDS on synthetic Car-Hacking-style traffic.

    .venv/bin/python examples/train_cqmlp.py [--out examples/cqmlp_w2a2_synthetic.pt] [--seconds 60] [--epochs 12]

Generates seeded Car-Hacking-style files (DoS, fuzzing, RPM and gear spoofing, normal run) in a
temporary directory, reads them back with the Car-Hacking readers, windows them (4 frames -> 40
uint8 features), splits by time (85/10/5) and trains the paper's 40-256-128-64-32-4 CQMLP with
2-bit weights and activations. Writes a hwkit checkpoint (arch ``cqmlp``) with metrics.json and a
PNG next to it; ``hwkit compile`` takes the checkpoint. Same as::

    hwkit train cqmlp --synthetic --synthetic-seconds 60 --epochs 12 --batch-size 512 --lr 1e-3 \\
        --patience 0 --out examples/cqmlp_w2a2_synthetic.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hwkit.train import RichTrainProgress, TrainConfig, prepare_data, train_cqmlp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("cqmlp_w2a2_synthetic.pt"))
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = TrainConfig(bits=2, epochs=args.epochs, batch_size=512, lr=1e-3, patience=0, seed=args.seed)
    progress = RichTrainProgress()
    try:
        split, desc = prepare_data(None, args.seconds, cfg, progress=progress)
        result = train_cqmlp(split, cfg, args.out, desc | {"script": "examples/train_cqmlp.py"}, progress)
    finally:
        progress.stop()
    test = result.summary["metrics"]["test"]
    print(f"test accuracy {test['accuracy'] * 100:.3f}% on {test['samples']:,} time-split windows; wrote {args.out}")


if __name__ == "__main__":
    main()
