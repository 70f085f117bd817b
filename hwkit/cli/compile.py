"""``hwkit compile MODEL --target BOARD``: the main job."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hwkit.cli.args import finn_dtype, integer, json_object, number, shape
from hwkit.errors import InputError


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    c = sub.add_parser("compile", help="compress, export, build and report a model for a target")
    c.add_argument("model", help="hwkit checkpoint / state dict (.pt), trusted pickle, or QONNX (.onnx)")
    c.add_argument("--target", required=True, help="board name (see `hwkit boards`) or path to a board .toml")
    c.add_argument("--out", default="build", help="build directory (default: build); must be new, empty or an "
                   "earlier hwkit build")
    c.add_argument("--force", action="store_true",
                   help="build into a non-empty directory hwkit did not create (what was there is never removed)")
    c.add_argument("--flow", help="flow name or .toml (default: the board's default_flow)")
    c.add_argument("--bitstream", action="store_true", help="build the bitstream with Vivado (flow finn-bitstream)")
    c.add_argument("--clock-ns", type=number(0, 1e6, lo_open=True),
                   help="clock period in ns (default: the board's clock_ns)")
    c.add_argument("--target-fps", type=number(1, 1e12), help="throughput to fold for, frames/s (1 .. 1e12)")
    c.add_argument("--input-shape", type=shape, help="input shape with batch, e.g. 1,64")
    c.add_argument("--input-dtype", type=finn_dtype, help="FINN data type of the input, e.g. UINT8, INT8, FLOAT32")
    c.add_argument("--arch", help="module:function that builds the architecture for a plain state dict")
    c.add_argument("--arch-kwargs", type=json_object, help="JSON object of keyword arguments for --arch")
    c.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a full pickle (runs code from the file: only for files you trust)")
    c.add_argument("--golden-batch", type=integer(1, 65536),
                   help="samples in the verification batch (default 32; 1 .. 65536)")
    c.add_argument("--from", dest="from_step", help="re-run from this step (number, id or pass name)")
    c.add_argument("--to", dest="to_step", help="stop after this step")
    c.add_argument("--quantize", metavar="wNaM",
                   help="quantise a float model with Brevitas first (a 'quantize' pass before export), e.g. w4a4")
    c.add_argument("--calib", help="calibration data for --quantize: 'digits', .npz (x[, y]), image folder, "
                   "or pkg.mod:fn returning a DataLoader")
    c.add_argument("--quantize-method", choices=["ptq", "qat"],
                   help="with --quantize: ptq or qat (PTQ then distillation epochs; the default with --qat-epochs)")
    c.add_argument("--qat-epochs", type=integer(0, 100_000), help="with --quantize-method qat: epochs (default 3)")
    c.add_argument("--layer-bits", help="with --quantize: per-layer weight widths NAME=BITS[,NAME=BITS...]")
    c.add_argument("--finn-option", action="append", default=[], metavar="KEY=VALUE",
                   help="set a finn-plus DataflowBuildConfig field for every finn.* pass (repeatable; VALUE is "
                   "JSON or a plain string), e.g. --finn-option mvau_wwidth_max=1024 (see docs/finn-models.md)")
    c.add_argument("--exporter", choices=("auto", "torchscript", "dynamo"),
                   help="PyTorch ONNX exporter for the QONNX export (default auto: Brevitas's default, then the "
                   "TorchScript exporter if that fails)")
    c.add_argument("--runs", type=integer(1, 10_000_000), metavar="N",
                   help="timed runs of each measurement on measuring targets (--target cpu; default 500); "
                   "warm-up and batch runs shrink with it")
    c.add_argument("--require-fit", action="store_true", help="exit with 6 when the design does not fit the part")
    out = c.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print report.json to stdout, nothing else")
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def finn_options(items: list[str]) -> dict[str, Any]:
    """``--finn-option KEY=VALUE`` items as DataflowBuildConfig fields (checked against finn-plus)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--finn-option '{item}': expected KEY=VALUE, e.g. mvau_wwidth_max=1024")
        out[key.strip()] = _value(value)
    if out:
        import dataclasses

        from finn.builder.build_dataflow_config import DataflowBuildConfig

        fields = {f.name for f in dataclasses.fields(DataflowBuildConfig)}
        hwkit_owned = {"output_dir", "synth_clk_period_ns", "board", "fpga_part", "shell_flow_type"}
        bad = sorted(set(out) - fields)
        if bad:
            raise InputError(f"--finn-option: finn-plus DataflowBuildConfig has no field(s) {', '.join(bad)}")
        owned = sorted(set(out) & hwkit_owned)
        if owned:
            raise InputError(f"--finn-option: {', '.join(owned)} come from the board and --clock-ns; "
                             "use --target/--clock-ns")
    return out


