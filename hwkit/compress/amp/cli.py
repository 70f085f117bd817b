"""``hwkit prune``: make a model physically smaller (AMP: adaptive MLP pruning).

    hwkit prune model.pt --method amp --calib digits --delta-e 0.01 --out pruned.pt [--distill-epochs 30]
    hwkit prune MODEL_DIR --calib sentences.txt --remove 40% --out pruned_dir [--distill-epochs 4]

A Hugging Face model directory (``AutoModel.from_pretrained(dir, local_files_only=True)``) is written back as a
directory that reloads (config.json records the pruned Linear shapes). Token calibration sets: a ``.txt`` (one
sample per line, tokenised with the model directory's or ``--tokenizer``'s tokenizer) or a ``.npz`` of named
integer arrays (input_ids, attention_mask, token_type_ids, ...); batches are padded to their longest sample.

Writes the pruned model (a hwkit checkpoint with the new ``hidden`` widths when the input was a
qmlp/cqmlp checkpoint; otherwise a state dict and ``pruned.widths.json``) and, next to it,
``prune_report.json``, ``prune_report.md`` and ``prune_widths.svg``. See docs/amp.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hwkit.cli.args import integer, json_object, number


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("prune", help="prune a model's MLP hidden neurons (AMP) into a smaller model")
    p.add_argument("model", help="hwkit checkpoint, state dict (with --arch), trusted pickle (.pt), or a Hugging Face "
                   "model directory")
    p.add_argument("--method", choices=["amp"], default="amp", help="pruning method (default amp)")
    p.add_argument("--calib", required=True, help="'digits' (scikit-learn's bundled digits), a .npy of inputs, or a "
                   "token set: .txt (one sample per line) or .npz (input_ids, attention_mask, ...)")
    p.add_argument("--tokenizer", help="Hugging Face directory whose tokenizer reads a .txt --calib (default: the "
                   "model directory)")
    p.add_argument("--max-length", type=integer(1, 1 << 20),
                   help="tokens per sample at most (default: the model directory's "
                   "sentence-transformers max_seq_length, else 128)")
    p.add_argument("--labels", help=".npy of integer labels for --calib (accuracy, --criterion ce)")
    p.add_argument("--out", required=True, help="pruned model path (.pt); reports are written next to it")
    p.add_argument("--criterion", choices=["entropy", "ce"], default="entropy",
                   help="entropy: label-free in-batch similarity entropy (default); ce: cross-entropy")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--delta-e", type=number(0, 1e6), default=1e-2,
                        help="accepted loss rise per block, nats (default 0.01)")
    target.add_argument("--delta-e-rel", type=number(0, 1e6),
                        help="accepted loss rise per block as a fraction of the entropy "
                        "before pruning (e.g. 0.001)")
    target.add_argument("--remove", type=percent, help="target share of MLP parameters to remove, e.g. 40%% or 0.4: "
                        "ΔE is searched for it")
    p.add_argument("--rise", choices=["signed", "abs"], default="signed",
                   help="signed: E-E_prev <= dE (paper); abs: |E-E_prev| <= dE (stricter)")
    p.add_argument("--temp-inv", type=number(0, 1e6, lo_open=True),
                   help="1/temperature of the similarity softmax (15; token sets: 5, "
                   "where 15 saturates a sentence encoder's in-batch softmax)")
    p.add_argument("--steps", type=integer(1, 64), default=6, help="binary-search halvings per block (6)")
    p.add_argument("--batch-size", type=integer(1, 1 << 20), default=128,
                   help="scoring/validation batch (the softmax size; 128)")
    p.add_argument("--layer-wise", action="store_true", help="re-score each block after the later ones are pruned")
    p.add_argument("--embed", choices=["auto", "output", "head"], default="auto",
                   help="embedding: output = pooled last hidden state (attention-masked), head = input of "
                   "--embed-module / the last Linear called; auto = output for token inputs (default)")
    p.add_argument("--pool", choices=["auto", "cls", "mean", "max"], default="auto",
                   help="token pooling (auto: the sentence-transformers config, else mean for the output, cls for "
                   "a head input)")
    p.add_argument("--embed-module", help="module whose input is the embedding (default: the last Linear called)")
    p.add_argument("--reconstruct", choices=["auto", "on", "off"], default="auto",
                   help="closed-form re-fit of each pruned block's output layer to the unpruned model's outputs "
                   "(ridge least squares, seconds; auto: on for token sets)")
    p.add_argument("--reconstruct-ridge", type=number(0, 1e6), default=0.1,
                   help="ridge strength of the re-fit, relative to the activations' mean square (0.1)")
    p.add_argument("--reconstruct-steps", type=integer(0, 10**6), default=None,
                   help="after the closed form, Adam steps per block fitting fc1 and fc2 to the unpruned model's "
                   "LayerNorm output on cached rows, early-stopped on the validation split (0: none; default 600)")
    p.add_argument("--reconstruct-lr", type=number(0, 10, lo_open=True), default=None,
                   help="learning rate of that fit (3e-4)")
    p.add_argument("--recover-calib", metavar="DATA",
                   help="more unlabelled samples for the recovery only (a .txt or .npz token set like --calib): "
                   "reconstruction and distillation train on the calibration split plus these")
    p.add_argument("--distill-epochs", type=integer(0, 10**6), default=0,
                   help="feature-distillation recovery epochs (0: none)")
    p.add_argument("--distill-lr", type=number(0, 10, lo_open=True),
                   help="distillation peak learning rate (1e-3; token encoders 2e-4)")
    p.add_argument("--distill-patience", type=integer(0, 10**6), default=5, help="early-stop patience in epochs (5)")
    p.add_argument("--distill-batch", type=integer(1, 1 << 20), help="distillation batch (64; token encoders 16)")
    p.add_argument("--seed", type=integer(0, 2**32 - 1), default=0, help="data split / shuffling seed")
    p.add_argument("--threads", type=integer(1, 1024), default=1,
                   help="torch threads (default 1: fastest for small models)")
    p.add_argument("--arch", help="module:function that builds the architecture for a plain state dict")
    p.add_argument("--arch-kwargs", type=json_object, help="JSON object of keyword arguments for --arch")
    p.add_argument("--trust-pickle", action="store_true", help="allow a full pickle (runs code from the file)")
    p.add_argument("--force", action="store_true", help="write into an existing non-hwkit --out directory (HF models)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print prune_report.json (without index lists)")
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")


def percent(text: str) -> float:
    """``40%`` or ``0.4`` -> 0.4 (argparse type)."""
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share like 40% or 0.4, got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"the share must be between 0 and 100 %, got {text!r}")
    return v


def run(args: argparse.Namespace) -> int:
    """Handler of ``hwkit prune``."""
    import contextlib

    from hwkit.compress.amp.run import (
        check_data_fits,
        configs_from,
        load_data,
        prune_model,
        report_json,
        save_pruned,
        write_report,
    )
    from hwkit.config import CompileSettings
    from hwkit.errors import InputError
    from hwkit.outdir import staged_files

    kwargs: tuple[tuple[str, Any], ...] = args.arch_kwargs or ()
    import sys

    import torch

    from hwkit.data.tokens import is_token_file, st_pooling
    from hwkit.load import is_hf_dir, load_any

    torch.set_num_threads(args.threads)
    src = Path(args.model)
    hf = is_hf_dir(src)
    with contextlib.ExitStack() as stack:  # non-HF outputs: staged next to --out, moved in together
        stage = None if hf else stack.enter_context(staged_files(Path(args.out)))
        loaded = load_any(src, CompileSettings(arch=args.arch, arch_kwargs=kwargs, trust_pickle=args.trust_pickle))
        tok_dir = Path(args.tokenizer) if args.tokenizer else (src if hf else None)
        tokens = is_token_file(args.calib)
        data = load_data(args.calib, args.labels, args.seed, tok_dir, args.max_length, loaded.module)
        extra = None
        if args.recover_calib:
            from hwkit.data.tokens import fit_to_model, load_tokens

            if not Path(args.recover_calib).is_file():
                raise InputError(f"--recover-calib {args.recover_calib}: file not found")
            if not (tokens and is_token_file(args.recover_calib)):
                raise InputError("--recover-calib takes a token set (.txt or .npz) and needs a token --calib")
            extra = fit_to_model(load_tokens(args.recover_calib, tok_dir, args.max_length)[0], loaded.module)
        check_data_fits(loaded.module, data, args.calib)
        pool = args.pool
        if pool == "auto" and tokens:
            pool = st_pooling(tok_dir) or "auto"
        params = {"criterion": args.criterion, "temp_inv": args.temp_inv or (5.0 if tokens else 15.0),
                  "delta_e": args.delta_e,
                  "delta_e_rel": args.delta_e_rel, "remove": args.remove,
                  "steps": args.steps, "batch_size": args.batch_size, "layer_wise": args.layer_wise,
                  "pool": pool, "embed_module": args.embed_module, "embed": args.embed, "rise": args.rise,
                  "reconstruct": args.reconstruct, "reconstruct_ridge": args.reconstruct_ridge,
                  "distill_epochs": args.distill_epochs, "distill_patience": args.distill_patience,
                  "distill_seed": args.seed,
                  "distill_lr": args.distill_lr or (2e-4 if tokens else 1e-3),
                  "distill_batch_size": args.distill_batch or (16 if tokens else 64)}
        if tokens:
            params["distill_warmup_epochs"] = 1
        cfg, dcfg = configs_from(params)
        tune = {k: v for k, v in (("tune_steps", args.reconstruct_steps), ("tune_lr", args.reconstruct_lr))
                if v is not None}
        say = None if (args.json or args.quiet) else print

        def warn(msg: str) -> None:
            print(f"warning: {msg}", file=sys.stderr)

        out = Path(args.out)
        if hf:
            from hwkit.compress.amp.run import save_pruned_hf
            from hwkit.outdir import claim

            od = claim(out, "prune", force=args.force)
            try:
                pruned, report = prune_model(loaded.module, data, cfg, dcfg, say, warn, extra, **tune)
                files = save_pruned_hf(pruned, report, od.path, src)
                files += write_report(report, od.path)
            except BaseException:
                od.rollback()
                raise
        else:
            assert stage is not None  # staged unless the output is a Hugging Face folder
            pruned, report = prune_model(loaded.module, data, cfg, dcfg, say, warn, extra, **tune)
            files = save_pruned(pruned, report, stage / out.name, src, loaded)
            files += write_report(report, stage)
    if stage is not None:
        files = [Path(args.out).parent / Path(f).name for f in files]
    if args.json:
        print(report_json(report))
    elif not args.quiet:
        p, f, a = report["params"], report["flops_per_sample"], report["accuracy"]
        widths = ", ".join(f"{b['width_before']}->{b['width_after']}" for b in report["blocks"])
        print(f"widths {widths}; params {p['before']:,} -> {p['after']:,} (-{p['reduction'] * 100:.1f} %), "
              f"FLOPs {f['before']:,} -> {f['after']:,} (-{f['reduction'] * 100:.1f} %)")
        if a["before"] is not None:
            print(f"accuracy {a['before'] * 100:.2f} % -> {a['after_prune'] * 100:.2f} % after pruning"
                  + (f" -> {a['after_reconstruct'] * 100:.2f} % after reconstruction"
                     if a.get("after_reconstruct") is not None else "")
                  + (f" -> {a['after_distill'] * 100:.2f} % after distillation" if a["after_distill"] is not None
                     else ""))
        for k, v in (report.get("agreement") or {}).items():
            print(f"held-out agreement {k.replace('_', ' ')}: cosine {v['cosine_mean']:.4f} (min {v['cosine_min']:.4f})"
                  f", top-10 overlap {v.get('top10_overlap', float('nan')):.3f}")
        print(f"MLP parameters removed {report['mlp_params_removed'] * 100:.1f} % (ΔE {report['delta_e_used']:.4g} "
              f"nats; embedding: {report['embedding']})")
        print("wrote " + ", ".join(str(x) for x in files))
    return 0
