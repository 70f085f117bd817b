"""hwkit's ONNX Runtime path vs PyTorch eager, measured in one process on this machine.

Models:

* **CQMLP** topology 40-256-128-64-32-4 with BatchNorm + QuantReLU, 2-bit weights and activations
  (``hwkit.models.mlp.build_qmlp``), its BatchNorm statistics and activation scales set by a few
  training-mode forwards on random uint8 data (enough for timing; not a trained detector);
  the **float** model of the same topology (nn.Linear + BatchNorm1d + ReLU) for the reference ORT session.
* **Transformer MLP block** 768 -> 3072 -> 768 with GELU, float and ORT static int8 QDQ.

Each goes through ``hwkit.api.compile_model`` (the ``ort-cpu`` passes, with smaller run counts), so the
ONNX Runtime numbers are those of hwkit's path: export, QCDQ folding/lowering, the board's session
settings. PyTorch eager runs through the same harness (``ort.measure``) in the same process. For
comparison, the plain Brevitas QCDQ export (initialisers in the graph inputs, nothing folded) is timed
with the same session settings.

Targets (printed as PASS/MISS, not asserted): quantised CQMLP through hwkit's ORT path at batch 1
within 1.2x of the float ORT session of the same topology; its batch-256 throughput at least PyTorch
eager's (the Brevitas model). Run from the repository root::

    .venv/bin/python benchmarks/ort_vs_eager.py [--runs 2000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLOW = """
name = "ort-bench"
board_kinds = ["cpu"]
passes = [
    {{ name = "export_onnx", test_samples = 2000 }},
    {{ name = "quantize_onnx", method = "{method}" }},
    "ort.session",
    {{ name = "ort.verify", rtol = 1e-4, min_class_agreement = 0.999, min_class_agreement_ptq = {ptq_gate} }},
    {{ name = "ort.measure", warmup = 200, runs = {runs}, batch_sizes = [1, 256], batch_runs = {batch_runs} }},
]
"""


def cqmlp(quantised: bool):  # type: ignore[no-untyped-def]
    """The CQMLP topology: Brevitas 2-bit, or the float twin."""
    import torch

    from hwkit.models.mlp import build_qmlp

    torch.manual_seed(0)
    if quantised:
        m = build_qmlp(40, [256, 128, 64, 32], 4, weight_bits=2, act_bits=2)
    else:
        layers: list[torch.nn.Module] = []
        w = 40
        for h in (256, 128, 64, 32):
            layers += [torch.nn.Linear(w, h), torch.nn.BatchNorm1d(h), torch.nn.ReLU()]
            w = h
        m = torch.nn.Sequential(*layers, torch.nn.Linear(w, 4))
    gen = torch.Generator().manual_seed(0)
    m.train()
    with torch.no_grad():
        for _ in range(8):
            m(torch.randint(0, 256, (256, 40), generator=gen).float())
    return m.eval()


def transformer_mlp():  # type: ignore[no-untyped-def]
    """768 -> 3072 -> 768 with GELU (a BERT-base feed-forward block)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(768, 3072), torch.nn.GELU(), torch.nn.Linear(3072, 768)).eval()


def save(path: Path, model, shape: tuple[int, ...], dtype: str, arch: str | None = None) -> Path:  # type: ignore[no-untyped-def]
    import torch

    if arch == "qmlp":
        torch.save({"hwkit_checkpoint": 1, "arch": "qmlp",
                    "arch_kwargs": {"in_features": 40, "hidden": [256, 128, 64, 32], "out_features": 4,
                                    "weight_bits": 2, "act_bits": 2},
                    "state_dict": model.state_dict(), "input_shape": list(shape), "input_dtype": dtype}, path)
    else:
        torch.save(model.state_dict(), path)
    return path


