"""Default schedule of the window kernels: the depthwise convs (fbgemm's, the exact one), the
8-bit max pool and the average pools' window sums (qcompile.numerics.depthwise.
depthwise_conv_fbgemm, .depthwise_conv_exact, numerics.pooling.max_pool2d, .window_sum).

The kernel computes a padded output width (a whole number of 16-lane vectors) from an input
padded with the zero point ("pack_data"), so its pair loop has no bounds checks:

  parallel(n, channel) . [pad the channel's plane] . output rows / R . R rows (unrolled)
      . column vectors . [pairs or taps (unrolled)] . 16 columns (vector)

The padded plane of one channel is built right before its rows are computed (it stays in
L1); at stride 2 in two steps, padded rows ("pack_pad") then their de-interleaved columns
(numerics.windows.padded_planes); the accumulator rows stay local; the epilogue (crop, zero-point
term, requantize, clip) is inlined into one block computed per R output rows and vectorized
along them.

fbgemm's depthwise pairs, and the exact kernel's taps when they are int8
(numerics.depthwise.depthwise_conv_exact_int8), are one expression per output (no reduction
loop); on families with `depthwise_quads` their 16 columns are tensorized instead of vectorized
(schedules.depthwise_quads), and at stride 2 the intrinsic reads the padded rows ("pack_pad")
and de-interleaves them in its shuffles, so "pack_data" is inlined away.  MobileNetV2, the
model compiled both ways and timed interleaved (2-core Xeon, x86-amx): 4.28 -> 3.80 ms median.
"""

from __future__ import annotations

from tvm import s_tir

from . import depthwise_quads
from .common import extent, find_block, inline_epilogue, schedule_epilogue

LANES = 16
# Output rows per step (the first that divides the output height): their taps unrolled
# together share input row loads, and the epilogue's per-channel constants are loaded once per
# step.  MobileNetV2's depthwise kernels timed alone against one row per step (ad-hoc script,
# interleaved, 2 threads, quiet machine): 8-18 % faster at 56 and 28 output rows, within
# +-5 % elsewhere, 6 % in all; the whole model 1-2 % faster (interleaved A/B, two runs).
ROWS = (4, 2, 1)


WINDOW_BLOCKS = ("dw_conv2d_pairs", "dw_conv2d_taps", "pool_max_taps", "pool_sum_taps")
# block annotations of numerics.depthwise.depthwise_conv_fbgemm and .depthwise_conv_exact_int8:
# their sums can run on schedules.depthwise_quads
QUAD_MARKS = {"fbgemm": "fbgemm_depthwise", "exact": "exact_depthwise"}


def window_kind(sch: s_tir.Schedule) -> str | None:
    """The name of the window reduction this function holds (depthwise, pool), or None."""
    return next((n for n in WINDOW_BLOCKS if find_block(sch, n) is not None), None)


def schedule_depthwise(sch: s_tir.Schedule, family=None) -> None:
    """Vectorize a window reduction (depthwise pairs, max-pool taps) along the output width,
    a step of ROWS output rows at a time, and fuse the epilogue per step.  A depthwise
    kernel's sums marked for it (QUAD_MARKS) are tensorized instead where the family has the
    quad intrinsic (schedules.depthwise_quads)."""
    name = window_kind(sch)
    block = sch.get_sblock(name)
    b, c, i, j, *reduction = sch.get_loops(block)
    quads = _quad_intrinsic(sch, block, family)
    step = next(r for r in ROWS if extent(sch, i) % r == 0)
    io, ii = sch.split(i, [None, step])
    jo, ji = sch.split(j, [None, LANES])
    sch.reorder(b, c, io, ii, jo, *reduction, ji)
    epilogue = inline_epilogue(sch, block)
    sch.set_scope(block, 0, "local")
    outer = sch.fuse(b, c)
    if epilogue is not None:
        schedule_epilogue(sch, epilogue, io)
    pack = sch.get_sblock("pack_data")
    rows = find_block(sch, "pack_pad")  # stride > 1: padded rows, then de-interleaved
    if rows is not None and quads is not None:  # the intrinsic's shuffles de-interleave
        sch.compute_inline(pack)
        sch.compute_at(rows, outer, preserve_unit_loops=True)
    else:
        sch.compute_at(pack, outer, preserve_unit_loops=True)  # one channel's plane, in L1
        if rows is not None:
            sch.compute_at(rows, outer, preserve_unit_loops=True)
            *_, phase, zq = sch.get_loops(pack)
            sch.reorder(zq, phase)  # both phases in one loop body: an interleaved load group
            sch.unroll(phase)
    sch.parallel(outer)
    sch.unroll(ii)
    if quads is not None:
        sch.tensorize(ji, quads)
        return
    sch.vectorize(ji)  # before decompose_reduction: afterwards the update block has no init
    if reduction:
        sch.decompose_reduction(block, reduction[0])
        init = sch.get_sblock(f"{name}_init")
        sch.vectorize(sch.get_loops(init)[-1])
    for loop in reduction:
        sch.unroll(loop)


def _quad_intrinsic(sch: s_tir.Schedule, block, family) -> str | None:
    """The quad intrinsic for a depthwise kernel's sums when `family` has it, else None.  The
    kernels mark their block with (kh, kw, column stride) under the mode's key; the mark is
    removed here (a tensorized block must equal the intrinsic's description)."""
    for mode, key in QUAD_MARKS.items():
        mark = sch.get(block).annotations.get(key)
        if mark is not None:
            break
    else:
        return None
    sch.unannotate(block, key)
    kh, kw, stride = (int(v) for v in mark)
    if family is None or not family.depthwise_quads or not depthwise_quads.fits(kw, stride):
        return None
    return depthwise_quads.quad_intrinsic(mode, kh, kw, stride)
