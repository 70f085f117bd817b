"""Fast batch-1 LUT-GEMV for binary-coded (BCQ) layers: ``y = W_hat x`` with ``W_hat = sum_i alpha_i B_i``.

The LUT idea is ShiftAddLLM's (LUT-GEMM): the signed sums ``sum_j (+-1) x_j`` of a few inputs are tabulated
once per call, and each packed byte of a binary plane picks a table entry instead of doing 8 multiply-adds.
What is specific to this CPU kernel (written here, see docs/shiftadd.md section 5):

* **4-bit keys in registers.** The 8 columns of a chunk are split into two 4-column halves; each half has a
  16-entry float32 table, which is exactly one 512-bit register. ``vpermps`` looks up 16 rows at once, so a
  byte of 16 rows x 8 columns x 1 bit costs two permutes + one add, and the scale costs one FMA per 16 rows.
  The sum of the two half-table entries equals the 256-entry table entry of the byte (same two addends).
* **Layout** ``codes[v][c][i][32]``: 32 consecutive output rows (two 16-lane vectors) of plane ``i`` and chunk
  ``c`` are 32 contiguous bytes, and a row block streams through memory in order. ``alpha[v][c][i][4]`` holds the
  scales of the four 8-row halves of the 32 rows (scale groups are 8 columns x ``group_rows`` rows, so this
  needs ``group_rows % 8 == 0``; other group sizes use the scalar kernel in ``bcq``).
* The AVX-512 kernel is written in LLVM IR and JIT-compiled with llvmlite (numba's backend) for the host CPU;
  row blocks can be shared between threads (``LUTGemv(threads=...)``). Without AVX-512 a numba kernel over the
  same layout runs (scalar table lookups).

Import cost: nothing heavy at module import (numba/llvmlite load on first use).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from hwkit.errors import InputError

ROWS = 32
"""Output rows per kernel block (two 16-lane vectors)."""
MIN_SHARED_BYTES = 2 ** 20
"""Packed weights below this size always run on the calling thread."""


def weight_memory(out_features: int, in_features: int, bits: int, group_rows: int = 8,
                  scale_bits: int = 32) -> dict[str, Any]:
    """Bytes of a BCQ weight (codes + scales) against the fp32 and fp16 dense weight of the same shape.

    Codes: ``bits`` binary planes of ``ceil(K/8)`` bytes per row. Scales: one ``scale_bits`` value per
    (8-column chunk, ``group_rows``-row group, plane). Bias is not counted (the same in every form).
    """
    if out_features < 1 or in_features < 1 or bits < 1 or group_rows < 1 or scale_bits < 1:
        raise InputError("weight_memory needs positive sizes, bits, group_rows and scale_bits")
    chunks = -(-in_features // 8)
    groups = -(-out_features // group_rows)
    code_bytes = chunks * out_features * bits
    scale_bytes = chunks * groups * bits * scale_bits / 8
    total = code_bytes + scale_bytes
    fp32 = out_features * in_features * 4
    return {"bits": bits, "group_rows": group_rows, "scale_bits": scale_bits, "code_bytes": code_bytes,
            "scale_bytes": scale_bytes, "total_bytes": total, "fp32_bytes": fp32, "fp16_bytes": fp32 // 2,
            "bits_per_weight": 8 * total / (out_features * in_features),
            "reduction_vs_fp32": 1 - total / fp32, "reduction_vs_fp16": 1 - total / (fp32 / 2)}


@dataclass
class PackedBCQ:
    """A BCQ weight in the kernel layout (see module docstring)."""

    codes: Any
    """uint8 [V, C, q, 32]."""
    alpha: Any
    """float32 [V, C, q, 4]."""
    out_features: int
    in_features: int

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads for the weight (codes + scales, with the padding to 32 rows)."""
        return int(self.codes.nbytes + self.alpha.nbytes)


