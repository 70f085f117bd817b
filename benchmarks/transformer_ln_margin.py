"""How float is the LayerNorm path? Margins of a LayerNorm encoder's LayerNorm outputs to the next thresholds.

    .venv/bin/python benchmarks/transformer_ln_margin.py BUILD_DIR

``BUILD_DIR`` is a ``hwkit compile`` build of a ``norm="layer"`` encoder (flow finn-transformer) on scikit-learn's
digits rows (hwkit.models.encoder.digits_tokens, 8 tokens). On the streamlined graph
(``passes/*transformer.streamline/model.onnx``), run sample by sample over the 360 test samples, this prints:

* the smallest distance of any LayerNorm output to any threshold of the MultiThreshold that quantises it (a
  device computing LayerNorm in float with another operation order can only change the integer where this
  distance is within its rounding error), and how many elements lie within 1e-5 of a threshold;
* how many thresholded integers change when LayerNorm runs without epsilon (finn-plus 1.6.1's LayerNorm
  kernels, ``layernorm<N>`` in HLS and finn-rtllib's ``layernorm.sv``, take no epsilon; only finn-plus's Python
  execution of the layer uses the ``epsilon`` attribute), LayerNorm recomputed here in float64.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    import numpy as np
    import qonnx.core.onnx_exec as oxe
    from qonnx.core.modelwrapper import ModelWrapper

    from hwkit.models.encoder import digits_tokens

    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    (path,) = Path(sys.argv[1]).glob("passes/*transformer.streamline/model.onnx")
    m = ModelWrapper(str(path))
    x = digits_tokens()[2].numpy()
    lns = [n for n in m.graph.node if n.op_type == "LayerNormalization"]
    if not lns:
        raise SystemExit(f"{path}: no LayerNormalization (is it a norm='layer' encoder?)")
    print("LayerNorm epsilon after folding the input scale:",
          [next(a.f for a in n.attribute if a.name == "epsilon") for n in lns])
    gaps: list[float] = []
    near = flips = total = 0
    for i in range(len(x)):
        ctx = oxe.execute_onnx(m, {m.graph.input[0].name: x[i:i + 1]}, return_full_exec_context=True)
        for n in lns:
            (mt,) = m.find_consumers(n.output[0])
            if mt.op_type != "MultiThreshold":
                raise SystemExit(f"{n.name} feeds {mt.op_type}, not a MultiThreshold")
            y = ctx[n.output[0]]
            t = m.get_initializer(mt.input[1])
            t = t if t.shape[0] > 1 else np.repeat(t, y.shape[-1], 0)  # (channels, steps)
            d = np.abs(y[..., None] - t).min(-1)
            gaps.append(float(d.min()))
            near += int((d < 1e-5).sum())
            inp = ctx[n.input[0]].astype(np.float64)
            y0 = (inp - inp.mean(-1, keepdims=True)) / np.sqrt(inp.var(-1, keepdims=True))
            flips += int(((y[..., None] >= t).sum(-1) != (y0[..., None] >= t).sum(-1)).sum())
            total += y.size
    print(f"test samples {len(x)}, LayerNorm output elements {total}")
    print(f"smallest |LayerNorm output - threshold| {min(gaps):.3g} (median of the per-sample minima "
          f"{float(np.median(gaps)):.3g}); elements within 1e-5 of a threshold: {near}")
    print(f"thresholded integers that change when LayerNorm has no epsilon: {flips}")


if __name__ == "__main__":
    main()