def plain_qcdq_latency_ms(model, runs: int) -> float:  # type: ignore[no-untyped-def]
    """p50 batch-1 latency of the unfolded Brevitas QCDQ export, with the cpu board's session settings."""
    import numpy as np
    import torch
    from brevitas.export import export_onnx_qcdq

    from hwkit.backends.ort import latency_stats, make_session, time_calls
    from hwkit.board import load_board

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "plain.onnx"
        export_onnx_qcdq(model, torch.zeros(1, 40), str(path), input_names=["input"], output_names=["output"],
                         dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        sess = make_session(path, load_board("cpu"))
        x = np.random.default_rng(0).integers(0, 256, (1, 40)).astype(np.float32)
        return latency_stats(time_calls(lambda: sess.run(None, {"input": x}), 200, runs))["p50_ms"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000, help="timed batch-1 runs per runtime")
    ap.add_argument("--batch-runs", type=int, default=30, help="timed batch-256 runs per runtime")
    ap.add_argument("--workdir", help="keep the build directories here")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    from hwkit.api import compile_model

    t_start = time.perf_counter()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="hwkit-ort-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    flows = {}
    for method in ("auto", "int8-static"):
        f = work / f"ort-bench-{method}.toml"
        # The transformer block's output is a 768-wide hidden state, not class scores: its argmax agreement
        # is printed but not gated (0); the max abs error shows int8's fidelity.
        gate = 0.98 if method == "auto" else 0.0
        f.write_text(FLOW.format(method=method, runs=args.runs, batch_runs=args.batch_runs, ptq_gate=gate))
        flows[method] = str(f)

    sys.modules["bench_models"] = sys.modules[__name__]
    q = cqmlp(True)
    jobs = [
        ("CQMLP w2a2 (Brevitas)", save(work / "cqmlp_q.pt", q, (1, 40), "UINT8", "qmlp"), "auto", {}),
        ("CQMLP float", save(work / "cqmlp_f.pt", cqmlp(False), (1, 40), "UINT8"), "auto",
         {"arch": "bench_models:_float_cqmlp", "input_shape": (1, 40), "input_dtype": "UINT8"}),
        ("MLP 768-3072-768 float", save(work / "tmlp.pt", transformer_mlp(), (1, 768), "FLOAT32"), "auto",
         {"arch": "bench_models:transformer_mlp", "input_shape": (1, 768)}),
        ("MLP 768-3072-768 int8 QDQ", work / "tmlp.pt", "int8-static",
         {"arch": "bench_models:transformer_mlp", "input_shape": (1, 768)}),
    ]
    reps = {}
    for name, path, method, kw in jobs:
        reps[name] = compile_model(path, "cpu", work / name.replace(" ", "_"), flow=flows[method], **kw)
    plain_ms = plain_qcdq_latency_ms(q, args.runs)

    print(f"hwkit ORT path vs PyTorch eager, one process; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, {args.runs} batch-1 runs, {args.batch_runs} batch-256 runs")
    print(f"{'model':28s} {'ORT p50 b1':>11s} {'eager p50 b1':>13s} {'eager/ORT':>9s} "
          f"{'ORT b256/s':>12s} {'eager b256/s':>13s} {'ORT/eager':>9s}  verification")
    for name, rep in reps.items():
        m = rep.measurement
        assert m is not None
        e = m["eager"]
        o256 = next(r for r in m["throughput"] if r["batch"] == 256)["samples_per_s"]
        e256 = next(r for r in e["throughput"] if r["batch"] == 256)["samples_per_s"]
        v = rep.verification[-1]
        print(f"{name:28s} {m['latency_b1']['p50_ms'] * 1e3:9.1f}us {e['latency_b1']['p50_ms'] * 1e3:11.1f}us "
              f"{m['eager_ratio_b1']:9.1f} {o256:12,.0f} {e256:13,.0f} {o256 / e256:9.2f}  "
              f"agree {v['class_agreement']:.4f} max err {v['max_abs_err']:.2g}")
    qm, fm = reps["CQMLP w2a2 (Brevitas)"].measurement, reps["CQMLP float"].measurement
    assert qm is not None and fm is not None
    q_ms, f_ms = qm["latency_b1"]["p50_ms"], fm["latency_b1"]["p50_ms"]
    print(f"\nplain Brevitas QCDQ export in ORT (nothing folded): p50 {plain_ms * 1e3:.1f} us at batch 1 "
          f"({plain_ms / q_ms:.2f}x hwkit's folded/lowered graph)")
    ratio = q_ms / f_ms
    print(f"target 1: quantised CQMLP ORT / float CQMLP ORT latency at batch 1 = {ratio:.2f} (<= 1.2): "
          f"{'PASS' if ratio <= 1.2 else 'MISS'}")
    o256 = next(r for r in qm["throughput"] if r["batch"] == 256)["samples_per_s"]
    e256 = next(r for r in qm["eager"]["throughput"] if r["batch"] == 256)["samples_per_s"]
    print(f"target 2: quantised CQMLP ORT / PyTorch eager (Brevitas) throughput at batch 256 = {o256 / e256:.1f} "
          f"(>= 1): {'PASS' if o256 >= e256 else 'MISS'}")
    tq = reps["MLP 768-3072-768 int8 QDQ"].measurement
    tf = reps["MLP 768-3072-768 float"].measurement
    assert tq is not None and tf is not None
    print(f"transformer MLP int8 QDQ / float ORT latency at batch 1 = "
          f"{tq['latency_b1']['p50_ms'] / tf['latency_b1']['p50_ms']:.2f}")
    energy = qm.get("energy")
    if energy:
        print(f"CQMLP w2a2 energy ({energy['source']}): {energy['j_per_inference_b1'] * 1e6:.2f} uJ/inference at "
              f"batch 1, {energy['j_per_sample_best_batch'] * 1e6:.3f} uJ/sample at batch {qm['best_batch']}")
    print(f"total {time.perf_counter() - t_start:.0f} s; builds in {work}")
    return 0


def _float_cqmlp():  # type: ignore[no-untyped-def]
    """Architecture of the float CQMLP twin (for --arch)."""
    return cqmlp(False)


if __name__ == "__main__":
    sys.exit(main())
