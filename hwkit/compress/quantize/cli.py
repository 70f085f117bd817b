"""``hwkit quantize``: a float PyTorch model -> an FPGA-ready Brevitas model (PTQ, optionally QAT).

    hwkit quantize model.pt --weight-bits 4 --act-bits 4 --calib digits --out q.pt [--method qat --qat-epochs 3]

Writes ``q.pt`` (a hwkit checkpoint that rebuilds without pickles) and, next to it,
``quantize_report.json`` and ``quantize_report.md``. See docs/quantize.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hwkit.cli.args import integer, json_object, number, shape


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("quantize", help="quantise a float model with Brevitas (PTQ / QAT) for FINN and CPUs")
    p.add_argument("model", help="float hwkit checkpoint, or a state dict with --arch")
    p.add_argument("--weight-bits", type=integer(2, 16), default=8, help="weight bit width (default 8)")
    p.add_argument("--act-bits", type=integer(2, 16), default=8, help="activation bit width (default 8)")
    p.add_argument("--bits", help="both at once, e.g. w4a4 (overrides --weight-bits/--act-bits)")
    p.add_argument("--layer-bits", help="per-layer weight widths, NAME=BITS[,NAME=BITS...] (PyTorch module paths)")
    p.add_argument("--calib", required=True,
                   help="'digits', a .npz (x[, y]), a .npy (+ --labels), a folder of images, or pkg.mod:fn "
                        "returning a DataLoader")
    p.add_argument("--labels", help=".npy of integer labels for a .npy --calib")
    p.add_argument("--out", required=True, help="quantised model path (.pt); reports are written next to it")
    p.add_argument("--method", choices=["ptq", "qat"],
                   help="ptq: calibration (+ GPTQ / bias correction where they help); qat: then distillation "
                        "epochs (default: qat when --qat-epochs > 0, else ptq)")
    p.add_argument("--qat-epochs", type=integer(0, 100_000), help="QAT epochs (default 3 with --method qat)")
    p.add_argument("--qat-lr", type=number(0, 10, lo_open=True), help="QAT peak learning rate (default 1e-3)")
    p.add_argument("--weight-method", choices=["auto", "gptq", "none"], default="auto",
                   help="GPTQ weight rounding: auto keeps it when the held-out score is not lower (default)")
    p.add_argument("--bias-correction", choices=["auto", "on", "off"], default="auto",
                   help="Brevitas bias correction: auto keeps it when the held-out score is not lower (default)")
    p.add_argument("--bias-bits", type=integer(2, 32),
                   help="integer Linear biases of this width (FINN only: ONNX Runtime's QCDQ export refuses "
                   "quantised biases); default float biases, folded into thresholds")
    p.add_argument("--seed", type=integer(0, 2**32 - 1), default=0, help="data split / training seed")
    p.add_argument("--threads", type=integer(1, 1024), default=1, help="torch threads (default 1)")
    p.add_argument("--input-shape", type=shape, help="input shape with batch, e.g. 1,64 (state dicts)")
    p.add_argument("--arch", help="module:function that builds the float architecture of a plain state dict")
    p.add_argument("--arch-kwargs", type=json_object, help="JSON object of keyword arguments for --arch")
    p.add_argument("--trust-pickle", action="store_true", help="allow a full pickle (runs code from the file)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print quantize_report.json")
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    """Handler of ``hwkit quantize``."""
    import json

    import torch

    from hwkit.compress.quantize.run import opts_from_params, quantize_file
    from hwkit.config import CompileSettings
    from hwkit.errors import InputError
    from hwkit.outdir import claim_file_parent

    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    settings = CompileSettings(input_shape=tuple(args.input_shape) if args.input_shape else None, arch=args.arch,
                               arch_kwargs=args.arch_kwargs or (), trust_pickle=args.trust_pickle, seed=args.seed)
    opts = opts_from_params({"bits": args.bits, "weight_bits": args.weight_bits, "act_bits": args.act_bits,
                             "layer_bits": args.layer_bits, "calib": args.calib, "labels": args.labels,
                             "method": args.method, "qat_epochs": args.qat_epochs, "qat_lr": args.qat_lr,
                             "weight_method": args.weight_method, "bias_correction": args.bias_correction,
                             "bias_bits": args.bias_bits,
                             "seed": args.seed})
    out = Path(args.out)
    src = Path(args.model)
    if out.resolve() == src.resolve():
        raise InputError(f"--out {out}: would overwrite the float model; choose another path")
    created = claim_file_parent(out)
    say = None if (args.json or args.quiet) else print
    try:
        report = quantize_file(src, settings, opts, out, out.parent, say)
    except BaseException:
        if created is not None:
            created.rollback()
        raise
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    elif not args.quiet:
        a, g, w = report["accuracy"], report["agreement"], report["weight_memory"]
        r = report["recipe"]
        acc = (f"accuracy {a['float'] * 100:.2f} % float -> {a['quantized'] * 100:.2f} % quantised"
               if a["float"] is not None else f"top-1 agreement with float {g['top1_with_float'] * 100:.2f} %")
        print(f"w{r['weight_bits']}a{r['act_bits']} {report['method'].upper()}: {acc}; weights "
              f"{w['float_bytes']:,.0f} B -> {w['quantized_bytes']:,.0f} B; {report['timing_s']['quantize']:.1f} s")
        print(f"wrote {out}, {out.parent / 'quantize_report.json'}, {out.parent / 'quantize_report.md'}")
    return 0
