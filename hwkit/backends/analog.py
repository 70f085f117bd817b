"""Analog crossbar backend: a float MLP on RRAM/PCM conductance pairs (boards with kind = "analog").

Passes (flows/analog.toml):

* ``analog.map``: load the model, check that its weights live in ``nn.Linear`` layers, find labelled
  data, tile every layer onto ``crossbar_rows`` x ``crossbar_cols`` arrays, and verify the mapping:
  weights written exactly onto ideal devices with ideal DAC/ADC must reproduce PyTorch's outputs.
* ``analog.simulate``: accuracy of the float model and of N device instances (d2d sample, programming
  with write noise -- open loop or closed-loop write-verify --, read noise, DAC/ADC quantisation), the
  programming pulse counts, and the mean crossbar read power terms (sum of V^2 G over the cells an
  inference drives) for the energy estimate.
* ``analog.estimate``: energy and latency per inference from the board's ``[analog.coefficients]``
  (each a [low, value, high] range with a source in ``[analog.sources]``).

Board fields (``[analog]``): device (preset in boards/devices/ or a path), crossbar_rows,
crossbar_cols, adc_bits, dac_bits, device_instances, adcs_per_tile, programming (open-loop |
write-verify), verify_tolerance, verify_max_iterations, optional [analog.device_overrides]. A flow's
``analog.simulate`` entry may override programming, verify_tolerance, verify_max_iterations and instances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hwkit.artifact import Artifact, thaw
from hwkit.board import Board, parse_programming
from hwkit.compress.hooks import layer_inputs
from hwkit.config import Context
from hwkit.errors import BoardError, FlowError, InputError, UnsupportedLayerError
from hwkit.registry import register
from hwkit.report import Quantity, Section
from hwkit.verify import compare, fail_if_bad, record


def analog_config(board: Board) -> dict[str, Any]:
    """The board's ``[analog]`` section (validated in board.py) with its device preset loaded."""
    from hwkit.compress.synapse.device import device_from_table, load_device

    sec = board.analog
    if sec is None:
        raise BoardError(f"{board.source}: missing table [analog] (device, crossbar_rows, ...)")
    where = f"{board.source} [analog]"
    cfg: dict[str, Any] = {
        "crossbar_rows": sec.crossbar_rows, "crossbar_cols": sec.crossbar_cols,
        "device_instances": sec.device_instances, "adcs_per_tile": sec.adcs_per_tile,
        "adc_bits": sec.adc_bits, "dac_bits": sec.dac_bits, "programming": sec.programming,
        "verify_tolerance": sec.verify_tolerance, "verify_max_iterations": sec.verify_max_iterations,
    }
    dev = load_device(sec.device)
    overrides = sec.device_overrides
    if overrides:
        base = {k: v for k, v in vars(dev).items() if k != "name"}
        if "nl_label_ltp" in overrides:
            base.pop("nl_ltp")
        if "nl_label_ltd" in overrides:
            base.pop("nl_ltd")
        dev = device_from_table({**base, **dict(overrides)}, dev.name, f"{where}.device_overrides")
    cfg["device"] = dev
    cfg["device_source"] = sec.device
    cfg["coefficients"] = {k: list(v) for k, v in sec.coefficients.items()}
    cfg["sources"] = dict(sec.sources)
    return cfg


def _write_verify(cfg: Mapping[str, Any]) -> Any:
    from hwkit.compress.synapse.device import WriteVerify

    if cfg["programming"] != "write-verify":
        return None
    return WriteVerify(tolerance=cfg["verify_tolerance"], max_iterations=cfg["verify_max_iterations"])


def _crossbar(cfg: Mapping[str, Any], ideal: bool = False) -> Any:
    from hwkit.compress.synapse.train import CrossbarConfig

    return CrossbarConfig(cfg["crossbar_rows"], cfg["crossbar_cols"], None if ideal else cfg["adc_bits"],
                          None if ideal else cfg["dac_bits"])


