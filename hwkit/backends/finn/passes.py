"""All finn-plus glue lives here.

finn-plus 1.6.1 assumes Vivado in three places (see shared/reference/finn-stack.md); hwkit shields
each one so that the Vivado-free steps run on any machine:

1. ``finn.builder.build_dataflow_steps`` imports ``SimEngine`` from ``finn.xsi`` at import time, and
   that lookup raises without XILINX_VIVADO. Without Vivado we bind a placeholder that raises a
   clear error only if a simulation is really started.
2. Settings must be initialised or finn-plus creates ``~/.finn``. hwkit initialises them with the
   build directory as FINN_BUILD_DIR, so generated code stays inside the build.
3. ``build_dataflow_cfg``'s exit path calls ``get_vivado_root()``. hwkit never calls
   ``build_dataflow_cfg``: it runs the registered step functions itself, one pass per step, which
   also means FINN's ``pdb.post_mortem`` on failure can never start. (:func:`shield_builder` patches
   the exit path for callers, such as the overhead benchmark, that do use the raw builder.)
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwkit.artifact import Artifact
from hwkit.config import Context
from hwkit.errors import FlowError, ToolError, UnsupportedLayerError
from hwkit.registry import PassSpec, register_factory

FINN_BUILD_SUBDIR = "finn_build"
HW_DOMAIN = "finn.custom_op.fpgadataflow"
_state: dict[str, Any] = {"build_dir": None}


class VivadoRequired(ToolError):
    """A finn-plus feature that needs Vivado was reached without it."""


class _NoVivadoSimEngine:
    """Stands in for finn.xsi.SimEngine when Vivado is absent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise VivadoRequired("RTL simulation needs Vivado (XILINX_VIVADO is not set); see `hwkit doctor`")


def vivado_available() -> bool:
    """True when a Vivado environment has been sourced."""
    return bool(os.environ.get("XILINX_VIVADO"))


def ensure_finn(work_dir: Path) -> None:
    """Point finn-plus at ``work_dir``/finn_build (shields 1 and 2).

    Each pass calls this with its own directory, so what finn-plus generates (HLS code, partition
    models) lives and dies with the pass's checkpoint instead of piling up in one shared folder.
    """
    build_dir = (Path(work_dir) / FINN_BUILD_SUBDIR).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    if _state["build_dir"] == build_dir:
        return
    # finn-plus worker processes rebuild their settings from these two variables. The settings file
    # need not exist; naming it keeps finn-plus from creating ~/.finn to look for one there.
    settings_file = build_dir / "finn-settings.yaml"
    os.environ["FINN_BUILD_DIR"] = str(build_dir)
    os.environ["FINN_SETTINGS"] = str(settings_file)
    import finn.util.settings as finn_settings
    from finn.interface.settings import FINNSettings

    finn_settings._SETTINGS = FINNSettings.init(  # noqa: SLF001 - finn-plus offers no setter
        override_settings_path=settings_file, flow_config=build_dir / "dummy.yaml",
        finn_build_dir=str(build_dir), auto_set_environment_vars=False,
    )
    if not vivado_available():
        import finn.xsi

        finn.xsi.SimEngine = _NoVivadoSimEngine
    _state["build_dir"] = build_dir


def shield_builder() -> None:
    """Shield 3, for callers of the raw ``build_dataflow_cfg`` (benchmarks): a harmless exit path."""
    if not vivado_available():
        import finn.builder.build_dataflow as bd

        bd.get_vivado_root = lambda: "/vivado-not-installed"


_NOT_CONFIG = frozenset({"label"})
"""Pass parameters that are hwkit's own, not DataflowBuildConfig fields."""


