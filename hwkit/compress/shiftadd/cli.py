"""``hwkit shiftadd``: reparameterise a float model's Linear (q/ps: also Conv2d) layers with shifts and adds.

Modes: ``q`` / ``ps`` (DeepShift shift weights, optional fine-tuning), ``bcq`` (ShiftAddLLM post-training
binary-coded quantisation with power-of-two scales), ``moe`` (ShiftAddViT mult/shift mixture of experts).
Writes the model (``--out``), ``<out>.codes.pt``, ``shiftadd.onnx`` (+ ``shiftadd_qonnx.onnx``) and
``shiftadd_report.{json,md}`` next to it. See docs/shiftadd.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hwkit.cli.args import integer, json_object, number, shape
from hwkit.errors import InputError


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("shiftadd", help="reparameterise Linear/Conv2d layers as shifts/adds (DeepShift, ShiftAddLLM)")
    p.add_argument("model", help="state dict (with --arch), hwkit checkpoint or trusted pickle (.pt) of a float model, "
                   "or a Hugging Face model directory (written back as a directory)")
    p.add_argument("--mode", choices=["ps", "q", "bcq", "moe"], default="ps",
                   help="ps/q: DeepShift shift weights; bcq: binary-coded PTQ; moe: mult+shift experts (default ps)")
    p.add_argument("--calib", required=True, help="'digits' (scikit-learn's bundled digits), a .npy of inputs, or a "
                   "token set: .txt (one sample per line) or .npz (input_ids, attention_mask, ...)")
    p.add_argument("--tokenizer", help="Hugging Face directory whose tokenizer reads a .txt --calib (default: the "
                   "model directory)")
    p.add_argument("--max-length", type=integer(1, 1 << 20),
                   help="tokens per sample at most (default: sentence-transformers "
                   "max_seq_length, else 128)")
    p.add_argument("--pool", choices=["auto", "mean", "cls", "max"], default="auto",
                   help="token models: pooling of the embedding the report compares (auto: sentence-transformers "
                   "config, else mean)")
    p.add_argument("--force", action="store_true", help="write into an existing non-hwkit --out directory (HF models)")
    p.add_argument("--labels", help=".npy of integer labels for --calib (accuracy, fine-tuning)")
    p.add_argument("--out", required=True, help="output model path (.pt); reports are written next to it")
    p.add_argument("--weight-bits", type=integer(2, 16), default=5, help="q/ps/moe: bits per shift weight (5)")
    p.add_argument("--epochs", type=integer(0, 10**6), default=0,
                   help="q/ps/moe: fine-tuning epochs on the calib split (0)")
    p.add_argument("--lr", type=number(0, 10, lo_open=True), default=1e-3, help="fine-tuning learning rate (1e-3)")
    p.add_argument("--optimizer", choices=["radam", "sgd"], default="radam", help="fine-tuning optimiser (radam)")
    p.add_argument("--bits", type=integer(0, 4), default=3,
                   help="bcq: binary planes per weight, 0 = allocate 2/3 per layer")
    p.add_argument("--group-rows", type=integer(1, 1 << 16), default=8,
                   help="bcq: output rows sharing a scale per 8 columns (8)")
    p.add_argument("--rounds", type=integer(0, 10**4), default=20, help="bcq: alternating refinement rounds (20)")
    p.add_argument("--apot-terms", type=integer(1, 4), default=3, help="bcq: powers of two per scale (3)")
    p.add_argument("--float-scales", action="store_true", help="bcq: keep float scales (no power-of-two rounding)")
    p.add_argument("--no-compensate", action="store_true", help="bcq: no GPTQ-style column error compensation")
    p.add_argument("--route-share", type=number(0, 1),
                   help="moe: after training, move each router's arg-max threshold so "
                   "this fraction of the calib tokens goes to the shift expert (e.g. 0.6)")
    p.add_argument("--seed", type=integer(0, 2**32 - 1), default=0, help="data split / shuffling seed")
    p.add_argument("--threads", type=integer(1, 1024), default=1, help="torch threads (default 1)")
    p.add_argument("--input-shape", type=shape, help="input shape with batch, e.g. 1,64 (default: from the data)")
    p.add_argument("--arch", help="module:function that builds the architecture for a plain state dict")
    p.add_argument("--arch-kwargs", type=json_object, help="JSON object of keyword arguments for --arch")
    p.add_argument("--trust-pickle", action="store_true", help="allow a full pickle (runs code from the file)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print shiftadd_report.json")
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    """Handler of ``hwkit shiftadd``."""
    import contextlib

    from hwkit.compress.amp.run import check_data_fits, load_data
    from hwkit.compress.shiftadd.run import reparameterise, save_outputs, write_report
    from hwkit.config import CompileSettings
    from hwkit.outdir import staged_files

    kwargs: tuple[tuple[str, Any], ...] = args.arch_kwargs or ()
    import torch

    torch.set_num_threads(args.threads)
    from hwkit.data.tokens import is_token_file, st_pooling
    from hwkit.load import is_hf_dir, load_any

    src = Path(args.model)
    hf = is_hf_dir(src)
    with contextlib.ExitStack() as stack:  # non-HF outputs: staged next to --out, moved in together
        stage = None if hf else stack.enter_context(staged_files(Path(args.out)))
        loaded = load_any(src, CompileSettings(arch=args.arch, arch_kwargs=kwargs, trust_pickle=args.trust_pickle,
                                               input_shape=args.input_shape))
        tok_dir = Path(args.tokenizer) if args.tokenizer else (src if hf else None)
        tokens = is_token_file(args.calib)
        if hf and not tokens:
            raise InputError("a Hugging Face model needs a token calibration set (--calib sentences.txt or ids.npz)")
        data = load_data(args.calib, args.labels, args.seed, tok_dir, args.max_length, loaded.module)
        check_data_fits(loaded.module, data, args.calib)
        pool = (st_pooling(tok_dir) or "mean") if args.pool == "auto" else args.pool
        params = {"mode": args.mode, "weight_bits": args.weight_bits, "epochs": args.epochs, "lr": args.lr,
                  "optimizer": args.optimizer, "bits": args.bits, "group_rows": args.group_rows, "rounds": args.rounds,
                  "apot_terms": args.apot_terms, "float_scales": args.float_scales,
                  "no_compensate": args.no_compensate, "seed": args.seed, "route_share": args.route_share, "pool": pool}
        say = None if (args.json or args.quiet) else print
        out = Path(args.out)
        if hf:
            from hwkit.compress.shiftadd.run import save_hf
            from hwkit.outdir import claim

            od = claim(out, "shiftadd", force=args.force)
            try:
                model, report = reparameterise(loaded.module, data, params, say)
                files = save_hf(model, report, od.path, src)
                files += write_report(report, od.path)
            except BaseException:
                od.rollback()
                raise
        elif tokens:
            from hwkit.compress.shiftadd.run import save_state

            assert stage is not None  # staged unless the output is a Hugging Face folder
            model, report = reparameterise(loaded.module, data, params, say)
            files = save_state(model, report, stage / out.name)
            files += write_report(report, stage)
        else:
            assert stage is not None
            model, report = reparameterise(loaded.module, data, params, say)
            check = data.test_x if data.test_x is not None else data.val_x
            files = save_outputs(model, report, stage / out.name, src, loaded,
                                 loaded.input_shape or (1, int(check.shape[1])), check[:64])
            files += write_report(report, stage)
    if stage is not None:
        files = [Path(args.out).parent / Path(f).name for f in files]
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    elif not args.quiet:
        a, e = report["accuracy"], report["energy"]
        if a["before"] is not None:
            print(f"accuracy {a['before'] * 100:.2f} % -> {a['after'] * 100:.2f} % ({args.mode})")
        ort = f"; ORT max diff {report['onnx']['ort_max_abs_diff']:.2g}" if report.get("onnx") else ""
        print(f"output rel. error {report['output_rel_error']:.4f}; energy saving {e['saving'] * 100:.1f} % "
              f"({e['kind']}){ort}")
        if report.get("agreement"):
            g = report["agreement"]
            print(f"held-out agreement: cosine {g['cosine_mean']:.4f} (min {g['cosine_min']:.4f}), top-10 overlap "
                  f"{g.get('top10_overlap', float('nan')):.3f}")
        print("wrote " + ", ".join(str(x) for x in files))
    return 0
