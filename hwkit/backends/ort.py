"""ONNX Runtime backend: build the session the board file describes, verify it, measure it.

Everything about the target comes from the board's ``[onnxruntime]`` table (execution providers,
graph optimisation level, intra/inter-op threads) and ``[power]`` table (energy meter and TDP).
The first execution provider listed is required (a ``gpu`` board must not silently run on the CPU);
the ones after it are fallbacks for nodes it cannot run.

Measurement (``ort.measure``, also used by ``hwkit bench``): after ``warmup`` runs, ``runs`` timed
single-sample calls give the batch-1 latency percentiles; for each batch size, ``batch_runs`` timed
calls give throughput (samples/s, median, with the spread of the runs). PyTorch eager runs through
the same harness in the same process, so the report's ratios compare like with like. Peak memory is
Linux's VmHWM (resident-set high-water mark, /proc/self/status), reset through /proc/self/clear_refs
before the session is built; the delta to the RSS just before is what building and running the
session added. Energy: see :mod:`hwkit.energy.cpu` and :mod:`hwkit.energy.gpu`.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwkit.artifact import Artifact, thaw
from hwkit.board import Board
from hwkit.config import Context
from hwkit.errors import BoardError, InputError, ToolError, VerificationError
from hwkit.registry import register
from hwkit.report import Quantity, Section
from hwkit.verify import compare, fail_if_bad, record

DEFAULT_BATCHES = (1, 8, 64, 256)


# ----------------------------------------------------------------------------------------- session


def ort_config(board: Board) -> dict[str, Any]:
    """The board's ``[onnxruntime]`` section (validated in board.py) as the settings of a session."""
    sec = board.onnxruntime
    if sec is None:
        raise BoardError(f"{board.source}: missing table [onnxruntime] (execution_providers, ...)")
    return {"execution_providers": list(sec.execution_providers),
            "graph_optimization_level": sec.graph_optimization_level,
            "intra_op_threads": sec.intra_op_threads, "inter_op_threads": sec.inter_op_threads,
            "provider_options": {k: dict(v) for k, v in sec.provider_options.items()}}


def session_options(cfg: Mapping[str, Any], optimized_path: Path | None = None) -> Any:
    """onnxruntime.SessionOptions from a validated config."""
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "layout": getattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT",
                                ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[cfg["graph_optimization_level"]]
    so.intra_op_num_threads = int(cfg["intra_op_threads"])
    so.inter_op_num_threads = int(cfg["inter_op_threads"])
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return so


def check_providers(cfg: Mapping[str, Any], board: Board) -> list[str]:
    """The providers to use; the first must be installed (a clear error naming the board otherwise)."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    eps = list(cfg["execution_providers"])
    if eps[0] not in have:
        hint = " (install hwkit[gpu], i.e. onnxruntime-gpu in place of onnxruntime)" if "CUDA" in eps[0] else ""
        raise ToolError(f"{board.source}: execution provider {eps[0]} is not available in onnxruntime "
                        f"{ort.__version__} (available: {', '.join(have)}){hint}")
    return [e for e in eps if e in have]


def make_session(path: Path, board: Board, optimized_path: Path | None = None,
                 level: str | None = None) -> Any:
    """An InferenceSession for ``path`` with the board's settings (``level`` overrides the optimisation)."""
    import onnxruntime as ort

    cfg = ort_config(board)
    if level is not None:
        cfg = {**cfg, "graph_optimization_level": level}
    eps = check_providers(cfg, board)
    providers = [(e, cfg["provider_options"].get(e, {})) for e in eps]
    try:
        return ort.InferenceSession(str(path), session_options(cfg, optimized_path), providers=providers)
    except Exception as exc:  # onnxruntime's Fail/InvalidGraph/NotImplemented: the model, not hwkit
        text = str(exc).strip().splitlines()
        first = text[0] if text else type(exc).__name__
        if len(first) > 300:
            first = first[:300] + "..."
        raise InputError(f"{path}: onnxruntime {ort.__version__} cannot load the model: {first}") from None


def _io(sess: Any) -> tuple[str, str]:
    return sess.get_inputs()[0].name, sess.get_outputs()[0].name


Inputs = np.ndarray | dict[str, np.ndarray]
"""One input array (float models), or named arrays (token models: input_ids, attention_mask, ...)."""


