"""Packed int8 dense kernels on AMX tiles (Intel Sapphire Rapids and later: AMX-INT8).

AMX has eight tile registers of up to 16 rows x 64 bytes.  `tdpbusd` multiplies a 16 x 64 u8
tile (16 rows of A, 64 reduction elements) by an i8 tile holding 64 (K) x 16 (N) weights as 16
rows of 16 x 4 bytes, into a 16 x 16 int32 tile; the sums are exact, as vpdpbusd's.  That
weight tile is 64 reduction elements of one column block of the packed weights VNNI already
uses ([N/16, K/4, 16, 4], qcompile.passes.pack_layout): the same packing serves both.

The kernel (schedule_dense_amx), for dense_packed[..., m, n] with m and n multiples of 32 and
K of 64:

  parallel(lead, n/32) . k/KC . m/32 . [32 x 32 x KC: amx_dense_intrinsic(KC)] . epilogue

Each parallel iteration owns a 32-column panel of the output; for each chunk of KC reduction
elements (k_chunk: up to 1024, so the panel's 32 x KC weight bytes stay in L1 while every row
tile uses them) it walks the 32-row tiles.  The intrinsic configures the tiles, loads the
tile's 32 x 32 int32 partial sums (tmm0-3) from the panel's accumulator buffer, then for each
64 of KC loads two activation tiles (tmm4, tmm5: rows 0-15 and 16-31) and two weight tiles
(tmm6, tmm7: columns 0-15 and 16-31) and issues four tdpbusd, and stores tmm0-3 back.  The
fused epilogue (requantize, clip, ...) then runs on the panel, vectorized, as after the VNNI
kernels.  The tiles are configured in every call: a thread's tile configuration is shared
with whatever else runs on it (PyTorch's or ONNX Runtime's AMX kernels on the calling thread).
Measured (`qcompile bench --dense 1024 4096 4096 --runs 20`, 2-core Xeon VM): the whole
reduction per 32 x 32 tile (no chunks) ran at 1191 GOP/s, as our VNNI kernel; chunked, 1489.

Linux gives a process AMX state only after it asks (arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)); the first tile instruction of a process that did not is SIGILL.  Each
AMX kernel asks on entry (with_permission_request: one syscall per kernel call, 0.23 us
measured here; asking again is a no-op), so a compiled .so needs nothing from its loader.

These kernels are not tuned: the tile shape is fixed by the registers, and MetaSchedule's
measuring processes would have to ask for AMX state too.  `schedule_amx_kernels` schedules
them before the tuning databases are applied (the same dense kernels have VNNI records there).
"""

from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.s_tir import SBlock, SBlockRealize, TensorIntrin
from tvm.script import tirx as T

from .common import extent, find_block, inline_epilogue, primfunc_pass, schedule_epilogue

ROWS = COLS = 32   # one output tile: 2 x 2 tiles of 16 x 16 int32
K_STEP = 64        # reduction elements per tdpbusd (one row of a tile: 64 bytes)
MAX_K_CHUNK = 1024  # a 32-column weight panel chunk: 32 KB, within L1 (48 KB on Sapphire Rapids)

_SYS_ARCH_PRCTL = 158
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18


def _config_bytes() -> tvm.tirx.PrimExpr:
    """The 64-byte tile configuration as one vector: palette 1, tiles 0-7 of 16 rows x 64
    bytes (bytes 16-31: bytes per row of each tile, little-endian u16; 48-55: rows)."""
    lanes = 64
    idx = T.ramp(0, 1, lanes)

    def vec(v):
        return T.broadcast(v, lanes)

    colsb = (idx >= vec(16)) & (idx < vec(32)) & (idx % vec(2) == vec(0))
    rows = (idx >= vec(48)) & (idx < vec(56))
    return T.Select(idx == vec(0), vec(T.uint8(1)),
                    T.Select(colsb, vec(T.uint8(K_STEP)),
                             T.Select(rows, vec(T.uint8(16)), vec(T.uint8(0)))))