def _labelled_data(path: Path, loaded: Any, params: Mapping[str, Any], n_in: int) -> tuple[Any, Any, str] | None:
    """(x, y, description) of the labelled test data, or None."""
    mode = str(params.get("data", "auto"))
    scale = float(params.get("data_scale", 1 / 16))
    limit = int(params.get("max_test_samples", 2000))

    def digits() -> tuple[Any, Any, str]:
        from hwkit.compress.synapse.train import digits_split

        _, _, x, y = digits_split(0, scale=False)
        return (x * scale).numpy(), y.numpy(), f"scikit-learn digits, 25% stratified test split (seed 0), x {scale:g}"

    if mode == "none":
        return None
    if mode == "sklearn-digits":
        out = digits()
    elif mode == "auto":
        side = path.with_name(path.stem + ".testset.npz")
        dataset = str((loaded.meta or {}).get("dataset", ""))
        if side.is_file():
            out = _npz(side)
        elif "digits" in dataset.lower():
            out = digits()
        else:
            return None
    else:
        p = Path(mode)
        if not p.is_file():
            raise InputError(f"flow parameter data: {mode}: file not found (want an .npz with arrays x and y)")
        out = _npz(p)
    x, y, what = out
    if x.ndim != 2 or x.shape[1] != n_in or len(x) != len(y):
        raise InputError(f"labelled data ({what}): x must be [N, {n_in}] and y [N], got {x.shape} and {y.shape}")
    return x[:limit].astype(np.float32), y[:limit].astype(np.int64), what


def _npz(p: Path) -> tuple[Any, Any, str]:
    try:
        with np.load(p) as d:
            if "x" not in d or "y" not in d:
                raise InputError(f"{p}: needs arrays 'x' (inputs) and 'y' (integer labels)")
            return np.asarray(d["x"], dtype=np.float32), np.asarray(d["y"]), str(p)
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: not a readable .npz ({exc})") from None


def _load(art: Artifact, ctx: Context) -> Any:
    from hwkit.load import load_model

    path = Path(art.meta["analog_model_path"]) if "analog_model_path" in art.meta else art.path
    assert path is not None
    if path.suffix == ".onnx":
        raise InputError(f"{path}: the analog flow needs a PyTorch model (.pt), not ONNX")
    return load_model(path, ctx.settings), path


@register("analog.map", uses=("input_shape", "input_dtype", "arch", "arch_kwargs", "trust_pickle", "board",
                              "golden_batch", "seed"))