def load_inputs(path: Path) -> Inputs:
    """Inputs saved by a pass: a ``.npy`` array, or a ``.npz`` of named arrays (token models)."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return np.load(path, allow_pickle=False)


def n_samples(x: Inputs) -> int:
    """Samples in ``x``."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x: Inputs, i: int, j: int | None = None) -> Inputs:
    """Samples ``i:j`` of ``x`` (``take(x, n)``: the first ``n``, repeated cyclically when ``x`` has fewer)."""
    if isinstance(x, dict):
        return {k: _take_array(v, i, j) for k, v in x.items()}
    return _take_array(x, i, j)


def _take_array(x: np.ndarray, i: int, j: int | None) -> np.ndarray:
    if j is None:
        return np.ascontiguousarray(x[:i]) if len(x) >= i else np.resize(x, (i, *x.shape[1:]))
    return np.ascontiguousarray(x[i:j])


def feeds(sess: Any, x: Inputs) -> dict[str, np.ndarray]:
    """The session's input feed for ``x`` (named arrays by name, one array as float32 to the first input)."""
    if isinstance(x, dict):
        return {i.name: x[i.name] for i in sess.get_inputs()}
    return {sess.get_inputs()[0].name: x.astype(np.float32)}


def session_fixed_batch(sess: Any) -> int | None:
    """The batch size the session's first input fixes (an ONNX file exported without a dynamic batch axis)."""
    shape = sess.get_inputs()[0].shape
    return shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None


def run_session(sess: Any, x: Inputs) -> np.ndarray:
    """Outputs of the first graph output for input ``x`` (in chunks of the batch a fixed-batch graph takes)."""
    name = sess.get_outputs()[0].name
    fixed, n = session_fixed_batch(sess), n_samples(x)
    if fixed is None or n == fixed:
        return np.asarray(sess.run([name], feeds(sess, x))[0])
    outs = []
    for i in range(0, n, fixed):
        chunk = take(x, i, i + fixed)
        m = n_samples(chunk)
        if m < fixed:  # the last chunk: repeat its samples to the fixed size, keep the first m outputs
            chunk = take(chunk, fixed)
        outs.append(np.asarray(sess.run([name], feeds(sess, chunk))[0])[:m])
    return np.concatenate(outs)


@register("ort.session", uses=("board",))
def ort_session(art: Artifact, ctx: Context) -> Artifact:
    """Build the ONNX Runtime session with the board's providers/threads/optimisation; save the optimised graph."""
    import onnx
    import onnxruntime as ort

    from hwkit.export.qcdq import op_counts

    assert art.path is not None
    cfg = ort_config(ctx.board)
    opt_path = ctx.work_dir / "model.optimized.onnx"
    sess = make_session(art.path, ctx.board, opt_path)
    ops = op_counts(onnx.load(str(opt_path)).graph.node) if opt_path.is_file() else None
    meta = {"version": ort.__version__, "providers_requested": cfg["execution_providers"],
            "providers": list(sess.get_providers()), "graph_optimization_level": cfg["graph_optimization_level"],
            "intra_op_threads": cfg["intra_op_threads"], "inter_op_threads": cfg["inter_op_threads"],
            "optimized_ops": ops,
            "optimized_model": str(opt_path.relative_to(ctx.out_dir)) if opt_path.is_file() else None}
    return art.evolve(ort=meta)


# ------------------------------------------------------------------------------------ verification