def _tile(name: str, *args) -> tvm.tirx.PrimExpr:
    return T.call_llvm_intrin("void", f"llvm.x86.{name}", *args)


def _intrinsic(k: int):
    """(desc, impl) of C[32, 32] += A[32, k] . B, B the 2 column blocks of packed weights."""

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((ROWS, k), "uint8", offset_factor=1),
             B: T.Buffer((2, k // 4, 16, 4), "int8", offset_factor=1),
             C: T.Buffer((ROWS, COLS), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:ROWS, 0:COLS], A[0:ROWS, 0:k], B[0:2, 0:k // 4, 0:16, 0:4])
            T.writes(C[0:ROWS, 0:COLS])
            for i, j, r in T.grid(ROWS, COLS, k):
                with T.sblock("update"):
                    vi, vj, vr = T.axis.remap("SSR", [i, j, r])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vr], "int32") * T.cast(
                        B[vj // 16, vr // 4, vj % 16, vr % 4], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((ROWS, k), "uint8", offset_factor=1, strides=("a_row", 1)),
             B: T.Buffer((2, k // 4, 16, 4), "int8", offset_factor=1),
             C: T.Buffer((ROWS, COLS), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:ROWS, 0:COLS], A[0:ROWS, 0:k], B[0:2, 0:k // 4, 0:16, 0:4])
            T.writes(C[0:ROWS, 0:COLS])
            config = T.alloc_buffer((64,), "uint8", scope="local")
            config[T.ramp(0, 1, 64)] = _config_bytes()
            T.evaluate(_tile("ldtilecfg", T.address_of(config[0])))
            c_row = T.int64(COLS * 4)  # bytes between rows of the int32 accumulator
            a_row = T.Cast("int64", A.strides[0])
            T.evaluate(_tile("tileloadd64", T.int8(0), T.address_of(C[0, 0]), c_row))
            T.evaluate(_tile("tileloadd64", T.int8(1), T.address_of(C[0, 16]), c_row))
            T.evaluate(_tile("tileloadd64", T.int8(2), T.address_of(C[16, 0]), c_row))
            T.evaluate(_tile("tileloadd64", T.int8(3), T.address_of(C[16, 16]), c_row))
            for kc in range(k // K_STEP):
                T.evaluate(_tile("tileloadd64", T.int8(4), T.address_of(A[0, kc * K_STEP]), a_row))
                T.evaluate(_tile("tileloadd64", T.int8(5), T.address_of(A[16, kc * K_STEP]),
                                 a_row))
                T.evaluate(_tile("tileloadd64", T.int8(6), T.address_of(B[0, kc * 16, 0, 0]),
                                 T.int64(K_STEP)))
                T.evaluate(_tile("tileloadd64", T.int8(7), T.address_of(B[1, kc * 16, 0, 0]),
                                 T.int64(K_STEP)))
                T.evaluate(_tile("tdpbusd", T.int8(0), T.int8(4), T.int8(6)))
                T.evaluate(_tile("tdpbusd", T.int8(1), T.int8(4), T.int8(7)))
                T.evaluate(_tile("tdpbusd", T.int8(2), T.int8(5), T.int8(6)))
                T.evaluate(_tile("tdpbusd", T.int8(3), T.int8(5), T.int8(7)))
            T.evaluate(_tile("tilestored64", T.int8(0), T.address_of(C[0, 0]), c_row))
            T.evaluate(_tile("tilestored64", T.int8(1), T.address_of(C[0, 16]), c_row))
            T.evaluate(_tile("tilestored64", T.int8(2), T.address_of(C[16, 0]), c_row))
            T.evaluate(_tile("tilestored64", T.int8(3), T.address_of(C[16, 16]), c_row))

    return desc, impl


def amx_dense_intrinsic(k: int) -> str:
    """The name of the 32 x 32 x k AMX intrinsic (registered on first use; k % 64 == 0)."""
    name = f"qcompile_amx_dense_32x32x{k}"
    try:
        TensorIntrin.get(name)
    except Exception:  # noqa: BLE001 - not registered yet
        TensorIntrin.register(name, *_intrinsic(k))
    return name


def fits(sch: s_tir.Schedule) -> bool:
    """True when the function's packed dense can run on AMX tiles: 32 x 32 output tiles, K a
    multiple of 64, and the activations read as they are (no packing stage: u8, K unpadded)."""
    block = find_block(sch, "dense_packed")
    if block is None or find_block(sch, "pack_data") is not None:
        return False
    *_, m, n, k = sch.get_loops(block)
    return (extent(sch, m) % ROWS == 0 and extent(sch, n) % COLS == 0
            and extent(sch, k) % K_STEP == 0)


def k_chunk(k: int) -> int:
    """Reduction elements per pass over the output rows: the largest multiple of 64 dividing
    k up to MAX_K_CHUNK (32 columns x that many weight bytes stay in L1 for every row tile)."""
    return max(c for c in range(K_STEP, min(k, MAX_K_CHUNK) + 1, K_STEP) if k % c == 0)


def schedule_dense_amx(sch: s_tir.Schedule) -> None:
    """Tile a packed dense into 32-column panels (the parallel loop), each computed chunk of
    the reduction by chunk over 32-row tiles with the AMX intrinsic, its epilogue fused per
    panel (see the module docstring)."""
    block = sch.get_sblock("dense_packed")
    *lead, m, n, k = sch.get_loops(block)
    chunk = k_chunk(extent(sch, k))
    intrin = amx_dense_intrinsic(chunk)
    mo, mi = sch.split(m, [None, ROWS])
    no, ni = sch.split(n, [None, COLS])
    ko, ki = sch.split(k, [None, chunk])
    sch.reorder(*lead, no, ko, mo, mi, ni, ki)
    epilogue = inline_epilogue(sch, block)
    sch.set_scope(block, 0, "local")
    panel = sch.fuse(*lead, no)
    if epilogue is not None:
        schedule_epilogue(sch, epilogue, panel)
    sch.parallel(panel)
    sch.decompose_reduction(block, ko)
    sch.vectorize(sch.get_loops(sch.get_sblock("dense_packed_init"))[-1])
    sch.tensorize(mi, intrin)


def with_permission_request(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """`func` asking Linux for AMX state on entry (see the module docstring)."""
    ask = tvm.tirx.Evaluate(tvm.tirx.call_extern(
        "int64", "syscall", tvm.tirx.const(_SYS_ARCH_PRCTL, "int64"),
        tvm.tirx.const(_ARCH_REQ_XCOMP_PERM, "int64"),
        tvm.tirx.const(_XFEATURE_XTILEDATA, "int64")))
    realize = func.body
    root = realize.block
    body = tvm.tirx.SeqStmt([ask, root.body])
    root = SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body,
                   root.init, root.alloc_buffers, root.match_buffers, root.annotations)
    return func.with_body(SBlockRealize(realize.iter_values, realize.predicate, root))


def schedule_amx_kernels(family, report: dict | None = None) -> tvm.transform.Pass:
    """Schedule every packed dense that fits AMX tiles (when `family.amx`), marked scheduled
    so tuning databases leave it alone; `report` gets {name: "amx"}."""

    def rewrite(gvar, func):
        if family is None or not family.amx:
            return None
        sch = s_tir.Schedule(func)
        if not fits(sch):
            return None
        schedule_dense_amx(sch)
        if report is not None:
            report[gvar.name_hint] = "amx"
        return with_permission_request(sch.mod["main"]).with_attr("tirx.is_scheduled", True)

    return primfunc_pass("qcompile.ScheduleAMX", rewrite)