def analog_map(art: Artifact, ctx: Context) -> Artifact:
    """Tile nn.Linear weights onto crossbars; verify exact conductance mapping vs PyTorch (ideal periphery)."""
    import torch

    from hwkit.compress.synapse.train import crossbar_tiles, linear_layers, to_analog

    cfg = analog_config(ctx.board)
    loaded, path = _load(art, ctx)
    model = loaded.module.float().eval()
    layers = linear_layers(model)
    if not layers:
        raise UnsupportedLayerError(f"{path}: the model has no nn.Linear layer to map onto a crossbar")
    for name, m in model.named_modules():
        if type(m).__module__.startswith("brevitas."):
            raise UnsupportedLayerError(f"{path}: layer '{name}' is a Brevitas {type(m).__name__}; the analog "
                                        "flow maps float nn.Linear weights (export a float model)")
        if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.RNNBase):
            raise UnsupportedLayerError(f"{path}: layer '{name}' ({type(m).__name__}) has no crossbar mapping yet")
    n_in = layers[0][1].in_features
    data = _labelled_data(path, loaded, ctx.params, n_in)
    warnings = list(art.meta.get("warnings", ()))
    golden = None
    if loaded.golden_inputs is not None:
        golden = np.asarray(loaded.golden_inputs, dtype=np.float32)[: ctx.settings.golden_batch]
    elif data is not None:
        golden = data[0][: ctx.settings.golden_batch]
    else:
        rng = np.random.default_rng(ctx.settings.seed)
        golden = rng.random((ctx.settings.golden_batch, n_in), dtype=np.float32)
    refs = {}
    if data is not None:
        np.savez(ctx.work_dir / "testset.npz", x=data[0], y=data[1])
        refs["testset"] = str((ctx.work_dir / "testset.npz").relative_to(ctx.out_dir))
    else:
        warnings.append("no labelled data: accuracy not simulated (give <model>.testset.npz with x, y next to the "
                        "model, a checkpoint whose meta names digits, or the flow parameter data = PATH.npz)")
    xg = torch.tensor(golden)
    with torch.no_grad():
        ref = model(xg).numpy()
    ideal_dev = cfg["device"].with_(c2c=0.0, read_noise=0.0, d2d_levels=0.0, d2d_nl=0.0, d2d_gmax=0.0, d2d_gmin=0.0)
    net = to_analog(model, ideal_dev, _crossbar(cfg, ideal=True), xg, seed=ctx.settings.seed, program="exact",
                    read_noise=False)
    with torch.no_grad():
        out = net(xg).numpy()
    stats = compare(ref, out, 1e-5)
    stats.update(int_exact=None, int_mismatches=None, split="golden",
                 criterion="exact conductance write, ideal DAC/ADC: max abs error <= tolerance (rtol 1e-5)")
    row = record("analog-crossbar (exact mapping)", "torch", len(golden), stats)
    fail_if_bad(row)
    xbar = _crossbar(cfg)
    tiles = []
    for name, lin in layers:
        rt, ct = crossbar_tiles(lin.in_features, lin.out_features, xbar)
        tiles.append({"name": name, "in": lin.in_features, "out": lin.out_features, "row_tiles": rt,
                      "col_tiles": ct, "devices": 2 * lin.in_features * lin.out_features})
    model_meta = {"format": loaded.format, "params": int(sum(p.numel() for p in model.parameters())),
                  "input_shape": [1, n_in], "output_shape": [1, layers[-1][1].out_features]}
    if loaded.meta:
        model_meta["checkpoint_meta"] = dict(loaded.meta)
    analog = {"device": _device_meta(cfg["device"]), "layers": tiles,
              "data": None if data is None else {"what": data[2], "samples": len(data[1])}, "refs": refs}
    return art.evolve(stage="analog-mapped", analog=analog, model=model_meta, analog_model_path=str(path),
                      verification=[*thaw(art.meta.get("verification", [])), row], warnings=warnings)


def _device_meta(dev: Any) -> dict[str, Any]:
    d = {k: v for k, v in vars(dev).items()}
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in d.items()}


@register("analog.simulate", uses=("arch", "arch_kwargs", "trust_pickle", "input_shape", "board", "seed"))
def analog_simulate(art: Artifact, ctx: Context) -> Artifact:
    """Accuracy over N device instances (d2d, write/read noise, DAC/ADC) and the crossbar read statistics."""
    import torch

    from hwkit.compress.synapse.train import (
        accuracy,
        analog_arrays,
        evaluate_instances,
        programming_stats,
        to_analog,
    )

    cfg = analog_config(ctx.board)
    cfg.update(parse_programming(ctx.params, "flow parameters of analog.simulate", cfg, FlowError))
    loaded, _ = _load(art, ctx)
    model = loaded.module.float().eval()
    analog = thaw(art.meta["analog"])
    n = int(ctx.params.get("instances", cfg["device_instances"]))
    xbar, dev = _crossbar(cfg), cfg["device"]
    program, verify = cfg["programming"], _write_verify(cfg)
    sim: dict[str, Any] = {"instances": n, "programming": {
        "mode": program, "verify_tolerance": cfg["verify_tolerance"] if verify else None,
        "verify_max_iterations": cfg["verify_max_iterations"] if verify else None}}
    refs = analog["refs"]
    if "testset" in refs:
        with np.load(ctx.out_dir / refs["testset"]) as d:
            x, y = torch.tensor(d["x"]), torch.tensor(d["y"])
        sim["software_accuracy"] = accuracy(model, x, y)
        res = evaluate_instances(model, dev, xbar, x, y, n, seed=ctx.settings.seed, program=program, verify=verify)
        sim.update(accuracy=res)
        x_stats = x
    else:
        x_stats = torch.tensor(np.random.default_rng(ctx.settings.seed).random((64, analog["layers"][0]["in"]),
                                                                                dtype=np.float32))
    # Crossbar read terms of one programmed instance: per inference, sum over driven cells of
    # (V_in / V_read)^2 * G (siemens), where V_in / V_read = DAC code / full scale.
    net = to_analog(model, dev, xbar, x_stats, seed=ctx.settings.seed, program=program, verify=verify)
    sim["programming"].update(programming_stats(net))
    seen = layer_inputs(net, x_stats, [(name, m) for name, _, m in analog_arrays(net)])
    per_sample = torch.zeros(len(x_stats), dtype=torch.float64)
    g_total = 0.0
    for name, arr, layer in analog_arrays(net):
        v = (seen[name].to(torch.float64).abs() / layer.dac_fs).clamp(0, 1)
        g = arr.siemens()
        per_sample += (v ** 2) @ (g[0] + g[1]).sum(dim=0)
        g_total += float((g[0] + g[1]).sum())
    sim["read_g_v2_s"] = {"mean": float(per_sample.mean()), "p5": float(per_sample.quantile(0.05)),
                          "p95": float(per_sample.quantile(0.95)), "all_cells_full_scale": g_total,
                          "samples": len(x_stats)}
    analog["simulation"] = sim
    return art.evolve(stage="analog-simulated", analog=analog)


