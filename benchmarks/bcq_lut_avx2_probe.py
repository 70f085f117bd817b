"""Probe: a T-MAC-style AVX2 table-lookup kernel for hwkit's BCQ layout against fp32 and the int8 path, per Linear.

    nice .venv/bin/python benchmarks/bcq_lut_avx2_probe.py [--rows 1,8,25] [--reps 300] [--json F]

Not a library kernel (hwkit does not ship it): it measures what the LUT approach gives on this CPU (AVX2 + FMA, no
AVX-512) with hwkit's BCQ layout, where each plane has one scale per 8 input columns x 8 rows (docs/shiftadd.md
section 9 explains why that layout is the obstacle). Needs gcc (compiled into a temporary directory at start).

Kernel: per token, two 16-entry int8 tables per 8-input chunk (the signed sums of columns 0-3 and 4-7, quantised
with one scale per token to +-63 so that the two halves add in int8 without overflow); per 32 output rows, chunk
and plane: 32 code bytes, two ``pshufb`` lookups and an add give the 32 rows' chunk sums; they are widened to four
8-float vectors and accumulated with the four 8-row scales by FMA. Codes and scales are ``lutgemv.pack``'s layout
([V][C][q][32] bytes, [V][C][q][4] floats). Timed per Linear (random 3-bit BCQ weights of MiniLM's shapes, one
thread, calls interleaved, medians): fp32 ``F.linear``, the int8 path (``BCQLinear.int8_forward``) and this kernel
(table build included); the kernel's relative error against the dense BCQ product is printed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SRC = r"""
#include <immintrin.h>
#include <stdint.h>
#include <math.h>

/* x [M][K8] float (K8 = 8*C, zero padded); tabs [M][C][32] int8; scale [M] */
void tables(const float* x, int8_t* tabs, float* scale, int M, int C) {
    for (int m = 0; m < M; m++) {
        const float* xm = x + (long)m * C * 8;
        float mx = 0.f;
        for (int c = 0; c < C; c++)
            for (int h = 0; h < 2; h++) {
                const float* p = xm + c * 8 + h * 4;
                float s = fabsf(p[0]) + fabsf(p[1]) + fabsf(p[2]) + fabsf(p[3]);
                if (s > mx) mx = s;
            }
        float sc = mx > 0 ? mx / 63.f : 1.f, inv = 1.f / sc;
        scale[m] = sc;
        int8_t* t = tabs + (long)m * C * 32;
        for (int c = 0; c < C; c++)
            for (int h = 0; h < 2; h++) {
                const float* p = xm + c * 8 + h * 4;
                for (int b = 0; b < 16; b++) {
                    float v = 0.f;
                    for (int j = 0; j < 4; j++) v += (b >> j & 1) ? p[j] : -p[j];
                    t[c * 32 + h * 16 + b] = (int8_t)lrintf(v * inv);
                }
            }
    }
}

