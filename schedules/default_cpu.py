"""A default CPU schedule for untuned fused PrimFuncs (row kernels: schedules.rows).

The Relax CPU pipeline leaves fused PrimFuncs unscheduled (one thread, scalar).  This pass gives
every block a parallel outer loop and a vector inner one:
- a reduction block (conv, dense, pooling) keeps its reduction loops outside its innermost
  spatial loop, which is vectorized, so each step updates a vector of outputs (direct
  convolution vectorized along the output width / dense along the output features);
- an elementwise block is parallel over its outer loops and vectorized along the innermost.
It is a floor for untuned models, not a replacement for tuning (issue: fast int8 on x86).
"""

from __future__ import annotations

import os

import tvm
from tvm import s_tir

from . import depthwise, packed, rows
from .common import MATERIALIZED, is_elementwise, is_scheduled, primfunc_pass

_VECTOR = (16, 8, 4)
_PARALLEL_LOOPS = 3
_ROWS = 4


def _vector_factor(extent) -> int | None:
    if not isinstance(extent, (int, tvm.tirx.IntImm)):
        return None
    extent = int(extent)
    for f in _VECTOR:
        if extent % f == 0:
            return f
    return None


def _parallel(sch, loops):
    if not loops:
        return
    try:
        sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])
    except Exception:  # noqa: BLE001 - a loop TVM refuses to parallelize stays serial
        pass


def _vectorize(sch, loop):
    try:
        sch.vectorize(loop)
    except Exception as err:  # noqa: BLE001 - not vectorizable here: stays scalar
        if os.environ.get("QCOMPILE_DEBUG_SCHEDULE"):
            print("vectorize failed:", str(err)[-600:])


# Elementwise blocks that transpose (NCHW -> NHWC in numerics.elementwise.channels_last_clamp,
# attention's keys to (head, dim, token)): read along one axis and written along another,
# whichever loop is vectorized the other side is strided.  Tiled 16 x 16 the tile stays in L1:
# 96x112x112 took 0.098 ms instead of 0.132, 144x56x56 0.039 instead of 0.082 (ad-hoc script,
# each kernel alone).
_TRANSPOSE_TILE = 16