def pack(codes: Any, alpha: Any, group_rows: int, in_features: int) -> PackedBCQ:
    """Kernel layout from ``QuantisedLinear`` storage: codes uint8 [C, N, q], alpha [C, ceil(N/g), q]."""
    import numpy as np

    codes, alpha = np.asarray(codes), np.asarray(alpha, dtype=np.float32)
    if group_rows % 8:
        raise InputError(f"the vector LUT kernel needs group_rows % 8 == 0, got {group_rows}")
    c, n, q = codes.shape
    v = -(-n // ROWS)
    cp = np.zeros((c, v * ROWS, q), dtype=np.uint8)
    cp[:, :n] = codes
    pc = np.ascontiguousarray(cp.reshape(c, v, ROWS, q).transpose(1, 0, 3, 2))  # [V, C, q, 32]
    half = np.arange(v * 4) * 8  # first row of each 8-row half
    grp = np.minimum(half // group_rows, alpha.shape[1] - 1)
    a = alpha[:, grp, :]  # [C, V*4, q]
    a = np.where((half < n)[None, :, None], a, 0).astype(np.float32)
    pa = np.ascontiguousarray(a.reshape(c, v, 4, q).transpose(1, 0, 3, 2))  # [V, C, q, 4]
    return PackedBCQ(pc, pa, n, in_features)


_IR = r"""
declare <16 x float> @llvm.x86.avx512.permvar.sf.512(<16 x float>, <16 x i32>)
declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)

define void @hwkit_lutgemv(ptr noalias %codes, ptr noalias %tabs, ptr noalias %alpha, ptr noalias %out,
                           i64 %b0, i64 %b1, i64 %C, i64 %q) nounwind {
entry:
  %cq = mul i64 %C, %q
  %e = icmp slt i64 %b0, %b1
  br i1 %e, label %vloop, label %done
vloop:
  %v = phi i64 [%b0, %entry], [%vn, %vend]
  %kv = mul i64 %v, %cq
  br label %cloop
cloop:
  %c = phi i64 [0, %vloop], [%cn, %cend]
  %a0c = phi <16 x float> [zeroinitializer, %vloop], [%a0i, %cend]
  %a1c = phi <16 x float> [zeroinitializer, %vloop], [%a1i, %cend]
  %toff = mul i64 %c, 32
  %tlp = getelementptr inbounds float, ptr %tabs, i64 %toff
  %lo = load <16 x float>, ptr %tlp, align 4
  %thp = getelementptr inbounds float, ptr %tlp, i64 16
  %hi = load <16 x float>, ptr %thp, align 4
  %kc0 = mul i64 %c, %q
  %kc = add i64 %kv, %kc0
  br label %iloop
iloop:
  %i = phi i64 [0, %cloop], [%in, %iloop]
  %a0 = phi <16 x float> [%a0c, %cloop], [%a0i, %iloop]
  %a1 = phi <16 x float> [%a1c, %cloop], [%a1i, %iloop]
  %k = add i64 %kc, %i
  %co = mul i64 %k, 32
  %cp = getelementptr inbounds i8, ptr %codes, i64 %co
  %cb = load <32 x i8>, ptr %cp, align 1
  %ci = zext <32 x i8> %cb to <32 x i32>
  %il = and <32 x i32> %ci, splat (i32 15)
  %ih = lshr <32 x i32> %ci, splat (i32 4)
  %il0 = shufflevector <32 x i32> %il, <32 x i32> poison, <16 x i32> LOWER
  %il1 = shufflevector <32 x i32> %il, <32 x i32> poison, <16 x i32> UPPER
  %ih0 = shufflevector <32 x i32> %ih, <32 x i32> poison, <16 x i32> LOWER
  %ih1 = shufflevector <32 x i32> %ih, <32 x i32> poison, <16 x i32> UPPER
  %pl0 = call <16 x float> @llvm.x86.avx512.permvar.sf.512(<16 x float> %lo, <16 x i32> %il0)
  %ph0 = call <16 x float> @llvm.x86.avx512.permvar.sf.512(<16 x float> %hi, <16 x i32> %ih0)
  %pl1 = call <16 x float> @llvm.x86.avx512.permvar.sf.512(<16 x float> %lo, <16 x i32> %il1)
  %ph1 = call <16 x float> @llvm.x86.avx512.permvar.sf.512(<16 x float> %hi, <16 x i32> %ih1)
  %s0 = fadd <16 x float> %pl0, %ph0
  %s1 = fadd <16 x float> %pl1, %ph1
  %ao = mul i64 %k, 4
  %ap = getelementptr inbounds float, ptr %alpha, i64 %ao
  %al = load <4 x float>, ptr %ap, align 4
  %av0 = shufflevector <4 x float> %al, <4 x float> poison, <16 x i32> HALF01
  %av1 = shufflevector <4 x float> %al, <4 x float> poison, <16 x i32> HALF23
  %a0i = call <16 x float> @llvm.fma.v16f32(<16 x float> %av0, <16 x float> %s0, <16 x float> %a0)
  %a1i = call <16 x float> @llvm.fma.v16f32(<16 x float> %av1, <16 x float> %s1, <16 x float> %a1)
  %in = add i64 %i, 1
  %id = icmp eq i64 %in, %q
  br i1 %id, label %cend, label %iloop
cend:
  %cn = add i64 %c, 1
  %cd = icmp eq i64 %cn, %C
  br i1 %cd, label %vend, label %cloop
vend:
  %oo = mul i64 %v, 32
  %op = getelementptr inbounds float, ptr %out, i64 %oo
  store <16 x float> %a0i, ptr %op, align 4
  %op1 = getelementptr inbounds float, ptr %op, i64 16
  store <16 x float> %a1i, ptr %op1, align 4
  %vn = add i64 %v, 1
  %vd = icmp eq i64 %vn, %b1
  br i1 %vd, label %done, label %vloop
done:
  ret void
}
"""


def _mask(idx: list[int]) -> str:
    return "<" + ", ".join(f"i32 {i}" for i in idx) + ">"


_JIT: dict[str, Any] = {}


def has_avx512() -> bool:
    """True when the host CPU has AVX-512F (the vector kernel's ``vpermps`` on 512-bit registers)."""
    import llvmlite.binding as llvm

    return bool(llvm.get_host_cpu_features().get("avx512f", False))


def _vector_kernel() -> Any:
    """The AVX-512 kernel as a ctypes function (pointers passed as int64), compiled once per process."""
    if "vec" in _JIT:
        return _JIT["vec"]
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    ir = (_IR.replace("LOWER", _mask(list(range(16)))).replace("UPPER", _mask(list(range(16, 32))))
          .replace("HALF01", _mask([0] * 8 + [1] * 8)).replace("HALF23", _mask([2] * 8 + [3] * 8)))
    mod = llvm.parse_assembly(ir)
    mod.verify()
    tm = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3)
    eng = llvm.create_mcjit_compiler(mod, tm)
    eng.finalize_object()
    fn = ctypes.CFUNCTYPE(None, *([ctypes.c_int64] * 8))(eng.get_function_address("hwkit_lutgemv"))
    _JIT["vec"] = fn
    _JIT["keep"] = (mod, tm, eng)  # the engine owns the machine code
    return fn


def _numba_kernels() -> dict[str, Any]:
    if "tables" in _JIT:
        return _JIT
    import numba
    import numpy as np

    @numba.njit(fastmath=False, boundscheck=False, cache=False)
    def tables(x: Any, tabs: Any) -> None:  # pragma: no cover - jitted
        # tabs[c, h, b] = sum_j (bit j of b ? +x : -x)[8c + 4h + j], built incrementally from the all-minus entry
        for c in range(tabs.shape[0]):
            for h in range(2):
                o = 8 * c + 4 * h
                t = tabs[c, h]
                t[0] = -x[o] - x[o + 1] - x[o + 2] - x[o + 3]
                for b in range(1, 16):
                    low = b & (-b)
                    j = 0 if low == 1 else (1 if low == 2 else (2 if low == 4 else 3))
                    t[b] = t[b ^ low] + np.float32(2.0) * x[o + j]

    @numba.njit(fastmath=True, boundscheck=False, cache=False, nogil=True)
    def scalar_block(codes: Any, tabs: Any, alpha: Any, out: Any, b0: int, b1: int) -> None:  # pragma: no cover
        _v, n_c, q, rows = codes.shape
        acc = np.zeros(rows, dtype=np.float32)
        for v in range(b0, b1):
            acc[:] = 0
            for c in range(n_c):
                lo = tabs[c, 0]
                hi = tabs[c, 1]
                for i in range(q):
                    cb = codes[v, c, i]
                    ab = alpha[v, c, i]
                    for h in range(4):
                        a = ab[h]
                        for r in range(8 * h, 8 * h + 8):
                            k = cb[r]
                            acc[r] += a * (lo[k & 15] + hi[k >> 4])
            out[v * rows:(v + 1) * rows] = acc

    @numba.njit(boundscheck=False, cache=False, nogil=True)
    def scalar_rows(x: Any, tabs: Any, codes: Any, alpha: Any, out: Any) -> None:  # pragma: no cover - jitted
        # one batch-1 product per row of x [T, 8C]: tables, then every 32-row block
        for t in range(x.shape[0]):
            tables(x[t], tabs)
            scalar_block(codes, tabs, alpha, out[t], 0, codes.shape[0])

    _JIT.update(tables=tables, scalar_block=scalar_block, scalar_rows=scalar_rows)
    return _JIT


class LUTGemv:
    """Batch-1 ``W_hat @ x`` for one packed BCQ layer; holds its table and output buffers (not thread-safe).

    ``threads`` (default 1; ignored below ``MIN_SHARED_BYTES`` of weights): with more, the 32-row blocks are cut
    into ``4 * threads`` pieces that the calling thread and ``threads - 1`` helper threads claim one at a time
    (the kernels release the GIL). The caller waits only for pieces in progress, never for a helper that has
    not been scheduled yet, so on a machine shared with other work a busy core costs no time-slice wait (an
    OpenMP-style barrier would); a helper preempted in the middle of a piece still delays the call.
    """

    def __init__(self, packed: PackedBCQ, threads: int | None = None, vector: bool | None = None) -> None:
        import numpy as np

        self.p = packed
        self.vector = has_avx512() if vector is None else vector
        if self.vector and not has_avx512():
            raise InputError("the vector LUT kernel needs AVX-512F on this CPU")
        nv, n_c = packed.codes.shape[0], packed.codes.shape[1]
        # below ~1 MB of weights a call takes tens of microseconds: handing pieces to threads costs more
        self.threads = 1 if packed.nbytes < MIN_SHARED_BYTES else max(1, min(threads or 1, nv))
        self._x = np.zeros(n_c * 8, dtype=np.float32)
        self._tabs = np.zeros((n_c, 2, 16), dtype=np.float32)
        self._out = np.zeros(nv * ROWS, dtype=np.float32)
        k = _numba_kernels()
        self._tables = k["tables"]
        pieces = 1 if self.threads == 1 else min(nv, 4 * self.threads)
        self._cuts = [nv * i // pieces for i in range(pieces + 1)]
        if self.vector:
            fn = _vector_kernel()
            args = (packed.codes.ctypes.data, self._tabs.ctypes.data, packed.alpha.ctypes.data,
                    self._out.ctypes.data)
            self._block = lambda b0, b1: fn(*args, b0, b1, n_c, packed.codes.shape[2])
        else:
            blk = k["scalar_block"]
            self._block = lambda b0, b1: blk(packed.codes, self._tabs, packed.alpha, self._out, b0, b1)
        self._pool: Any = None

    @property
    def kernel(self) -> str:
        return "avx512-vpermps" if self.vector else "numba-scalar"

    def _shared(self) -> None:
        import itertools
        import threading
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="hwkit-lutgemv")
        n = len(self._cuts) - 1
        todo = itertools.count()  # next() is atomic under the GIL
        done = [0]
        lock, fin = threading.Lock(), threading.Event()

        def work() -> None:
            while (i := next(todo)) < n:
                self._block(self._cuts[i], self._cuts[i + 1])
                with lock:
                    done[0] += 1
                    if done[0] == n:
                        fin.set()

        for _ in range(self.threads - 1):
            self._pool.submit(work)
        work()
        fin.wait()

    def __call__(self, x: Any) -> Any:
        """``W_hat @ x`` for one input vector (float32 [in_features]); returns a view of an internal buffer."""
        p = self.p
        self._x[: p.in_features] = x
        self._tables(self._x, self._tabs)
        if self.threads == 1:
            self._block(0, p.codes.shape[0])
        else:
            self._shared()
        return self._out[: p.out_features]

    def matmul(self, x: Any) -> Any:
        """``x @ W_hat^T`` for x [B, in_features] or [in_features], one GEMV per row (copied out)."""
        import numpy as np

        x2 = np.atleast_2d(np.asarray(x, dtype=np.float32))
        out = np.empty((x2.shape[0], self.p.out_features), dtype=np.float32)
        for t in range(x2.shape[0]):
            out[t] = self(x2[t])
        return out if np.ndim(x) == 2 else out[0]

    def rows(self, x: Any) -> Any:
        """``x @ W_hat^T`` for x [T, in_features] float32: one batch-1 product per row, the whole loop in compiled
        code for the scalar kernel (no Python call per row); returns a new [T, out_features] array."""
        import numpy as np

        p = self.p
        n_c = p.codes.shape[1]
        x2 = np.asarray(x, dtype=np.float32)
        if not self.vector and self.threads == 1:
            xp = np.zeros((x2.shape[0], n_c * 8), dtype=np.float32)
            xp[:, : p.in_features] = x2
            out = np.empty((x2.shape[0], p.codes.shape[0] * ROWS), dtype=np.float32)
            _numba_kernels()["scalar_rows"](xp, self._tabs, p.codes, p.alpha, out)
            return np.ascontiguousarray(out[:, : p.out_features])
        return self.matmul(x2)

    def close(self) -> None:
        """Stop the helper threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
