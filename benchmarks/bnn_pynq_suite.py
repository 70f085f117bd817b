"""FINN's own model suite (Brevitas's BNN-PYNQ models) through hwkit and through raw finn-plus, side by side.

For each model (random init, BatchNorm statistics from training-mode passes on random UINT8 inputs,
see tests/handoff/bnn.py), in one process, one after the other:

1. **hwkit**: ``compile_model`` of the saved state dict with ``--arch brevitas_examples.bnn_pynq.models:<name>``
   (``pretrained=False``), UINT8 input, default flow finn-estimate for the target, into a fresh
   directory, up to ``finn.generate_estimate_reports`` (``--to``; the flow's last pass, hw_codegen,
   writes HLS sources raw finn-plus's estimate steps do not, and takes 2 min for sfc_1w2a alone):
   QONNX export, the same finn-plus steps and the two hand-off verifications on the 32-sample
   golden batch.
2. **raw finn-plus**: Brevitas ``export_qonnx`` + qonnx cleanup, then ``build_dataflow_cfg`` with
   finn-plus's ``estimate_only_dataflow_steps`` (hwkit.backends.finn.raw), into a fresh directory.

The ratio is (1) / (2) wall time. (1) does more than (2): it verifies every hand-off (running the
graphs in Python; convolutions sample by sample) and checks the export against PyTorch; (2) verifies
nothing. Both sides' estimate files (layer resources, layer cycles, network
performance) must be identical, else the row is marked MISMATCH. Imports are paid before timing
(one throw-away build of the first model on each side). Models outside finn-plus's defaults
(resnet18_4w4a; brevitas_examples' quant MobileNet v1, 4-bit, 224x224, depthwise-separable) run on the
hwkit side only (raw finn-plus's default steps cannot map them), with no ``--flow``: the row records
the flow hwkit chose from the graph (finn-recipes), with ``--recipe-golden-batch`` samples; an error is
recorded in the row. ``verify_s`` is the time of the two hand-off verification passes.

    .venv/bin/python benchmarks/bnn_pynq_suite.py [--models tfc_1w1a,cnv_1w1a] [--target zcu104] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT = ("tfc_1w1a", "tfc_2w2a", "sfc_1w2a", "lfc_1w1a", "cnv_1w1a", "cnv_2w2a")
MOBILENET = "quant_mobilenet_v1_4b"
BEYOND = ("resnet18_4w4a", MOBILENET)
ORDER = ("tfc_1w1a", "tfc_2w2a", "sfc_1w2a", "lfc_1w1a", "cnv_1w1a", "cnv_2w2a", "resnet18_4w4a", MOBILENET)


def _model_and_args(name: str) -> tuple[Any, tuple[int, ...], dict[str, Any]]:
    """The untrained model (BatchNorm set as in tests/handoff/bnn.py), its input shape, compile settings."""
    from tests.handoff.bnn import bnn_pynq, calibrate, compile_args, input_shape

    if name == MOBILENET:
        from brevitas_examples.imagenet_classification.models import quant_mobilenet_v1_4b

        shape = (1, 3, 224, 224)
        args = {"arch": f"brevitas_examples.imagenet_classification.models:{name}",
                "arch_kwargs": (("pretrained", False),), "input_shape": shape, "input_dtype": "UINT8"}
        return calibrate(quant_mobilenet_v1_4b(pretrained=False), shape), shape, args
    return calibrate(bnn_pynq(name), input_shape(name)), input_shape(name), compile_args(name)


def run_model(name: str, target: str, work: Path, raw_side: bool = True, golden_batch: int = 32) -> dict[str, Any]:
    import torch

    from hwkit.api import compile_model
    from hwkit.backends.finn.raw import export_like_finn, hwkit_estimates, raw_estimate
    from hwkit.board import load_board
    from hwkit.errors import HwkitError
    from tests.handoff.bnn import save_state

    torch.manual_seed(0)
    model, shape, args = _model_and_args(name)
    pt = save_state(model, work / f"{name}.pt")
    row: dict[str, Any] = {"model": name, "target": target}
    t0 = time.perf_counter()
    try:
        rep = compile_model(pt, target, work / f"hw-{name}", to_step="finn.generate_estimate_reports",
                            golden_batch=golden_batch, **args)
    except HwkitError as exc:
        row.update(hwkit_s=round(time.perf_counter() - t0, 2), error=str(exc).splitlines()[0][:400])
        return row
    row["hwkit_s"] = round(time.perf_counter() - t0, 2)
    row["flow"] = rep.flow
    row["verify_s"] = round(sum(p.seconds for p in rep.passes if "verify" in p.id), 2)
    row["export_s"] = round(sum(p.seconds for p in rep.passes if p.id.endswith("export_qonnx")), 2)
    row["verified"] = [(v["stage"], v["samples"], v["ok"], v.get("tie_samples")) for v in rep.verification]
    row["golden_draw"] = rep.model.get("golden_draw")
    row["LUT"] = rep.resources["LUT"].used.value
    row["fps"] = rep.performance["throughput_fps"].value
    if raw_side:
        t0 = time.perf_counter()
        q = export_like_finn(model, shape, "UINT8", work / f"raw-{name}.onnx")
        secs, raw = raw_estimate(q, work / f"raw-{name}", load_board(target))
        row["raw_s"] = round(time.perf_counter() - t0, 2)
        row["raw_build_s"] = round(secs, 2)
        row["ratio"] = round(row["hwkit_s"] / row["raw_s"], 3)
        row["estimates_identical"] = raw == hwkit_estimates(work / f"hw-{name}")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(ORDER))
    ap.add_argument("--target", default="zcu104")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--recipe-golden-batch", type=int, default=32,
                    help="golden samples for the models built with recipes (their Python verification is slow)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bnn-suite-"))
    rows = []
    try:
        warm = work / "warm"
        warm.mkdir()
        run_model("tfc_1w1a", args.target, warm)  # pays every import on both sides
        for name in args.models.split(","):
            beyond = name in BEYOND
            rows.append(run_model(name, args.target, work, raw_side=not beyond,
                                  golden_batch=args.recipe_golden_batch if beyond else 32))
            if not args.json:
                print(json.dumps(rows[-1]), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    bad = [r for r in rows if r["model"] not in BEYOND and ("error" in r or not r.get("estimates_identical"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