def _is_transpose(sch, block) -> bool:
    """An elementwise block whose output's last axis is another axis of a tensor it reads
    (from the loads' own indices: a block's read regions are relaxed to whole axes)."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(loops) < 2 or len(loops) != len(stmt.iter_vars) or not is_elementwise(sch, block):
        return False
    if any(not isinstance(sch.get(lp).extent, (int, tvm.tirx.IntImm))
           or int(sch.get(lp).extent) % _TRANSPOSE_TILE for lp in loops[-2:]):
        return False
    if not isinstance(stmt.body, tvm.tirx.stmt.BufferStore):
        return False
    last = stmt.iter_vars[-1].var

    def uses_last(index) -> bool:
        return any(v.same_as(last) for v in tvm.tirx.analysis.undefined_vars(index))

    return any(len(load.indices) >= 2 and not uses_last(load.indices[-1])
               and any(uses_last(i) for i in load.indices[:-1])
               for load in _loads(stmt.body.value))


def _loads(expr) -> list:
    """The BufferLoads in an expression (ir.expr.TensorLoad in TVM 0.27, which has no Python
    TIR visitor)."""
    if isinstance(expr, tvm.ir.expr.TensorLoad):
        return [expr]
    found = []
    for field in ("a", "b", "value", "condition", "true_value", "false_value"):
        child = getattr(expr, field, None)
        if isinstance(child, tvm.ir.expr.Expr):
            found += _loads(child)
    for child in getattr(expr, "args", ()):
        if isinstance(child, tvm.ir.expr.Expr):
            found += _loads(child)
    return found


def _schedule_transpose(sch, block):
    *outer, j, k = sch.get_loops(block)
    jo, ji = sch.split(j, [None, _TRANSPOSE_TILE])
    ko, ki = sch.split(k, [None, _TRANSPOSE_TILE])
    sch.reorder(*outer, jo, ko, ji, ki)
    _parallel(sch, outer[:_PARALLEL_LOOPS] or [jo])
    sch.unroll(ki)


def _writes_bool(sch, block) -> bool:
    """A block storing bool (a mask): TVM 0.27 lowers a vector store of bool as int8 lanes
    into a bool buffer and fails the build, so it stays scalar (masks are small)."""
    return any(str(w.source.dtype) == "bool" for w in sch.get(block).writes)


def _schedule_block(sch, block):
    if _is_transpose(sch, block):
        _schedule_transpose(sch, block)
        return
    loops = sch.get_loops(block)
    iter_types = [iv.iter_type for iv in sch.get(block).iter_vars]
    if len(loops) != len(iter_types):
        return
    spatial = [lp for lp, t in zip(loops, iter_types) if t == tvm.tirx.IterVar.DataPar]
    reduce = [lp for lp, t in zip(loops, iter_types) if t == tvm.tirx.IterVar.CommReduce]
    if len(spatial) + len(reduce) != len(loops) or not spatial:
        return
    inner = spatial[-1]
    factor = _vector_factor(sch.get(inner).extent)
    if factor is None or _writes_bool(sch, block):
        if reduce:
            sch.reorder(*spatial, *reduce)
        _parallel(sch, spatial[:_PARALLEL_LOOPS])
        return
    outer_spatial, block_rows = spatial[:-1], []
    if int(sch.get(inner).extent) > factor:
        outer, inner = sch.split(inner, [None, factor])
        outer_spatial = outer_spatial + [outer]
    if reduce and len(spatial) >= 2:
        # Register blocking: ROWS neighbouring outputs of the next-outer spatial axis share
        # every reduction step (ROWS vector accumulators live in registers).
        row = spatial[-2]
        if int(sch.get(row).extent) % _ROWS == 0 and int(sch.get(row).extent) > _ROWS:
            row_outer, row_inner = sch.split(row, [None, _ROWS])
            outer_spatial = [row_outer if lp.same_as(row) else lp for lp in outer_spatial]
            block_rows = [row_inner]
    sch.reorder(*outer_spatial, *reduce, *block_rows, inner)
    _parallel(sch, outer_spatial[:_PARALLEL_LOOPS])
    _vectorize(sch, inner)
    if reduce:
        # accumulate in a local buffer, written back once per output tile
        depth = len(reduce) + len(block_rows) + 1  # loops inside the output-tile loop
        local = sch.cache_write(block, 0, "local")
        _inline_epilogue(sch, local)
        sch.reverse_compute_at(local, sch.get_loops(block)[-(depth + 1)])
        init = sch.decompose_reduction(block, sch.get_loops(block)[-depth])
        for lp in sch.get_loops(init)[-(len(block_rows) + 1):-1]:
            sch.unroll(lp)
        _vectorize(sch, sch.get_loops(init)[-1])
        for lp in block_rows:
            sch.unroll(lp)
        _vectorize(sch, sch.get_loops(local)[-1])


def _inline_elementwise(sch, root) -> None:
    """Inline every elementwise block whose consumers are all elementwise (a reshape into the
    transpose after it, a scale into the mask select): fused functions come with each step
    writing a whole intermediate buffer.  Attention's head transposes at BERT-base batch 8 (three
    passes over 3 MB, 1.4 ms a call in the model) and the QK^T scale-and-mask kernel's two 6 MB
    intermediates were slow less for the work than for the memory.  A block read by a reduction
    stays (inlined, it would be recomputed at every reduction step: softmax's exp)."""
    changed = True
    while changed:
        changed = False
        for block in sch.get_child_blocks(root):
            consumers = sch.get_consumers(block)
            if (not is_elementwise(sch, block) or not consumers
                    or sch.get(block).name_hint.startswith(MATERIALIZED)
                    or not all(is_elementwise(sch, c) for c in consumers)):
                continue
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001 - an output or a non-inlinable block stays
                continue
            changed = True
            break


def _domain(sch, block) -> list:
    return [str(iv.dom.extent) for iv in sch.get(block).iter_vars]


def _inline_epilogue(sch, write_back) -> None:
    """Inline the elementwise blocks after a reduction, one after another, into its
    accumulator's write-back (computed per output tile, no intermediate buffer)."""
    while True:
        consumers = sch.get_consumers(write_back)
        if len(consumers) != 1:
            return
        (consumer,) = consumers
        if (not is_elementwise(sch, consumer) or _domain(sch, consumer) != _domain(sch, write_back)
                or sch.get(consumer).name_hint.startswith(MATERIALIZED)):
            return  # a crop of a padded reduction (pad_einsum) would be inlined uncropped
        try:
            sch.reverse_compute_inline(consumer)
        except Exception:  # noqa: BLE001 - stays a block of its own
            return


def _pad_odd_reduction(sch, block) -> None:
    """A reduction whose innermost output axis has no vector factor, or whose next axis no
    whole register-row blocks (attention over ViT's 197 tokens), is computed padded to whole
    vectors and row blocks (pad_einsum: padded operand copies, a cropped output).  Scalar,
    QK^T of a 4-layer ViT-Tiny took 8.7 of its 15 ms (one head-batched 3x197x64x197 matmul
    alone 1.27 -> 0.12 ms, the same floats)."""
    iter_types = [iv.iter_type for iv in sch.get(block).iter_vars]
    spatial = [i for i, t in enumerate(iter_types) if t == tvm.tirx.IterVar.DataPar]
    loops = sch.get_loops(block)
    if (len(loops) != len(iter_types) or len(spatial) < 2
            or tvm.tirx.IterVar.CommReduce not in iter_types):
        return
    inner, row = (sch.get(loops[i]).extent for i in spatial[-2:][::-1])
    if not all(isinstance(e, (int, tvm.tirx.IntImm)) for e in (inner, row)):
        return
    if _vector_factor(inner) is not None and (int(row) % _ROWS == 0 or int(row) <= _ROWS):
        return
    padding = [1] * len(iter_types)
    padding[spatial[-1]], padding[spatial[-2]] = _VECTOR[0], _ROWS
    try:
        sch.pad_einsum(block, padding)
    except Exception:  # noqa: BLE001 - not an einsum: the block stays as it is
        pass


def _sum_in_lanes(sch, block) -> None:
    """A reduction over each row's last, contiguous axis (LayerNorm's mean and variance,
    softmax's max and sum) as partial sums in 16 lanes (rfactor: [rows..., 16], the lanes the
    vectorized inner axis, the row's steps the reduction) and then their sum.  Vectorized across
    rows instead, each load gathers 16 rows with a stride of the row: a LayerNorm over 1024 x 768
    (BERT-base, batch 8) took 0.57 ms built alone, 0.18 in lanes.  The lanes add in another
    order than one sequential sum (float islands promise no bits; ATen's own kernels sum in
    vector lanes too).  Row kernels whose blocks all share the rows take schedules.rows."""
    ivs = sch.get(block).iter_vars
    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in ivs]
    if (len(loops) != len(ivs) or len(ivs) < 2 or kinds[-1] != tvm.tirx.IterVar.CommReduce
            or kinds.count(tvm.tirx.IterVar.CommReduce) != 1):
        return
    extent = sch.get(loops[-1]).extent
    if not isinstance(extent, (int, tvm.tirx.IntImm)) or int(extent) < rows.MIN_ROW \
            or int(extent) % rows.LANES:
        return
    read = sch.get(block).reads
    if not any(len(r.region) == len(ivs) for r in read):
        return  # not a row of a tensor of the block's own rank
    try:
        rows.in_lanes(sch, block)
    except Exception:  # noqa: BLE001 - not a plain sum/max: stays as it is
        pass


