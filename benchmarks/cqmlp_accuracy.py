"""CQMLP accuracy on synthetic Car-Hacking-style data, time split and random split; training speed.

    .venv/bin/python benchmarks/cqmlp_accuracy.py [--seconds 600] [--epochs 45] [--bits 2] [--splits time,random]
        [--weight-values int|full] [--weight-scaling max|mean|learned]
        [--distill --teacher-epochs 4 --init-from-teacher --kd-weight 1 --kd-temperature 2 --pretrain-bits 4,3 ...]

Trains the 2-bit CQMLP twice on the same generated data: once on the time split (consecutive
stretches of every file, no frame shared between train/val/test: the honest number) and once on
random windows (the paper's probable setting: overlapping neighbours leak across the split).
Prints test accuracy with the split sizes, per-class metrics, training samples/s on this CPU and
the training time until validation accuracy first reached 99.9% (if it did). The defaults are the
bundled example's recipe (examples/train_cqmlp.py): per-output-channel (max-abs) weight scales,
one-cycle schedule to lr 3e-3, batch 512, 45 epochs over all training windows of 600 s files (about
4.6 million windows an epoch, ~100 s an epoch on one core here: ~80 min per split).

With ``--distill`` the float twin (same topology unquantised) is trained first on the same split and
its test figures are printed beside the 2-bit student's (paired: same data, same split), with both
runs' errors by class; ``--init-from-teacher`` starts the student from it, ``--weight-scaling learned``
learns the weight scales (docs/cqmlp.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from hwkit.compress.cqmlp.train import TrainConfig, prepare_data, train_cqmlp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="synthetic seconds per file")
    ap.add_argument("--epochs", type=int, default=45)
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--schedule", default="onecycle")
    ap.add_argument("--per-channel", type=int, default=1)
    ap.add_argument("--weight-scaling", default="max", help="weight-scale statistic: max | mean")
    ap.add_argument("--weight-values", default="int", help="int (narrow, ternary at 2 bits) | full | pow2")
    ap.add_argument("--distill", action="store_true", help="train the float twin first and distil from it")
    ap.add_argument("--teacher-epochs", type=int, default=4)
    ap.add_argument("--init-from-teacher", action="store_true")
    ap.add_argument("--kd-weight", type=float, default=1.0)
    ap.add_argument("--ce-weight", type=float, default=1.0)
    ap.add_argument("--kd-temperature", type=float, default=2.0)
    ap.add_argument("--feature-weight", type=float, default=0.0)
    ap.add_argument("--pretrain-bits", default="", help="e.g. 4,3 (annealing stages before --bits)")
    ap.add_argument("--pretrain-epochs", default="", help="e.g. 2,2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out-dir", help="keep checkpoints here (default: a temporary directory)")
    ap.add_argument("--max-train-windows", type=int, default=0, help="0 = all training windows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", default="time,random")
    args = ap.parse_args()
    base = TrainConfig(bits=args.bits, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=0,
                       seed=args.seed, schedule=args.schedule, per_channel=bool(args.per_channel),
                       weight_scaling=args.weight_scaling, weight_values=args.weight_values,
                       max_train_windows=args.max_train_windows or None, distill=args.distill,
                       teacher_epochs=args.teacher_epochs, init_from_teacher=args.init_from_teacher,
                       kd_weight=args.kd_weight, ce_weight=args.ce_weight, kd_temperature=args.kd_temperature,
                       feature_weight=args.feature_weight, device=args.device,
                       pretrain_bits=tuple(int(b) for b in args.pretrain_bits.split(",") if b),
                       pretrain_epochs=tuple(int(e) for e in args.pretrain_epochs.split(",") if e))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.out_dir:
            tmp = args.out_dir
            Path(tmp).mkdir(parents=True, exist_ok=True)
        for mode in args.splits.split(","):
            cfg = replace(base, split=mode)
            t0 = time.perf_counter()
            split, desc = prepare_data(None, args.seconds, cfg)
            res = train_cqmlp(split, cfg, Path(tmp) / f"{mode}.pt", desc)
            s = res.summary
            results[mode] = s
            test = s["metrics"]["test"]
            print(f"{mode} split {split.sizes()} ({s['train_windows_used']:,} train windows used); "
                  f"test classes {dict(zip(test['classes'], split.test.class_counts()))}")
            print(f"  test accuracy {test['accuracy'] * 100:.3f}% ({test['misclassified']} errors / "
                  f"{test['samples']:,}); benign FPR {test['benign_fpr'] * 100:.3f}%; best epoch {s['best_epoch']}")
            for name, m in test["per_class"].items():
                print(f"    {name:8s} P {m['precision'] * 100:7.3f}  R {m['recall'] * 100:7.3f}  "
                      f"F1 {m['f1'] * 100:7.3f}  FNR {m['fnr'] * 100:6.3f}  n {m['support']:,}")
            print(f"    confusion {test['confusion']}")
            twin = Path(tmp) / f"{mode}.teacher.metrics.json"
            if args.distill and twin.is_file():
                import json

                ts = json.loads(twin.read_text())
                tt = ts["metrics"]["test"]
                print(f"  float twin (teacher, {ts['epochs_run']} epochs, same split): test accuracy "
                      f"{tt['accuracy'] * 100:.3f}% ({tt['misclassified']} errors); confusion {tt['confusion']}; "
                      f"{ts['train_samples_per_s']:,.0f} samples/s, {ts['train_s']:.0f} s training")
            ttt = s["time_to_val_accuracy_999"]
            print(f"  {s['train_samples_per_s']:,.0f} training samples/s (1 thread), {s['train_s']:.0f} s training, "
                  + (f"val >= 99.9% after {ttt['train_s']:.0f} s (epoch {ttt['epoch']})" if ttt
                     else "val accuracy never reached 99.9%")
                  + f"; {time.perf_counter() - t0:.0f} s with data and evaluation", flush=True)


if __name__ == "__main__":
    main()