/* out [M][V*32] */
void gemm(const int8_t* tabs, const float* scale, const uint8_t* codes, const float* alpha, float* out,
          int M, int V, int C, int q) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    for (int v = 0; v < V; v++) {
        const uint8_t* cv = codes + (long)v * C * q * 32;
        const float* av = alpha + (long)v * C * q * 4;
        for (int m = 0; m < M; m++) {
            const int8_t* t = tabs + (long)m * C * 32;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int c = 0; c < C; c++) {
                __m256i tl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(t + c * 32)));
                __m256i th = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(t + c * 32 + 16)));
                for (int i = 0; i < q; i++) {
                    long k = (long)c * q + i;
                    __m256i cb = _mm256_loadu_si256((const __m256i*)(cv + k * 32));
                    __m256i il = _mm256_and_si256(cb, lo4);
                    __m256i ih = _mm256_and_si256(_mm256_srli_epi16(cb, 4), lo4);
                    __m256i s = _mm256_add_epi8(_mm256_shuffle_epi8(tl, il), _mm256_shuffle_epi8(th, ih));
                    __m128i s0 = _mm256_castsi256_si128(s), s1 = _mm256_extracti128_si256(s, 1);
                    __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s0));
                    __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(s0, 8)));
                    __m256 f2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s1));
                    __m256 f3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(s1, 8)));
                    const float* a = av + k * 4;
                    a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 0), f0, a0);
                    a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 1), f1, a1);
                    a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 2), f2, a2);
                    a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 3), f3, a3);
                }
            }
            __m256 sc = _mm256_set1_ps(scale[m]);
            float* o = out + (long)m * V * 32 + v * 32;
            _mm256_storeu_ps(o, _mm256_mul_ps(a0, sc));
            _mm256_storeu_ps(o + 8, _mm256_mul_ps(a1, sc));
            _mm256_storeu_ps(o + 16, _mm256_mul_ps(a2, sc));
            _mm256_storeu_ps(o + 24, _mm256_mul_ps(a3, sc));
        }
    }
}
"""


def build(tmp: Path) -> Any:
    src, lib = tmp / "probe.c", tmp / "probe.so"
    src.write_text(SRC)
    try:
        subprocess.run(["gcc", "-O3", "-mavx2", "-mfma", "-shared", "-fPIC", "-o", str(lib), str(src), "-lm"],
                       check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit("benchmarks/bcq_lut_avx2_probe.py needs gcc (apt-get install gcc)") from None
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"gcc could not build the probe kernel: {e.stderr.strip()[-500:]}") from None
    return ctypes.CDLL(str(lib))


class Probe:
    """The kernel for one packed BCQ layer, with its buffers."""

    def __init__(self, lib: Any, packed: Any, max_rows: int) -> None:
        import numpy as np

        self.lib, self.p = lib, packed
        self.v, self.c, self.q = packed.codes.shape[0], packed.codes.shape[1], packed.codes.shape[2]
        self.x = np.zeros((max_rows, self.c * 8), dtype=np.float32)
        self.tabs = np.zeros((max_rows, self.c, 32), dtype=np.int8)
        self.scale = np.zeros(max_rows, dtype=np.float32)
        self.out = np.zeros((max_rows, self.v * 32), dtype=np.float32)

    def __call__(self, x: Any) -> Any:
        m, k = x.shape
        self.x[:m, :k] = x
        ptr = ctypes.c_void_p
        self.lib.tables(ptr(self.x.ctypes.data), ptr(self.tabs.ctypes.data), ptr(self.scale.ctypes.data), m, self.c)
        self.lib.gemm(ptr(self.tabs.ctypes.data), ptr(self.scale.ctypes.data), ptr(self.p.codes.ctypes.data),
                      ptr(self.p.alpha.ctypes.data), ptr(self.out.ctypes.data), m, self.v, self.c, self.q)
        return self.out[:m, : self.p.out_features]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1,8,25")
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--json")
    a = ap.parse_args()
    import torch
    from bcq_cpu_latency import _median_times

    from hwkit.compress.shiftadd import bcq, lutgemv

    torch.set_num_threads(1)
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        raise SystemExit("benchmarks/bcq_lut_avx2_probe.py needs an x86 CPU with AVX2")
    rows = [int(r) for r in a.rows.split(",")]
    lib = build(Path(tempfile.mkdtemp(prefix="hwkit-bcq-probe-")))
    res: dict[str, Any] = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "per_linear": []}
    for n, k in ((384, 384), (1536, 384), (384, 1536)):
        torch.manual_seed(0)
        w = torch.randn(n, k) / k ** 0.5
        qw = bcq.quantise_weight(w, None, 3, bcq.BCQConfig(bits=3, rounds=0))
        layer = bcq.BCQLinear(qw, torch.zeros(n), 3)
        probe = Probe(lib, lutgemv.pack(qw.codes.numpy(), qw.alpha.numpy(), 8, k), max(rows))
        for m in rows:
            x = torch.randn(m, k)
            layer.set_act_range(x.abs().amax(0))
            xn = x.numpy()
            with torch.no_grad():
                dense = torch.nn.functional.linear(x, layer.weight)
                err = float((torch.from_numpy(probe(xn).copy()) - dense).norm() / dense.norm())
                t = _median_times({"fp32": partial(torch.nn.functional.linear, x, w),
                                   "int8": partial(layer.int8_forward, x), "lut_avx2": partial(probe, xn)}, a.reps)
            row = {"shape": [n, k], "rows": m, "time_us": {kk: v * 1e6 for kk, v in t.items()},
                   "fp32_over": {kk: t["fp32"] / v for kk, v in t.items() if kk != "fp32"}, "lut_rel_error": err}
            res["per_linear"].append(row)
            print(f"{n}x{k} rows {m:3d}: fp32 {t['fp32'] * 1e6:.0f} us, int8 {t['int8'] * 1e6:.0f} us, LUT-AVX2 "
                  f"{t['lut_avx2'] * 1e6:.0f} us (fp32/LUT {t['fp32'] / t['lut_avx2']:.2f}x, fp32/int8 "
                  f"{t['fp32'] / t['int8']:.2f}x); LUT rel. error vs dense BCQ {err:.4f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