def dataflow_config(ctx: Context) -> Any:
    """The finn-plus DataflowBuildConfig for this board and these settings.

    The pass's parameters (from the flow file, e.g. ``[pass_params."finn."]`` of finn-bitstream.toml)
    may set any DataflowBuildConfig field; ``generate_outputs`` names DataflowOutputType values
    (default: estimate reports only, the Vivado-free flow).
    """
    import dataclasses

    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType

    board = ctx.board
    extra: dict[str, Any] = {}
    if board.shell_flow == "vitis_alveo" and board.vitis_platform:
        extra["vitis_platform"] = board.vitis_platform
    fields = {f.name for f in dataclasses.fields(DataflowBuildConfig)}
    params = {k: v for k, v in ctx.params.items() if k not in _NOT_CONFIG}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise FlowError(f"finn-plus DataflowBuildConfig has no field(s) {', '.join(unknown)} (flow parameters)")
    outputs = params.pop("generate_outputs", ["estimate_reports"])
    valid = {o.value: o for o in DataflowOutputType}
    bad = [o for o in outputs if o not in valid]
    if bad:
        raise FlowError(f"generate_outputs: unknown output(s) {', '.join(map(str, bad))}; "
                        f"finn-plus knows {', '.join(valid)}")
    base: dict[str, Any] = dict(
        output_dir=str(ctx.work_dir),
        synth_clk_period_ns=ctx.settings.clock_ns,
        generate_outputs=[valid[o] for o in outputs],
        board=board.finn_board,
        fpga_part=board.part,
        shell_flow_type=board.shell_flow,
        target_fps=None if ctx.settings.target_fps is None else int(round(ctx.settings.target_fps)),
        enable_build_pdb_debug=False,
        save_intermediate_models=False,
        verbose=False,
        **extra,
    )
    return DataflowBuildConfig(**{**base, **params})


def _step_function(step: str) -> Any:
    import finn.builder.build_dataflow_steps as steps

    return steps.build_dataflow_step_lookup.get(step) or getattr(steps, step, None)


_WEIGHT_OPS = ("MVAU", "VVAU", "MatMul", "Gemm", "Conv")


def weight_node_layers(model: Any, weight_layers: Sequence[str | None]) -> dict[str, str | None]:
    """PyTorch layer of each weight-carrying node of a FINN graph, matched by order.

    FINN rebuilds weight layers and drops what export recorded about their origin. They keep the
    order of the exported Gemm/MatMul/Conv nodes, so when the counts agree the k-th weight node is
    the k-th exported layer; otherwise nothing is labelled rather than guessed.
    """
    nodes = [n.name for n in model.graph.node if n.op_type.split("_")[0] in _WEIGHT_OPS]
    return dict(zip(nodes, weight_layers)) if len(nodes) == len(weight_layers) else {}


