"""Bit-exactness of a compiled CQMLP on a whole test split: Brevitas (torch) vs the FINN HW graph.

    .venv/bin/python benchmarks/cqmlp_bitexact.py [--model examples/cqmlp_w2a2_synthetic.pt]
        [--build /tmp/cq] [--seconds 60] [--split time] [--limit N] [--jobs 2]

Compiles the checkpoint (``hwkit compile --target zcu104 --target-fps 100000``, served from the build
directory's checkpoints when it is unchanged) unless ``--build`` names a finished build, regenerates
the test split the checkpoint was trained on (the synthetic data are a pure function of the seed),
and runs every test window through

- the Brevitas model in PyTorch (eval mode, float logits);
- the streamlined FINN graph (``passes/04-finn.streamline/model.onnx``, batched);
- the folded HW graph (``passes/12-finn.minimize_bit_width/model.onnx``, the input of the
  ``finn-hw`` verify pass), through hwkit's executor (MVAU and Thresholding on the whole batch with
  FINN's integer arithmetic, hwkit/backends/finn/batched.py; ``--jobs`` splits the windows over processes).

It prints the number of windows, the predicted classes that differ between PyTorch and the HW graph
(apart from exact ties), the largest absolute logit error, and the integer-domain elements (the last
MVAU's output before the float Mul/Add tail) that differ between the streamlined and the HW graph.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

STREAMLINED = "04-finn.streamline"
HW = "12-finn.minimize_bit_width"
TIE_TOL = 1e-6


def pass_model(build_dir: Path, step: str) -> Path:
    """``model.onnx`` of pass ``step`` in a hwkit build directory."""
    path = Path(build_dir) / "passes" / step / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {build_dir} a finished finn-estimate build?)")
    return path


def _ties(logits: np.ndarray, tol: float) -> np.ndarray:
    """Rows whose two largest logits are equal within ``tol`` (argmax is then arbitrary)."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) <= tol


