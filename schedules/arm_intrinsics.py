"""Our aarch64 int8 tensor intrinsics (registered on import).

Both compute the 4x4 tile of schedules.dot_product with *signed* activations:
  C[i] += sum_k i8 A[k] * i8 B[i, k]     i < 4, k < 4, in int32
ARM has no mixed u8 x i8 dot product, so the packed kernels feed these a shifted copy of the
u8 activations (a - 128, exact in int8) and add 128 * sum_k B[i, k] back, a compile-time
constant per output channel (qcompile.passes.pack_layout, `signed_activations`).
Weights are packed [N/4, K/4, 4, 4] (the tile contiguous: 16 bytes, one q register).

- `SDOT_4x4` (aarch64 with the dotprod extension, Armv8.2+): one `sdot v.4s, v.16b, v.16b`
  with the 4 activation bytes broadcast to every 32-bit lane.
- `NEON_4x4` (plain Armv8 NEON, e.g. Cortex-A53/A72): widening multiplies.  `smull`
  multiplies the 8 low and 8 high weight bytes by the broadcast activations into int16
  (|i8 x i8| <= 16384: exact), `saddlp` sums adjacent int16 pairs into int32, `addp` adds the
  pair sums of the two halves: C[i] gets the four products of row i.  All exact.

Each is registered in global and local ("_LOCAL") accumulator scope, as on x86.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .dot_product import dot_product_desc

SDOT_4x4 = "qcompile_dot_4x4_i8i8i32_sdot"
SDOT_4x4_LOCAL = "qcompile_dot_4x4_i8i8i32_sdot_local"
NEON_4x4 = "qcompile_dot_4x4_i8i8i32_neon"
NEON_4x4_LOCAL = "qcompile_dot_4x4_i8i8i32_neon_local"


def _sdot_4x4(scope: str):
    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((4, 4), "int8", offset_factor=1),
        C: T.Buffer((4,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            a_word = T.reinterpret(A.vload([0], "int8x4"), dtype="int32")
            a_bytes = T.reinterpret(T.broadcast(a_word, 4), dtype="int8x16")
            C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                C.vload([0], dtype="int32x4"),
                a_bytes,
                B.vload([0, 0], dtype="int8x16"),
                dtype="int32x4",
            )

    return dot_product_desc(4, 4, scope, "int8"), impl


def _neon_4x4(scope: str):
    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((4, 4), "int8", offset_factor=1),
        C: T.Buffer((4,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            a_word = T.reinterpret(A.vload([0], "int8x4"), dtype="int32")
            a_bytes = T.reinterpret(T.broadcast(a_word, 2), dtype="int8x8")  # a0..a3 a0..a3
            b = B.vload([0, 0], dtype="int8x16")
            low = T.call_llvm_pure_intrin(  # rows 0, 1: products in int16
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
                a_bytes, T.vectorlow(b, dtype="int8x8"), dtype="int16x8")
            high = T.call_llvm_pure_intrin(  # rows 2, 3
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
                a_bytes, T.vectorhigh(b, dtype="int8x8"), dtype="int16x8")
            low_pairs = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"),
                low, dtype="int32x4")
            high_pairs = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"),
                high, dtype="int32x4")
            C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], dtype="int32x4") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"),
                low_pairs, high_pairs, dtype="int32x4")

    return dot_product_desc(4, 4, scope, "int8"), impl


TensorIntrin.register(SDOT_4x4, *_sdot_4x4("global"), override=True)
TensorIntrin.register(SDOT_4x4_LOCAL, *_sdot_4x4("local"), override=True)
TensorIntrin.register(NEON_4x4, *_neon_4x4("global"), override=True)
TensorIntrin.register(NEON_4x4_LOCAL, *_neon_4x4("local"), override=True)
