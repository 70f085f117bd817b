"""``hwkit prune``: make a model physically smaller (AMP: adaptive MLP pruning).

    hwkit prune model.pt --method amp --calib digits --delta-e 0.01 --out pruned.pt [--distill-epochs 30]

Writes the pruned model (a hwkit checkpoint with the new ``hidden`` widths when the input was a
qmlp/cqmlp checkpoint; otherwise a state dict and ``pruned.widths.json``) and, next to it,
``prune_report.json``, ``prune_report.md`` and ``prune_widths.svg``. See docs/amp.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hwkit.cli.args import json_object
from hwkit.errors import InputError


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("prune", help="prune a model's MLP hidden neurons (AMP) into a smaller model")
    p.add_argument("model", help="hwkit checkpoint, state dict (with --arch) or trusted pickle (.pt)")
    p.add_argument("--method", choices=["amp"], default="amp", help="pruning method (default amp)")
    p.add_argument("--calib", required=True, help="'digits' (scikit-learn's bundled digits) or a .npy of inputs")
    p.add_argument("--labels", help=".npy of integer labels for --calib (accuracy, --criterion ce)")
    p.add_argument("--out", required=True, help="pruned model path (.pt); reports are written next to it")
    p.add_argument("--criterion", choices=["entropy", "ce"], default="entropy",
                   help="entropy: label-free in-batch similarity entropy (default); ce: cross-entropy")
    p.add_argument("--delta-e", type=float, default=1e-2, help="accepted loss rise per block, nats (default 0.01)")
    p.add_argument("--rise", choices=["signed", "abs"], default="signed",
                   help="signed: E-E_prev <= dE (paper); abs: |E-E_prev| <= dE (stricter)")
    p.add_argument("--temp-inv", type=float, default=15.0, help="1/temperature of the similarity softmax (15)")
    p.add_argument("--steps", type=int, default=6, help="binary-search halvings per block (6)")
    p.add_argument("--batch-size", type=int, default=128, help="scoring/validation batch (the softmax size; 128)")
    p.add_argument("--layer-wise", action="store_true", help="re-score each block after the later ones are pruned")
    p.add_argument("--pool", choices=["cls", "mean"], default="cls", help="token pooling of a 3-D embedding")
    p.add_argument("--embed-module", help="module whose input is the embedding (default: the last Linear called)")
    p.add_argument("--distill-epochs", type=int, default=0, help="feature-distillation recovery epochs (0: none)")
    p.add_argument("--distill-lr", type=float, default=1e-3, help="distillation peak learning rate (1e-3)")
    p.add_argument("--distill-patience", type=int, default=5, help="early-stop patience in epochs (5)")
    p.add_argument("--seed", type=int, default=0, help="data split / shuffling seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for small models)")
    p.add_argument("--arch", help="module:function that builds the architecture for a plain state dict")
    p.add_argument("--arch-kwargs", type=json_object, help="JSON object of keyword arguments for --arch")
    p.add_argument("--trust-pickle", action="store_true", help="allow a full pickle (runs code from the file)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print prune_report.json (without index lists)")
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    """Handler of ``hwkit prune``."""
    from hwkit.compress.amp.run import configs_from, load_data, prune_model, report_json, save_pruned, write_report
    from hwkit.config import CompileSettings
    from hwkit.load import load_model

    for flag, v in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--threads", args.threads)):
        if v < 1:
            raise InputError(f"{flag} must be >= 1, got {v}")
    if args.delta_e < 0 or args.temp_inv <= 0 or args.distill_epochs < 0:
        raise InputError("--delta-e must be >= 0, --temp-inv > 0 and --distill-epochs >= 0")
    kwargs: tuple[tuple[str, Any], ...] = args.arch_kwargs or ()
    import torch

    torch.set_num_threads(args.threads)
    src = Path(args.model)
    loaded = load_model(src, CompileSettings(arch=args.arch, arch_kwargs=kwargs, trust_pickle=args.trust_pickle))
    data = load_data(args.calib, args.labels, args.seed)
    cfg, dcfg = configs_from({"criterion": args.criterion, "temp_inv": args.temp_inv, "delta_e": args.delta_e,
                              "steps": args.steps, "batch_size": args.batch_size, "layer_wise": args.layer_wise,
                              "pool": args.pool, "embed_module": args.embed_module, "rise": args.rise,
                              "distill_epochs": args.distill_epochs, "distill_lr": args.distill_lr,
                              "distill_patience": args.distill_patience, "distill_seed": args.seed})
    say = None if (args.json or args.quiet) else print
    pruned, report = prune_model(loaded.module, data, cfg, dcfg, say)
    out = Path(args.out)
    files = save_pruned(pruned, report, out, src, loaded)
    files += write_report(report, out.parent)
    if args.json:
        print(report_json(report))
    elif not args.quiet:
        p, f, a = report["params"], report["flops_per_sample"], report["accuracy"]
        widths = ", ".join(f"{b['width_before']}->{b['width_after']}" for b in report["blocks"])
        print(f"widths {widths}; params {p['before']:,} -> {p['after']:,} (-{p['reduction'] * 100:.1f} %), "
              f"FLOPs {f['before']:,} -> {f['after']:,} (-{f['reduction'] * 100:.1f} %)")
        if a["before"] is not None:
            print(f"accuracy {a['before'] * 100:.2f} % -> {a['after_prune'] * 100:.2f} % after pruning"
                  + (f" -> {a['after_distill'] * 100:.2f} % after distillation" if a["after_distill"] is not None
                     else ""))
        print("wrote " + ", ".join(str(x) for x in files))
    return 0