def _execute_hw(path: Path, xf: np.ndarray, work_dir: Path, jobs: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The HW graph sample by sample, the windows split into ``jobs`` contiguous chunks run by as many processes."""
    from hwkit.backends.finn.execute import execute_finn_graph

    if jobs <= 1 or len(xf) < 2 * jobs:
        return execute_finn_graph(path, xf, work_dir)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks = np.array_split(xf, jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(execute_finn_graph, [path] * jobs, chunks, [work_dir / f"job{i}" for i in range(jobs)]))
    ints = [p[1] for p in parts]
    return (np.concatenate([np.asarray(p[0]) for p in parts]),
            None if any(i is None for i in ints) else np.concatenate([np.asarray(i) for i in ints]))


def bitexact_check(module: Any, build_dir: Path, x: np.ndarray, work_dir: Path,
                   labels: np.ndarray | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run ``x`` (uint8 windows) through torch, the streamlined and the HW FINN graphs and compare.

    Returns counts: samples, class mismatches torch vs HW (ties excluded, and the ties counted),
    the largest absolute logit error torch vs HW and streamlined vs HW, integer-domain mismatches
    streamlined vs HW, and, with ``labels``, the accuracies of both sides.
    """
    import torch

    from hwkit.backends.finn.execute import execute_finn_graph

    xf = np.asarray(x, dtype=np.float32)
    module.eval()
    with torch.no_grad():
        ref = np.concatenate([module(torch.from_numpy(xf[i:i + 8192])).numpy() for i in range(0, len(xf), 8192)])
    t0 = time.perf_counter()
    st_out, st_int = execute_finn_graph(pass_model(build_dir, STREAMLINED), xf, work_dir)
    t_st = time.perf_counter() - t0
    t0 = time.perf_counter()
    hw_out, hw_int = _execute_hw(pass_model(build_dir, HW), xf, work_dir, jobs)
    t_hw = time.perf_counter() - t0
    ref2 = ref.reshape(len(xf), -1).astype(np.float64)
    hw2 = np.asarray(hw_out, np.float64).reshape(len(xf), -1)
    st2 = np.asarray(st_out, np.float64).reshape(len(xf), -1)
    tol = TIE_TOL * max(1.0, float(np.abs(ref2).max()))
    tie = _ties(ref2, tol) | _ties(hw2, tol)
    differ = ref2.argmax(1) != hw2.argmax(1)
    res: dict[str, Any] = {
        "samples": int(len(xf)),
        "class_mismatches": int((differ & ~tie).sum()),
        "class_mismatches_at_ties": int((differ & tie).sum()),
        "ties": int(tie.sum()),
        "max_abs_error_torch_vs_hw": float(np.abs(ref2 - hw2).max()) if len(xf) else 0.0,
        "max_abs_error_streamlined_vs_hw": float(np.abs(st2 - hw2).max()) if len(xf) else 0.0,
        "max_abs_logit": float(np.abs(ref2).max()) if len(xf) else 0.0,
        "windows_logit_error_over_1e-3": int((np.abs(ref2 - hw2).max(1) > 1e-3 * max(1.0, float(np.abs(ref2).max())))
                                             .sum()) if len(xf) else 0,
        "int_tensor": hw_int is not None and st_int is not None,
        "int_mismatches": None, "int_elements": None,
        "seconds": {"streamlined": round(t_st, 2), "hw": round(t_hw, 2)},
    }
    if hw_int is not None and st_int is not None:
        a = np.asarray(st_int).reshape(len(xf), -1)
        b = np.asarray(hw_int).reshape(len(xf), -1)
        res["int_mismatches"] = int((a != b).sum()) if a.shape == b.shape else int(a.size)
        res["int_elements"] = int(b.size)
        res["int_samples_mismatched"] = int((a != b).any(1).sum()) if a.shape == b.shape else int(len(xf))
    if labels is not None:
        res["torch_accuracy"] = float((ref2.argmax(1) == labels).mean())
        res["hw_accuracy"] = float((hw2.argmax(1) == labels).mean())
    res["ok"] = bool(res["class_mismatches"] == 0 and res["int_mismatches"] == 0)
    return res


def _test_split(meta: dict[str, Any], seconds: float | None, split_mode: str | None, seed: int | None):
    from hwkit.compress.cqmlp.train import TrainConfig, prepare_data

    cfg_meta = meta.get("config", {})
    synth = (meta.get("data") or {}).get("synthetic") or {}
    secs = seconds or synth.get("duration_s")
    if secs is None:
        raise SystemExit("the checkpoint was not trained on synthetic data: pass --seconds")
    cfg = TrainConfig(window=cfg_meta.get("window", 4), stride=cfg_meta.get("stride", 1),
                      split=split_mode or cfg_meta.get("split", "time"),
                      fractions=tuple(cfg_meta.get("fractions", (0.85, 0.10, 0.05))),
                      seed=synth.get("seed", 0) if seed is None else seed)
    split, _ = prepare_data(None, float(secs), cfg)
    return split, cfg, float(secs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / "examples"
                    / "cqmlp_w2a2_synthetic.pt")
    ap.add_argument("--build", type=Path, default=None, help="a finished build dir (default: compile to a temp dir)")
    ap.add_argument("--seconds", type=float, default=None, help="synthetic seconds per file (default: from meta)")
    ap.add_argument("--split", default=None, help="time | random (default: the checkpoint's split)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="only the first N test windows")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the sample-by-sample HW graph (default 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from hwkit.config import CompileSettings
    from hwkit.load import load_model

    loaded = load_model(args.model, CompileSettings())
    split, cfg, secs = _test_split(dict(loaded.meta or {}), args.seconds, args.split, args.seed)
    test = split.test if args.limit is None else split.test.take(np.arange(min(args.limit, len(split.test))))
    with tempfile.TemporaryDirectory(prefix="hwkit-bitexact-") as tmp:
        build = args.build
        if build is None:
            import subprocess

            build = Path(tmp) / "build"
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "hwkit.cli", "compile", str(args.model), "--target", "zcu104",
                                   "--target-fps", "100000", "--out", str(build), "--quiet"], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                raise SystemExit(f"compile failed ({proc.returncode}): {proc.stderr[-2000:]}")
            print(f"compiled in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        res = bitexact_check(loaded.module, build, test.x, Path(tmp) / "work", labels=test.y, jobs=args.jobs)
    res |= {"model": str(args.model), "split": cfg.split, "synthetic_seconds": secs, "seed": cfg.seed,
            "test_class_counts": dict(zip(("Benign", "DoS", "Fuzzing", "RPM"), test.class_counts()))}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['samples']:,} {cfg.split}-split test windows ({secs:g} s synthetic files, seed {cfg.seed}; "
          f"{res['test_class_counts']})")
    print(f"  class mismatches torch vs FINN HW: {res['class_mismatches']} (+{res['class_mismatches_at_ties']} at "
          f"exact ties; {res['ties']} tied windows)")
    print(f"  max |logit error| torch vs HW: {res['max_abs_error_torch_vs_hw']:.3g} "
          f"(max |logit| {res['max_abs_logit']:.3g}; {res['windows_logit_error_over_1e-3']} windows off by more than "
          f"1e-3 x max |logit|); streamlined vs HW: {res['max_abs_error_streamlined_vs_hw']:.3g}")
    print(f"  integer-domain mismatches streamlined vs HW: {res['int_mismatches']} of {res['int_elements']} elements")
    if "torch_accuracy" in res:
        print(f"  accuracy: torch {res['torch_accuracy'] * 100:.3f}%, FINN HW {res['hw_accuracy'] * 100:.3f}%")
    print(f"  FINN execution: streamlined {res['seconds']['streamlined']} s (batched), HW {res['seconds']['hw']} s "
          f"({1e3 * res['seconds']['hw'] / max(1, res['samples']):.2f} ms/window)")
    print("  BIT-EXACT" if res["ok"] else "  MISMATCH")
    if not res["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