@register("ort.verify", uses=("board",))
def ort_verify(art: Artifact, ctx: Context) -> Artifact:
    """PyTorch vs ONNX Runtime on the golden batch and on the test split (class agreement)."""
    assert art.path is not None
    rtol = float(ctx.params.get("rtol", 1e-4))
    onnx_meta = thaw(art.meta["onnx"])
    # Post-training quantisation by ORT changes the float model's arithmetic (the reference is still
    # the float model), so it has its own, looser gate; QAT (Brevitas) models must match 99.9%.
    ptq = onnx_meta.get("ort_quantization") is not None
    min_agree = float(ctx.params.get("min_class_agreement_ptq" if ptq else "min_class_agreement",
                                     0.98 if ptq else 0.999))
    refs = onnx_meta["refs"]
    root = ctx.out_dir
    sess = make_session(art.path, ctx.board)
    history = list(thaw(art.meta.get("verification", [])))
    warnings = list(art.meta.get("warnings", ()))
    quantised = onnx_meta["precision"] == "quantised"
    if "golden_out_torch" in refs:
        reference = "torch"
        ref_golden, ref_test = np.load(root / refs["golden_out_torch"]), np.load(root / refs["test_out_torch"])
    else:  # an .onnx input: the reference is the same graph with every ORT optimisation off, on the CPU
        reference = "onnxruntime-unoptimised"
        from hwkit.board import parse_board

        cpu_board = parse_board({"kind": "cpu", "description": "reference", "default_flow": "-",
                                 "onnxruntime": {"execution_providers": ["CPUExecutionProvider"]}},
                                "reference", ctx.board.source)
        ref_sess = make_session(art.path, cpu_board, level="disable")
        ref_golden = run_session(ref_sess, load_inputs(root / refs["golden_in"]))
        ref_test = run_session(ref_sess, load_inputs(root / refs["test_in"]))
        quantised = quantised or ptq
    golden_in, test_in = load_inputs(root / refs["golden_in"]), load_inputs(root / refs["test_in"])
    out_golden, out_test = run_session(sess, golden_in), _batched(sess, test_in)
    stage = "onnxruntime-" + "+".join(p.replace("ExecutionProvider", "").lower() for p in sess.get_providers())
    rows = []
    for split, ref, out, n in (("golden", ref_golden, out_golden, n_samples(golden_in)),
                               ("test-split", ref_test, out_test, n_samples(test_in))):
        stats = compare(ref, out, rtol)
        if quantised:
            agree = stats["class_agreement"]
            ok = stats["max_abs_err"] is not None and (agree is None or agree >= min_agree)
            stats.update(ok=ok, reason=None if ok else f"class agreement {agree:.4f} < {min_agree}",
                         criterion=f"class agreement >= {min_agree}")
        else:
            stats["criterion"] = f"max abs error <= tolerance (rtol {rtol:g}) and class agreement 1"
        stats.update(int_exact=None, int_mismatches=None, split=split)
        rows.append(record(stage if split == "golden" else f"{stage} (test split)", reference, n, stats))
    np.save(ctx.work_dir / "golden_out_ort.npy", out_golden)
    history += rows
    fail_if_bad(rows[0])
    if not rows[1]["ok"]:
        raise VerificationError(f"hand-off {reference} -> {stage} diverges on the test split "
                                f"({rows[1]['samples']} samples, {onnx_meta['test_split']}): {rows[1]['reason']}")
    if quantised and rows[1]["class_agreement"] is None:
        warnings.append("test split: no sample has a decisive top-2 margin; class agreement not checked")
    return art.evolve(verification=history, warnings=warnings)


def _batched(sess: Any, x: Inputs, batch: int = 512) -> np.ndarray:
    return np.concatenate([run_session(sess, take(x, i, i + batch)) for i in range(0, n_samples(x), batch)])


# ----------------------------------------------------------------------------------------- harness


def _pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def time_calls(fn: Callable[[], object], warmup: int, runs: int) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """Percentiles and spread of per-call times, in ms."""
    ms = [s * 1e3 for s in seconds]
    return {"runs": len(ms), "p50_ms": _pct(ms, 50), "p90_ms": _pct(ms, 90), "p99_ms": _pct(ms, 99),
            "mean_ms": statistics.fmean(ms), "stdev_ms": statistics.pstdev(ms), "min_ms": min(ms),
            "max_ms": max(ms)}