def host_nodes(model: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """The nodes that are not FINN HW layers, split as finn-plus does: (at the start, in the middle, at the end).

    A node is at the start when no HW layer feeds it (directly or through other nodes), at the end
    when it feeds no HW layer; finn-plus leaves those to software (e.g. the NCHW->NHWC input
    Transpose, ``infer_shuffle_skip_first``) and refuses the others.
    """
    nodes = list(model.graph.node)
    is_hw = [n.domain.startswith(HW_DOMAIN) for n in nodes]
    producer = {t: i for i, n in enumerate(nodes) for t in n.output}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            consumers.setdefault(t, []).append(i)
    hw_above = [False] * len(nodes)
    for i, n in enumerate(nodes):  # graphs are topologically sorted
        hw_above[i] = any(is_hw[j] or hw_above[j] for j in (producer.get(t) for t in n.input) if j is not None)
    hw_below = [False] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        hw_below[i] = any(is_hw[j] or hw_below[j] for t in nodes[i].output for j in consumers.get(t, ()))
    start = [n for i, n in enumerate(nodes) if not is_hw[i] and not hw_above[i]]
    end = [n for i, n in enumerate(nodes) if not is_hw[i] and hw_above[i] and not hw_below[i]]
    middle = [n for i, n in enumerate(nodes) if not is_hw[i] and hw_above[i] and hw_below[i]]
    return start, middle, end


def check_all_hw(model: Any, weight_layers: Sequence[str | None] = ()) -> list[dict[str, str]]:
    """Every node between the first and last HW layer must be a HW layer (finn-plus's rule).

    Returns the nodes left on the host (at the graph's start or end); raises naming the culprit
    and its PyTorch layer for a node in the middle.
    """
    from hwkit.export.provenance import torch_layer_of

    start, middle, end = host_nodes(model)
    if not any(n.domain.startswith(HW_DOMAIN) for n in model.graph.node):
        middle = start  # nothing maps to hardware: every node is the problem
    if not middle:
        refuse_float_weights(model, [*start, *end], weight_layers)
        return [{"name": n.name, "op": n.op_type, "where": where}
                for where, group in (("input", start), ("output", end)) for n in group]
    bad = middle
    labels = weight_node_layers(model, weight_layers)
    # A MatMul/Mul/Add left over is often a symptom (its input is float because of an op before it);
    # name an op FINN has no layer for at all first.
    symptoms = {"MatMul", "Mul", "Add", "MultiThreshold", "Sub", "Div"}
    node = next((n for n in bad if n.op_type not in symptoms), bad[0])
    torch_layer = torch_layer_of(node) or labels.get(node.name)
    where = f"PyTorch layer {torch_layer}" if torch_layer else f"node '{node.name}'"
    in_dt = model.get_tensor_datatype(node.input[0]).name if node.input else "?"
    rest = [f"{n.name} ({n.op_type})" for n in bad if n is not node]
    others = f"; also unmapped: {', '.join(rest[:4])}{' ...' if len(rest) > 4 else ''}" if rest else ""
    advice = ("FINN maps layers whose inputs and weights are quantised integers: quantise them with Brevitas, "
              "or move the layer out of the model") if in_dt.startswith("FLOAT") else (
              "finn-plus's default steps have no HW layer for it")
    if any(n.op_type in ("Im2Col", "MatMul", "Mul", "Add") for n in bad):
        # float scales left in front of convolutions: what residual / depthwise-separable graphs give
        # finn-plus's default streamlining
        advice += ("; if the model is a residual or depthwise-separable CNN, hwkit's streamlining recipes may map "
                   "it: --flow finn-recipes")
    raise UnsupportedLayerError(
        f"{where}: op {node.op_type} (input {in_dt}) between hardware layers has no FINN hardware layer{others}. "
        f"{advice}"
    )


WEIGHT_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
"""ONNX ops that carry a layer's weights (as an initializer input)."""


def host_weight_nodes(model: Any, nodes: Sequence[Any]) -> list[Any]:
    """The nodes of ``nodes`` that are weight layers: a MatMul/Gemm/Conv with a constant weight input."""
    inits = {i.name for i in model.graph.initializer}
    return [n for n in nodes if n.op_type in WEIGHT_OPS and any(t in inits for t in n.input[1:2])]


def refuse_float_weights(model: Any, host: Sequence[Any], weight_layers: Sequence[str | None] = ()) -> None:
    """Every weight layer left on the host and none in hardware: the "accelerator" would hold no layer of the
    model (e.g. a float MLP, whose ReLUs alone map), and its estimate would describe nothing. Exit 3."""
    from hwkit.export.provenance import torch_layer_of

    on_host = host_weight_nodes(model, host)
    if not on_host or any(n.domain.startswith(HW_DOMAIN) and n.op_type.startswith(("MVAU", "VVAU"))
                          for n in model.graph.node):
        return
    labels = weight_node_layers(model, weight_layers)
    names = []
    for n in on_host[:4]:
        layer = torch_layer_of(n) or labels.get(n.name)
        names.append(f"{n.name} ({n.op_type}{', PyTorch layer ' + layer if layer else ''})")
    more = f" and {len(on_host) - 4} more" if len(on_host) > 4 else ""
    hw = sorted({n.op_type for n in model.graph.node if n.domain.startswith(HW_DOMAIN)})
    raise UnsupportedLayerError(
        f"no weight layer maps to FPGA hardware: {', '.join(names)}{more} compute in floating point and would run "
        f"on the host (the accelerator would hold only {', '.join(hw)}). FINN maps quantised layers: quantise "
        "first (--quantize w4a4 --calib DATA, docs/quantize.md), or use an ONNX Runtime target (--target cpu)")


def convs_1d_as_2d(model: Any) -> Any:
    """1-D convolutions and pools (N, C, L) rewritten as 2-D ones on (N, C, L, 1), which finn-plus lowers and maps
    (qonnx's Change3DTo4DTensors, as FINN's own 1-D examples do before streamlining); qonnx's lowering of a 1-D
    Conv fails with an IndexError. A graph with ops that rewrite does not know stops with exit 3 naming them."""
    def one_d(n: Any) -> bool:
        return n.op_type in ("Conv", "MaxPool", "AveragePool") and any(
            a.name == "kernel_shape" and len(a.ints) == 1 for a in n.attribute)

    first = next((n for n in model.graph.node if one_d(n)), None)
    if first is None:
        return model
    import warnings

    from qonnx.transformation.change_3d_tensors_to_4d import Change3DTo4DTensors, _find_invalid_nodes

    bad = sorted(set(_find_invalid_nodes(model)))
    if bad:
        raise UnsupportedLayerError(
            f"node '{first.name}': a 1-D {first.op_type}, which finn-plus maps as a 2-D one on (N, C, L, 1), but the "
            f"rewrite does not take the graph's {', '.join(bad)} op(s); use 2-D layers (Conv2d with kernel (k, 1))")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model.transform(Change3DTo4DTensors())
    for n in model.graph.node:  # the rewrite widens kernel_shape, strides and pads, not a pool's dilations
        kernel = next((a for a in n.attribute if a.name == "kernel_shape"), None)
        for a in n.attribute:
            if a.name == "dilations" and kernel is not None and len(a.ints) == len(kernel.ints) - 1:
                a.ints.append(1)
    return model


def float_layers(model: Any) -> list[tuple[str, str, bool]]:
    """HW layers with a FLOAT32 input or output, as (name, op, fed by the graph input) (finn-plus's check)."""
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp

    first = {n.name for n in model.find_consumers(model.graph.input[0].name) or ()}
    found = []
    for node in model.graph.node:
        if not node.domain.startswith(HW_DOMAIN):
            continue
        inst = getCustomOp(node)
        dts = []
        for read, count in ((inst.get_input_datatype, len(node.input)), (inst.get_output_datatype, len(node.output))):
            for i in range(count):
                try:
                    dts.append(read(i))
                except Exception:  # some ports carry no data type
                    break
        if DataType["FLOAT32"] in dts:
            found.append((node.name, node.op_type, node.name in first))
    return found


def float_warnings(model: Any, host: dict[str, Any] | None) -> list[str]:
    """finn-plus's "floating point operations" warning, said where the user sees it, with the remedy."""
    floats = float_layers(model)
    out = []
    at_input = [f"{n} ({op})" for n, op, first in floats if first]
    rest = [f"{n} ({op})" for n, op, first in floats if not first]
    if at_input:
        out.append(
            f"the model's input is FLOAT32, so the hardware takes floating-point input ({', '.join(at_input)}): "
            "this costs LUTs and needs a float interface. Give an integer input: --input-dtype UINT8 (or INT8, ...) "
            "when the input is integer-valued (e.g. 0..255 pixels), or put a Brevitas QuantIdentity first")
    if rest:
        out.append(
            f"layers {', '.join(rest)} compute in floating point (FLOAT32); finn-plus has no resource model for "
            "them, so their resources are reported as not estimated (e.g. a TensorNorm output scale: drop it, or "
            "end the model with an integer label select such as FINN's InsertTopK)")
    if host and host.get("nodes"):
        nodes = ", ".join(f"{n['name']} ({n['op']}, {n['where']})" for n in host["nodes"])
        out.append(f"nodes left on the host (software, outside the accelerator, as finn-plus does): {nodes}")
        weights = [n["name"] for n in host["nodes"] if n.get("weights")]
        if weights:
            out.append(f"weight layers {', '.join(weights)} run on the host in floating point: their work is not "
                       "in the accelerator's estimates (quantise them to map them: docs/quantize.md)")
    return out


def _sub_model(model: Any, keep: Sequence[Any], inputs: Sequence[str], outputs: Sequence[str]) -> Any:
    """A copy of ``model`` with only the nodes ``keep``, reading ``inputs`` and writing ``outputs``."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper

    sub = ModelWrapper(model.model.__deepcopy__())
    g = sub.graph
    names = {n.name for n in keep}
    for n in [n for n in g.node if n.name not in names]:
        g.node.remove(n)

    def vinfo(t: str) -> Any:
        return helper.make_tensor_value_info(t, 1, model.get_tensor_shape(t))  # 1 = FLOAT

    while len(g.input):
        g.input.pop()
    while len(g.output):
        g.output.pop()
    new_io = [vinfo(t) for t in inputs], [vinfo(t) for t in outputs]
    for vi in [vi for vi in g.value_info if vi.name in {*inputs, *outputs}]:
        g.value_info.remove(vi)
    g.input.extend(new_io[0])
    g.output.extend(new_io[1])
    for t in [*inputs, *outputs]:
        sub.set_tensor_datatype(t, model.get_tensor_datatype(t))
    used = {t for n in g.node for t in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    return sub


def split_host(model: Any, work_dir: Path) -> dict[str, Any]:
    """Save the host-side parts of ``model`` (before the dataflow partition drops them) for verification.

    Returns ``{"input": path | None, "output": path | None, "nodes": [...]}`` (paths relative to
    ``work_dir``'s build root are made by the caller).
    """
    start, middle, end = host_nodes(model)
    if middle:
        return {"input": None, "output": None, "nodes": []}
    weights = {n.name for n in host_weight_nodes(model, [*start, *end])}
    out: dict[str, Any] = {"input": None, "output": None,
                           "nodes": [{"name": n.name, "op": n.op_type, "where": w,
                                      **({"weights": True} if n.name in weights else {})}
                                     for w, grp in (("input", start), ("output", end)) for n in grp]}
    g = model.graph
    if start:
        made = {t for n in start for t in n.output}
        to_hw = sorted({t for n in g.node if n.domain.startswith(HW_DOMAIN) for t in n.input if t in made})
        sub = _sub_model(model, start, [g.input[0].name], to_hw)
        sub.save(str(work_dir / "host_input.onnx"))
        out["input"] = work_dir / "host_input.onnx"
    if end:
        made = {t for n in g.node if n.domain.startswith(HW_DOMAIN) for t in n.output}
        from_hw = sorted({t for n in end for t in n.input if t in made})
        sub = _sub_model(model, end, from_hw, [g.output[0].name])
        sub.save(str(work_dir / "host_output.onnx"))
        out["output"] = work_dir / "host_output.onnx"
    return out


def layer_table(model: Any, weight_layers: Sequence[str | None] = ()) -> list[dict[str, Any]]:
    """Per-layer facts from a FINN HW graph: name, op, PE/SIMD, data types, source PyTorch layer."""
    from qonnx.custom_op.registry import getCustomOp

    from hwkit.export.provenance import torch_layer_of

    by_order = weight_node_layers(model, weight_layers)
    rows = []
    for node in model.graph.node:
        row: dict[str, Any] = {"name": node.name, "op": node.op_type,
                               "torch_layer": torch_layer_of(node) or by_order.get(node.name)}
        try:
            inst = getCustomOp(node)
        except Exception:  # non-FINN node: no attributes to read
            inst = None
        for attr, key in (("PE", "pe"), ("SIMD", "simd"), ("MW", "mw"), ("MH", "mh")):
            try:
                row[key] = int(inst.get_nodeattr(attr)) if inst is not None else None
            except (AttributeError, Exception):  # qonnx raises AttributeError or a bare Exception
                row[key] = None
        for key, read in (("input_dtype", lambda op: op.get_input_datatype(0)),
                          ("weight_dtype", lambda op: op.get_input_datatype(1)),
                          ("output_dtype", lambda op: op.get_output_datatype(0))):
            try:
                row[key] = read(inst).name if inst is not None and (key != "weight_dtype" or len(node.input) > 1) \
                    else None
            except Exception:  # not every op has typed ports
                row[key] = None
        rows.append(row)
    return rows


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def estimates(report_dir: Path) -> dict[str, Any]:
    """finn-plus's estimate reports, as written by step_generate_estimate_reports."""
    files = {
        "layer_resources": "estimate_layer_resources.json",
        "layer_cycles": "estimate_layer_cycles.json",
        "network_performance": "estimate_network_performance.json",
        "op_and_param_counts": "op_and_param_counts.json",
    }
    out = {k: _read_json(report_dir / f) for k, f in files.items()}
    if out["network_performance"] is None or out["layer_resources"] is None:
        raise ToolError(f"finn-plus wrote no estimate reports in {report_dir}")
    return out


# Steps that call Vivado or Vitis HLS (directly or through a simulation): they refuse to start
# without XILINX_VIVADO, and their failures are reported with the tail of the tool's log.
VIVADO_STEPS = frozenset({
    "step_hw_ipgen", "step_set_fifo_depths", "step_generate_hardware", "step_create_stitched_ip",
    "step_measure_rtlsim_performance", "step_out_of_context_synthesis", "step_vivado_power_estimation",
    "step_prepare_synthesis", "step_synthesize_bitfile",
})
# Output folders a later step reads from cfg.output_dir; hwkit gives every pass its own output_dir,
# so the folders an earlier pass wrote are copied into the pass that needs them.
_OUTPUT_DIRS = ("bitfile", "driver", "stitched_ip", "deploy")
_NEEDS_DIRS = {"step_deployment_package": ("bitfile", "driver")}
LOG_TAIL_LINES = 20


def tool_log_tail(work_dir: Path, lines: int = LOG_TAIL_LINES) -> tuple[Path | None, list[str]]:
    """The most recently written tool log under ``work_dir`` (Vivado/HLS ``*.log``) and its last lines."""
    logs = [p for p in Path(work_dir).rglob("*.log") if p.is_file() and p.name != "pass.log"]
    if not logs:
        return None, []
    newest = max(logs, key=lambda p: p.stat().st_mtime)
    text = newest.read_text(encoding="utf-8", errors="replace").splitlines()
    return newest, [ln.rstrip() for ln in text if ln.strip()][-lines:]


def vivado_failure(step: str, exc: BaseException, work_dir: Path, out_dir: Path, step_id: str) -> ToolError:
    """A one-line summary naming the step, then the tail of the newest tool log."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log, tail = tool_log_tail(work_dir)
    where = f"; last {len(tail)} lines of {log}:" if log else f"; no tool log under {work_dir}"
    head = (f"finn-plus {step} failed: {type(exc).__name__}: {first} (build kept in {out_dir}; after fixing, "
            f"re-run the same command to resume here, or add --from {step_id}){where}")
    return ToolError("\n".join([head, *("    " + ln for ln in tail)]))


def _ensure_xsi() -> None:
    """finn-plus's boot step for simulation: build/verify its XSI module for the sourced Vivado."""
    import finn.xsi

    try:
        finn.xsi.ensure_available()
    except Exception as exc:  # finn-plus raises FINNUserError, OSError or ValueError here
        raise ToolError(f"finn-plus could not build its Vivado XSI simulation module: {exc}") from None


def _make_step_pass(step: str, step_fn: Any = None) -> Any:
    """A pass running finn-plus's ``step`` (or ``step_fn``, a step function of the same signature)."""

    def run(art: Artifact, ctx: Context) -> Artifact:
        import shutil

        from qonnx.core.modelwrapper import ModelWrapper

        from hwkit.backends.finn.vivado_reports import read_report_dir

        needs_vivado = step in VIVADO_STEPS
        if needs_vivado and not vivado_available():
            raise VivadoRequired(f"{step} needs AMD Vivado (XILINX_VIVADO is not set); see `hwkit doctor`")
        ensure_finn(ctx.work_dir)
        outputs = dict(art.meta.get("finn_outputs", {}))
        for name in _NEEDS_DIRS.get(step, ()):
            if name not in outputs:
                raise ToolError(f"{step} needs the '{name}' output of an earlier finn-plus step, which this "
                                "flow did not produce")
            shutil.copytree(ctx.out_dir / outputs[name], ctx.work_dir / name, dirs_exist_ok=True)
        fn = step_fn or _step_function(step)
        assert art.path is not None
        model = ModelWrapper(str(art.path))
        cfg = dataflow_config(ctx)
        host: dict[str, Any] | None = None
        if needs_vivado:
            _ensure_xsi()
            try:
                model = fn(model, cfg)
            except Exception as exc:
                raise vivado_failure(step, exc, ctx.work_dir, ctx.out_dir, ctx.work_dir.name) from exc
        else:
            if step == "step_create_dataflow_partition":
                host = split_host(model, ctx.work_dir)
            model = fn(model, cfg)
            if step == "step_tidy_up":
                model = convs_1d_as_2d(model)
        torch_layers = art.meta.get("model", {}).get("weight_layers", ())
        meta: dict[str, Any] = {}
        if step == "step_convert_to_hw":
            check_all_hw(model, torch_layers)
        if step == "step_create_dataflow_partition" and host is not None:
            # finn-plus keeps only the HW partition; the verification runs the host-side parts around it
            meta["host"] = {"nodes": host["nodes"], **{k: None if host[k] is None else str(host[k].relative_to(
                ctx.out_dir)) for k in ("input", "output")}}
            meta["warnings"] = [*art.meta.get("warnings", ()), *float_warnings(model, host)]
            model_meta = dict(art.meta.get("model", {}))
            model_meta["host_nodes"] = host["nodes"]
            meta["model"] = model_meta
        out = ctx.work_dir / "model.onnx"
        model.save(str(out))
        if step == "step_generate_estimate_reports":
            meta["finn"] = {"estimates": estimates(ctx.work_dir / "report"), "layers": layer_table(model, torch_layers),
                            "report_dir": str((ctx.work_dir / "report").relative_to(ctx.out_dir))}
        folding = ctx.work_dir / "report" / "auto_folding_config.json"
        if step == "step_target_fps_parallelization" and folding.is_file():
            meta["folding_config"] = str(folding.relative_to(ctx.out_dir))
        for name in _OUTPUT_DIRS:
            d = ctx.work_dir / name
            if d.is_dir() and any(d.iterdir()) and name not in _NEEDS_DIRS.get(step, ()):
                outputs[name] = str(d.relative_to(ctx.out_dir))
        if outputs:
            meta["finn_outputs"] = outputs
        found = read_report_dir(ctx.work_dir / "report") if needs_vivado else {}
        if found:
            meta["vivado"] = {**art.meta.get("vivado", {}), **found}
        return art.evolve(stage="finn", path=out, **meta)

    run.__doc__ = f"finn-plus {step}" + (" (Vivado)" if step in VIVADO_STEPS else "")
    run.__name__ = f"finn_{step}"
    return run


# Steps that run before folding: their output does not depend on the target fps, so changing
# --target-fps re-runs the flow from target_fps_parallelization on.
_FPS_INDEPENDENT = frozenset({
    "step_qonnx_to_finn", "step_tidy_up", "step_streamline", "step_convert_to_hw",
    "step_minimize_bit_width_initial", "step_create_dataflow_partition", "step_specialize_layers",
})


@functools.cache
def _steps_source() -> str:
    from importlib.util import find_spec

    if find_spec("finn") is None:
        raise ToolError("finn-plus is not installed; run scripts/setup.sh")
    spec = find_spec("finn.builder.build_dataflow_steps")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).read_text(encoding="utf-8")


def _factory(name: str) -> PassSpec | None:
    step = "step_" + name.removeprefix("finn.")
    # Importing finn's steps costs seconds, so a flow file's step names are checked against the
    # source text of the steps module; the module is imported only when a step runs.
    if f"def {step}(" not in _steps_source():
        return None
    uses = ("clock_ns", "board") if step in _FPS_INDEPENDENT else ("clock_ns", "target_fps", "board")
    return PassSpec(name, _make_step_pass(step), uses, f"finn-plus {step}")


register_factory("finn.", _factory)
