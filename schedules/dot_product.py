"""The descriptions our int8 dot-product intrinsics share (x86 and ARM).

  dot_product_desc:  C[i] += sum_k A[k] * B[i, k]      i < lanes, k < reduce, in int32
  pixel_dot_desc:    C[i] += sum_k A[i, k] * B[k]      (lanes are pixels, the weights shared)

A is `reduce` activation bytes (u8 on x86; i8 on ARM, where the packed kernels shift the
activations by -128: qcompile.passes.pack_layout), B the `lanes x reduce` int8 weight tile,
contiguous in memory, C the accumulator vector in `scope` ("global" or "local": tensorize
compares buffer scopes).  An implementation must declare the same three buffers.
"""

from __future__ import annotations

from tvm.script import tirx as T


def dot_product_desc(lanes: int, reduce: int, scope: str, a_dtype: str = "uint8"):
    """TVMScript description of the lanes x reduce dot product (see the module docstring)."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((reduce,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, reduce), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:reduce], B[0:lanes, 0:reduce])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, reduce):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def pixel_dot_desc(lanes: int, reduce: int, scope: str):
    """TVMScript description of the pixel-lane dot product: A is `lanes` pixels x `reduce`
    u8 activations (contiguous), B `reduce` int8 weights of one output channel, shared by every
    lane, C that channel's accumulators for the `lanes` pixels."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((lanes, reduce), "uint8", offset_factor=1),
        B: T.Buffer((reduce,), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope=scope),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:lanes, 0:reduce], B[0:reduce])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, reduce):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vk], "int32")

    return desc