def with_overrides(flow: Any, finn: dict[str, Any], exporter: str | None, runs: int | None) -> Any:
    """``flow`` with command-line parameters merged into its passes (they win over the flow file's)."""
    import dataclasses

    if runs is not None and runs < 1:
        raise InputError(f"--runs must be >= 1, got {runs}")
    steps = []
    for step in flow.steps:
        params = dict(step.params)
        name = step.spec.name
        if finn and name.startswith("finn."):
            params.update(finn)
        if exporter and name == "export_qonnx":
            params["exporter"] = exporter
        if runs is not None and name == "ort.measure":
            params.update(runs=runs, warmup=min(int(params.get("warmup", 50)), runs),
                          batch_runs=min(int(params.get("batch_runs", 30)), runs),
                          energy_runs=min(int(params.get("energy_runs", 200)), runs))
        steps.append(dataclasses.replace(step, params=params))
    return dataclasses.replace(flow, steps=tuple(steps))


def run(args: argparse.Namespace) -> int:
    from hwkit.api import compile_model, flow_for
    from hwkit.board import load_board

    progress = None
    if not (args.json or args.quiet):
        from hwkit.cli.console import RichProgress

        progress = RichProgress()
    if args.bitstream and args.flow:
        raise InputError("--bitstream selects the finn-bitstream flow; leave out --flow")
    flow: Any = "finn-bitstream" if args.bitstream else args.flow
    finn = finn_options(args.finn_option)
    steps: list[Any] = []  # what the command line adds to the flow, whichever flow runs
    if args.quantize or args.calib:
        from hwkit.compress.quantize.run import with_quantize

        params = _quantize_params(args)
        steps.append(lambda f: with_quantize(f, params))
    if finn or args.exporter or args.runs is not None:
        steps.append(lambda f: with_overrides(f, finn, args.exporter, args.runs))

    def adjust(f: Any) -> Any:
        for step in steps:
            f = step(f)
        return f

    if flow is not None and steps:
        flow = adjust(flow_for(load_board(args.target), flow))
    # with no --flow, the flow may be chosen from the exported graph: the additions go to whichever runs
    adjust_auto = adjust if flow is None and steps else None
    report = compile_model(
        args.model, args.target, args.out, flow=flow, adjust=adjust_auto,
        from_step=args.from_step, to_step=args.to_step,
        progress=progress, force=args.force, clock_ns=args.clock_ns, target_fps=args.target_fps,
        input_shape=args.input_shape,
        input_dtype=args.input_dtype, arch=args.arch, arch_kwargs=args.arch_kwargs,
        trust_pickle=args.trust_pickle or None, golden_batch=args.golden_batch,
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    elif not args.quiet:
        from hwkit.cli.console import print_report

        print_report(report, args.out)
    return 6 if args.require_fit and report.fits is False else 0


def _quantize_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``quantize`` pass's parameters from ``--quantize wNaM --calib DATA`` (checked before any work)."""
    from hwkit.compress.quantize.run import parse_bits

    if not (args.quantize and args.calib):
        raise InputError("--quantize and --calib go together, e.g. --quantize w4a4 --calib digits")
    parse_bits(args.quantize)  # a bad spec fails before any work
    params: dict[str, Any] = {"bits": args.quantize, "calib": args.calib}
    if args.quantize_method:
        params["method"] = args.quantize_method
    if args.qat_epochs is not None:
        params["qat_epochs"] = args.qat_epochs
    if args.layer_bits:
        params["layer_bits"] = args.layer_bits
    return params