def _schedule_generic(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    sch = s_tir.Schedule(func)
    try:
        root = sch.get_sblock("root")
    except Exception:  # noqa: BLE001 - no root block: leave the function as it is
        return func
    _inline_elementwise(sch, root)
    for block in sch.get_child_blocks(root):
        _sum_in_lanes(sch, block)
    for block in sch.get_child_blocks(root):
        _pad_odd_reduction(sch, block)
    for block in sch.get_child_blocks(root):
        try:
            _schedule_block(sch, block)
        except Exception:  # noqa: BLE001 - an unusual block keeps the default loop nest
            continue
    return sch.mod["main"]


def schedule_func(func: tvm.tirx.PrimFunc, family) -> tuple[tvm.tirx.PrimFunc, str]:
    """Default schedule for one PrimFunc: (scheduled func, how: "tensorized", "window" or
    "generic").  The specialized schedules are tried in order (the first whose kind the
    function is), then the generic one."""
    attempts = [("window", depthwise.window_kind,
                 lambda sch, _kind: depthwise.schedule_depthwise(sch, family))]
    if family is not None and family.dot_intrinsic is not None:
        attempts.append(("tensorized", packed.packed_kind,
                         lambda sch, _kind: packed.schedule_packed(sch, family)))
    attempts.append(("generic", rows.row_blocks, rows.schedule_rows))
    for how, kind_of, schedule in attempts:
        sch = s_tir.Schedule(func)
        kind = kind_of(sch)
        if kind is None:
            continue
        try:
            schedule(sch, kind)
            return sch.mod["main"], how
        except Exception as err:  # noqa: BLE001 - correct but slower generic code instead
            if os.environ.get("QCOMPILE_DEBUG_SCHEDULE"):
                print(f"{how} schedule ({kind_of.__name__}) failed:", str(err)[-800:])
    return _schedule_generic(func), "generic"


def default_schedule(family=None, report: dict | None = None) -> tvm.transform.Pass:
    """Schedule every unscheduled PrimFunc: tensorized where the family has an intrinsic for
    a packed kernel, else the generic parallel + vector schedule.  `report` (a dict) receives
    {function name: "tensorized" | "generic" | "tuned"} ("tuned": scheduled already, by a
    tuning database; an entry already there is kept)."""

    def rewrite(gvar, func):
        scheduled, how = (None, "tuned") if is_scheduled(func) else schedule_func(func, family)
        if report is not None:  # keeps a "tuned_near" or "amx" from the passes before
            report.setdefault(gvar.name_hint, how)
        return scheduled

    return primfunc_pass("qcompile.DefaultSchedule", rewrite)