def benchmark(run: Callable[[Any], object], x: Inputs, batches: Sequence[int], warmup: int,
              runs: int, batch_runs: int) -> dict[str, Any]:
    """Latency at batch 1 and throughput per batch size for one callable; the same for every runtime."""
    one = take(x, 1)
    lat = latency_stats(time_calls(lambda: run(one), warmup, runs))
    thr = []
    for b in batches:
        xb = take(x, b)

        def call(xb: Any = xb) -> None:
            run(xb)

        secs = time_calls(call, max(2, warmup // 10), batch_runs)
        rates = [b / s for s in secs]
        thr.append({"batch": b, "runs": len(secs), "samples_per_s": float(np.median(rates)),
                    "p10_samples_per_s": _pct(rates, 10), "p90_samples_per_s": _pct(rates, 90),
                    "median_ms": float(np.median(secs)) * 1e3})
    best = max(thr, key=lambda r: r["samples_per_s"])
    return {"latency_b1": lat, "throughput": thr, "best_batch": best["batch"]}


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_memory(fn: Callable[[], object]) -> dict[str, Any]:
    """Run ``fn``; the resident-set high-water mark it reached above the RSS before it, in MiB."""
    reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        reset = True
    except OSError:
        pass
    rss0 = _status_kb("VmRSS")
    fn()
    hwm = _status_kb("VmHWM")
    if rss0 is None or hwm is None:
        import psutil

        info = psutil.Process().memory_info()
        return {"peak_mib": None, "rss_mib": info.rss / 2**20,
                "method": "no /proc/self/status; peak not measured (psutil RSS after shown)"}
    how = ("VmHWM (/proc/self/status) after resetting it through /proc/self/clear_refs, minus VmRSS before"
           if reset else "VmHWM (/proc/self/status, process high-water since start: upper bound) minus VmRSS before")
    return {"peak_mib": max(hwm - rss0, 0) / 1024, "rss_before_mib": rss0 / 1024, "hwm_mib": hwm / 1024,
            "method": how}


def energy_meter(board: Board) -> Any:
    """The board's meter (``[power] meter``) when its counter is readable, else the estimate, else None."""
    power = board.power
    if power is None:
        return None
    tdp = power.tdp_w
    if power.meter == "rapl":
        from hwkit.energy.cpu import RaplMeter, UtilisationEstimate

        m: Any = RaplMeter(Path(power.powercap_root))
        if m.available:
            return m
        return UtilisationEstimate(tdp, power.cores) if tdp else None
    if power.meter == "nvml":
        from hwkit.energy.gpu import BoardPowerEstimate, NvmlMeter

        m = NvmlMeter(power.device_id)
        if m.available:
            return m
        return BoardPowerEstimate(tdp) if tdp else None
    return None


def measure_session(path: Path, board: Board, x: Inputs, batches: Sequence[int], warmup: int, runs: int,
                    batch_runs: int, energy_runs: int) -> dict[str, Any]:
    """Memory, latency, throughput and energy of the board's ORT session on ``path``."""
    holder: dict[str, Any] = {}

    def build_and_run() -> None:
        holder["sess"] = make_session(path, board)
        run_session(holder["sess"], take(x, max(batches)))

    mem = peak_memory(build_and_run)
    sess = holder["sess"]
    _i, o = _io(sess)

    def run(xb: Any) -> object:
        return sess.run([o], feeds(sess, xb) if isinstance(xb, dict) else {_i: xb})

    res = benchmark(run, x, batches, warmup, runs, batch_runs)
    res["memory"] = mem
    res["providers"] = list(sess.get_providers())
    meter = energy_meter(board)
    if meter is not None:
        one = take(x, 1)
        e1 = meter.measure(lambda: [run(one) for _ in range(energy_runs)])
        b = res["best_batch"]
        xb = take(x, b)
        n_best = max(3, energy_runs // b)
        eb = meter.measure(lambda: [run(xb) for _ in range(n_best)])
        res["energy"] = {"j_per_inference_b1": e1.energy_j / energy_runs, "runs_b1": energy_runs,
                         "j_per_sample_best_batch": eb.energy_j / (n_best * b), "runs_best_batch": n_best,
                         "source": e1.source, "method": e1.method}
    else:
        res["energy"] = None
    return res


def _eager(art: Artifact, ctx: Context, x: Inputs, batches: Sequence[int], warmup: int, runs: int,
           batch_runs: int) -> dict[str, Any] | None:
    source = Path(art.meta["onnx"]["source_model"])
    if source.suffix == ".onnx":
        return None
    import torch

    from hwkit.load import load_any

    module = load_any(source, ctx.settings).module

    def run(xb: Any) -> object:
        with torch.inference_mode():
            if isinstance(xb, dict):
                return module(**{k: torch.from_numpy(v) for k, v in xb.items()})
            return module(torch.from_numpy(xb))

    res = benchmark(run, x, batches, warmup, runs, batch_runs)
    res["torch_threads"] = torch.get_num_threads()
    return res


@register("ort.measure", uses=("board", "input_shape", "input_dtype", "arch", "arch_kwargs", "trust_pickle",
                               "seed"))
def ort_measure(art: Artifact, ctx: Context) -> Artifact:
    """Latency p50/p90/p99, throughput per batch, peak memory, energy; PyTorch eager through the same harness."""
    from hwkit.export.onnx import sample_inputs

    assert art.path is not None
    p = ctx.params
    batches = [int(b) for b in p.get("batch_sizes", DEFAULT_BATCHES)]
    if not batches or any(b < 1 for b in batches):
        raise InputError(f"ort.measure: batch_sizes must be positive integers, got {batches}")
    warmup, runs = int(p.get("warmup", 50)), int(p.get("runs", 500))
    batch_runs, energy_runs = int(p.get("batch_runs", 30)), int(p.get("energy_runs", 200))
    shape = tuple(art.meta["model"]["input_shape"])
    warnings = list(art.meta.get("warnings", ()))
    fixed = art.meta["model"].get("fixed_batch")
    if fixed is not None and batches != [fixed]:
        warnings.append(f"the ONNX file fixes the batch dimension to {fixed} (torch.onnx.export's default): measured "
                        f"at batch {fixed} only, not {','.join(map(str, batches))}; export with a dynamic batch axis "
                        "to measure larger batches")
        batches = [int(fixed)]
    x: Inputs
    if art.meta["model"].get("input_names"):  # a token model: full-length sequences (no padding), as exported
        from hwkit.export.hf import token_samples
        from hwkit.load import load_any

        names = tuple(art.meta["model"]["input_names"])
        x = token_samples(load_any(Path(art.meta["onnx"]["source_model"]), ctx.settings).module, names,
                          max(batches), int(shape[-1]), ctx.settings.seed + 3, padded=False)
    else:
        x = sample_inputs(shape, art.meta["model"]["input_dtype"], max(batches), ctx.settings.seed + 3)
    res = measure_session(art.path, ctx.board, x, batches, warmup, runs, batch_runs, energy_runs)
    eager = _eager(art, ctx, x, batches, warmup, runs, batch_runs) if p.get("eager", True) else None
    res["eager"] = eager
    res.update(warmup=warmup, cpu_count=os.cpu_count())
    if eager is not None:
        res["eager_ratio_b1"] = eager["latency_b1"]["p50_ms"] / res["latency_b1"]["p50_ms"]
        by_b = {r["batch"]: r["samples_per_s"] for r in eager["throughput"]}
        res["eager_throughput_ratio"] = {str(r["batch"]): r["samples_per_s"] / by_b[r["batch"]]
                                         for r in res["throughput"]}
    return art.evolve(measurement=res, warnings=warnings)


# ------------------------------------------------------------------------------------------- report


def _ort_performance(m: dict[str, Any]) -> dict[str, Quantity]:
    """Performance quantities of an ONNX Runtime build (``measurement`` metadata of ort.measure)."""
    perf: dict[str, Quantity] = {}
    lat = m["latency_b1"]
    for q in ("p50", "p90", "p99"):
        perf[f"latency_{q}_ms"] = Quantity(lat[f"{q}_ms"], "ms", "measured")
    perf["latency_runs"] = Quantity(lat["runs"], "count", "setting")
    perf["latency_stdev_ms"] = Quantity(lat["stdev_ms"], "ms", "measured")
    for r in m["throughput"]:
        perf[f"throughput_b{r['batch']}_samples_per_s"] = Quantity(r["samples_per_s"], "samples/s", "measured")
    best = next(r for r in m["throughput"] if r["batch"] == m["best_batch"])
    perf["best_batch"] = Quantity(m["best_batch"], "samples", "measured")
    perf["throughput_samples_per_s"] = Quantity(best["samples_per_s"], "samples/s", "measured")
    eager = m.get("eager")
    if eager:
        perf["eager_latency_p50_ms"] = Quantity(eager["latency_b1"]["p50_ms"], "ms", "measured")
        perf["eager_over_ort_latency_ratio_b1"] = Quantity(m["eager_ratio_b1"], "x", "derived")
        perf["ort_over_eager_throughput_ratio_best_batch"] = Quantity(
            m["eager_throughput_ratio"][str(m["best_batch"])], "x", "derived")
    mem = m["memory"]
    perf["peak_memory_mib"] = Quantity(mem.get("peak_mib"), "MiB", "measured" if mem.get("peak_mib") is not None
                                       else "not-estimated")
    e = m.get("energy")
    if e:
        perf["energy_per_inference_b1_mj"] = Quantity(e["j_per_inference_b1"] * 1e3, "mJ", e["source"])
        perf["energy_per_sample_best_batch_mj"] = Quantity(e["j_per_sample_best_batch"] * 1e3, "mJ", e["source"])
    else:
        perf["energy_per_inference_b1_mj"] = Quantity(None, "mJ", "not-estimated")
    return perf


def report_section(meta: dict[str, Any], board: Board, settings: dict[str, Any]) -> Section:
    """The measured numbers of an ONNX Runtime build (``ort.measure`` / ``hwkit bench``) and its providers."""
    sec = Section()
    measurement = meta.get("measurement")
    if measurement:
        sec.performance.update(_ort_performance(measurement))
        sec.measurement = measurement
        if (measurement.get("energy") or {}).get("source") == "analytical-estimate":
            sec.warnings.append("energy is an analytical estimate (no readable energy counter): "
                                + measurement["energy"]["method"])
    if "ort" in meta:
        sec.target["execution_providers"] = meta["ort"]["providers"]
    return sec