@register("analog.estimate", uses=("board",))
def analog_estimate(art: Artifact, ctx: Context) -> Artifact:
    """Energy and latency per inference from the board's per-operation coefficients (analytical estimate)."""
    cfg = analog_config(ctx.board)
    analog = thaw(art.meta["analog"])
    c, src = cfg["coefficients"], cfg["sources"]
    sim = analog["simulation"]
    layers = analog["layers"]
    adc_bits, dac_bits = cfg["adc_bits"], cfg["dac_bits"]
    conversions = sum(lay["row_tiles"] * lay["out"] for lay in layers)   # one per weight column per row tile
    row_drives = sum(lay["col_tiles"] * lay["in"] for lay in layers)     # each tile's rows are driven
    partial_sums = conversions
    rg = sim["read_g_v2_s"]

    def rng3(f: Any) -> list[float]:
        return [f(i) for i in range(3)]

    read = rng3(lambda i: c["read_voltage_v"][i] ** 2 * c["read_time_ns"][i] * 1e-9 * 1e12 *
                (rg["p5"], rg["mean"], rg["all_cells_full_scale"])[i])   # pJ
    adc = rng3(lambda i: conversions * c["adc_energy_pj"][i] * 2.0 ** (adc_bits - c["adc_ref_bits"][i]))
    dac = rng3(lambda i: row_drives * c["dac_energy_pj_per_bit"][i] * dac_bits)
    dig = rng3(lambda i: partial_sums * c["digital_add_pj"][i])
    total = rng3(lambda i: read[i] + adc[i] + dac[i] + dig[i])
    cols_per_tile = cfg["crossbar_cols"] // 2
    lat = rng3(lambda i: sum(c["read_time_ns"][i] + math.ceil(min(cols_per_tile, lay["out"]) / cfg["adcs_per_tile"])
                             * c["adc_conversion_ns"][i] + c["digital_ns_per_layer"][i] for lay in layers))
    energy = []
    for name, vals, includes in (
            ("crossbar read energy per inference", read,
             "sum over driven cells of V^2 G t_read; low: 5th-percentile input, value: mean input of the test data, "
             "high: every cell of every tile at full read voltage"),
            ("ADC energy per inference", adc, f"{conversions} conversions at {adc_bits} bits"),
            ("DAC / row-driver energy per inference", dac, f"{row_drives} row drives at {dac_bits} bits"),
            ("digital shift-add energy per inference", dig, f"{partial_sums} partial-sum accumulations"),
            ("total energy per inference", total, "crossbar read + ADC + DAC + digital accumulation; excludes "
             "buffers, interconnect, control and the host")):
        energy.append({"name": name, "basis": "single-shot", "includes": includes, "unit": "nJ/inference",
                       "low": vals[0] / 1e3, "value": vals[1] / 1e3, "high": vals[2] / 1e3,
                       "source": "analytical-estimate"})
    perf: dict[str, dict[str, Any]] = {}

    def q(key: str, value: Any, unit: str, source: str) -> None:
        perf[key] = {"value": value, "unit": unit, "source": source}

    acc = sim.get("accuracy")
    if acc:
        q("software_accuracy", sim["software_accuracy"], "fraction", "measured")
        q("analog_accuracy_mean", acc["mean"], "fraction", "simulated")
        q("analog_accuracy_std", acc["std"], "fraction", "simulated")
        q("analog_accuracy_min", acc["min"], "fraction", "simulated")
        q("analog_accuracy_max", acc["max"], "fraction", "simulated")
        q("accuracy_drop_pts", round(100 * (sim["software_accuracy"] - acc["mean"]), 4), "percentage points",
          "derived")
    else:
        q("analog_accuracy_mean", None, "fraction", "not-estimated")
    q("device_instances", sim["instances"], "count", "setting")
    prog = sim.get("programming", {})
    if "pulses" in prog:   # one instance programmed with the board's mode (open loop or write-verify)
        q("programming_pulses_per_instance", prog["pulses"], "count", "simulated")
        if prog["mode"] == "write-verify":
            q("write_verify_pulses_per_instance", prog["verify_pulses"], "count", "simulated")
            q("write_verify_reads_per_instance", prog["reads"], "count", "simulated")
            q("write_verify_unconverged_pairs", prog["unconverged"], "count", "simulated")
    if acc and "weight_rms_error" in acc:
        q("programmed_weight_rms_error", acc["weight_rms_error"], "fraction of beta", "simulated")
    q("latency_per_inference_us", lat[1] / 1e3, "us", "analytical-estimate")
    q("energy_per_inference_nj", total[1] / 1e3, "nJ", "analytical-estimate")
    q("crossbar_tiles", sum(lay["row_tiles"] * lay["col_tiles"] for lay in layers), "count", "derived")
    q("synapse_devices", sum(lay["devices"] for lay in layers), "count", "derived")
    q("adc_conversions_per_inference", conversions, "count", "derived")
    for key in ("crossbar_rows", "crossbar_cols", "adc_bits", "dac_bits"):
        q(key, cfg[key], "count" if "crossbar" in key else "bits", "board-data")
    warnings = list(art.meta.get("warnings", ()))
    unconfirmed = sorted(k for k, s in src.items() if "UNCONFIRMED" in s)
    warnings.append(f"energy/latency: analytical estimate from per-operation numbers in {ctx.board.source}; "
                    f"[UNCONFIRMED] coefficients: {', '.join(unconfirmed) or 'none'} (docs/synapse.md)")
    if acc:
        mode = prog.get("mode", "open-loop")
        how = mode if mode == "open-loop" else (f"write-verify, tolerance {prog['verify_tolerance']:g} beta, "
                                                f"<= {prog['verify_max_iterations']} rounds")
        warnings.append(f"accuracy: simulated over {sim['instances']} device instances of '{cfg['device'].name}' "
                        f"({how} programming) on {analog['data']['what']}")
    analog["estimate"] = {"latency_ns": lat, "energy_pj": {"read": read, "adc": adc, "dac": dac, "digital": dig,
                                                           "total": total}}
    analog["performance"], analog["energy"] = perf, energy
    return art.evolve(stage="analog-estimated", analog=analog, warnings=warnings)


def report_section(meta: dict[str, Any], board: Board, settings: dict[str, Any]) -> Section:
    """Simulated accuracy and the analytical energy/latency of an analog crossbar build."""
    sec = Section()
    analog = meta.get("analog") or {}
    if analog.get("performance"):
        sec.performance = {k: Quantity(q["value"], q["unit"], q["source"]) for k, q in analog["performance"].items()}
        sec.energy = list(analog.get("energy", []))
    return sec
