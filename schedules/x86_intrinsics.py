"""Our x86 int8 tensor intrinsics (registered on import).

TVM 0.27 ships `dot_16x4_vnni`, but LLVM 22 rejects it: `llvm.x86.avx512.vpdpbusd.512` now takes
byte vectors `(<16 x i32>, <64 x i8>, <64 x i8>)` and the shipped body passes `<16 x i32>`.
`VNNI_16x4` is the same 16x4 dot product with byte-typed operands.

Semantics: C[i] += sum_k u8 A[k] * i8 B[i, k] for i < 16, k < 4, in int32.
B must be packed so that the 16x4 tile is contiguous (weights laid out [N/16, K/4, 16, 4]);
tensorizing an unpacked layout is accepted by TVM and silently wrong.

Tensorize compares buffer scopes, so each intrinsic is registered twice: accumulating into a
global buffer (`VNNI_16x4`) and into a register-resident local one (`VNNI_16x4_LOCAL`, what
the default schedules use: the accumulator tile is cached in "local" scope).

`VNNI_PIXELS_16x4_LOCAL` is the same instruction with the roles of the operands swapped, for
convolutions whose vector lanes are pixels (schedules.packed.schedule_conv_pixels and
schedule_conv_pixel_rows): C[i] += sum_k u8 A[i, k] * i8 B[k] for i < 16 pixels, k < 4 input
channels, A the 64 contiguous bytes of 16 pixels x 4 channels (activations packed with 4
channels innermost: [N, C/4, H*W, 4], or by rows and stride phase), B the 4
weights of one output channel, broadcast to every lane.  The accumulator then holds 16
neighbouring outputs of one channel, which is the NCHW order: the epilogue reads and writes
whole vectors instead of transposing a channel-lane tile.

`AVX2_8x2` is the exact AVX2 (no VNNI) counterpart: C[i] += sum_k u8 A[k] * i8 B[i, k] for
i < 8, k < 2, in int32, with weights packed [N/8, K/2, 8, 2].  It does not use `vpmaddubsw`
(u8 x i8 byte pairs summed into int16): that sum saturates, 255*127 + 255*127 = 64770 and
255*(-128) * 2 = -65280 are outside int16, so it is not bit-exact for u8 activations up to 255
and i8 weights.  Instead both operands are widened to int16 (activations zero-extended,
weights sign-extended) and `vpmaddwd` sums adjacent int16 products into int32, which is exact:
  vpmovzxbw (the activation pair) . vpbroadcastd (to 8 lanes) . vpmovsxbw (16 weight bytes)
  . vpmaddwd . vpaddd
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .dot_product import dot_product_desc, pixel_dot_desc

VNNI_16x4 = "qcompile_dot_16x4_u8i8i32_vnni"
VNNI_16x4_LOCAL = "qcompile_dot_16x4_u8i8i32_vnni_local"
# the same dot product on 8 and 4 outputs (ymm, xmm: AVX-512 VL), for grouped convolutions
# whose groups have fewer than 16 output channels
VNNI_8x4_LOCAL = "qcompile_dot_8x4_u8i8i32_vnni_local"
VNNI_4x4_LOCAL = "qcompile_dot_4x4_u8i8i32_vnni_local"
VNNI_PIXELS_16x4_LOCAL = "qcompile_pixels_16x4_u8i8i32_vnni_local"
AVX2_8x2 = "qcompile_dot_8x2_u8i8i32_avx2"
AVX2_8x2_LOCAL = "qcompile_dot_8x2_u8i8i32_avx2_local"


def _vnni(lanes: int, scope: str):
    """C[i] += sum_k A[k] B[i, k], i < lanes (16, 8 or 4: a zmm, ymm or xmm vpdpbusd)."""
    bits = 32 * lanes

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            # one expression: named temporaries become local buffers, which TVM 0.27
            # allocates with TVMBackendAllocWorkspace in every parallel iteration
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(f"llvm.x86.avx512.vpdpbusd.{bits}"),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"),
                                          lanes), dtype=f"uint8x{4 * lanes}"),
                B.vload([0, 0], dtype=f"int8x{4 * lanes}"),
                dtype=f"int32x{lanes}",
            )

    return dot_product_desc(lanes, 4, scope), impl


def _vnni_pixels_16x4(scope: str):
    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((16, 4), "uint8", offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:16, 0:4], B[0:4])
            T.writes(C[0:16])
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                A.vload([0, 0], dtype="uint8x64"),
                T.reinterpret(T.broadcast(T.reinterpret(B.vload([0], "int8x4"), dtype="int32"),
                                          16), dtype="int8x64"),
                dtype="int32x16",
            )

    return pixel_dot_desc(16, 4, scope), impl


def _avx2_8x2(scope: str):
    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((2,), "uint8", offset_factor=1),
        B: T.Buffer((8, 2), "int8", offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            # u8 -> i16 is a zero extension (the source is unsigned), i8 -> i16 a sign extension
            a_pair = T.reinterpret(T.cast(A.vload([0], "uint8x2"), "int16x2"), dtype="int32")
            a_words = T.reinterpret(T.broadcast(a_pair, 8), dtype="int16x16")
            b_words = T.cast(B.vload([0, 0], dtype="int8x16"), "int16x16")
            C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                a_words,
                b_words,
                dtype="int32x8",
            )

    return dot_product_desc(8, 2, scope), impl


TensorIntrin.register(VNNI_16x4, *_vnni(16, "global"), override=True)
TensorIntrin.register(VNNI_16x4_LOCAL, *_vnni(16, "local"), override=True)
TensorIntrin.register(VNNI_8x4_LOCAL, *_vnni(8, "local"), override=True)
TensorIntrin.register(VNNI_4x4_LOCAL, *_vnni(4, "local"), override=True)
TensorIntrin.register(VNNI_PIXELS_16x4_LOCAL, *_vnni_pixels_16x4("local"), override=True)
TensorIntrin.register(AVX2_8x2, *_avx2_8x2("global"), override=True)
TensorIntrin.register(AVX2_8x2_LOCAL, *_avx2_8x2("local"), override=True)
