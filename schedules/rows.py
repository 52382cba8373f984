"""Default schedule of row-wise float kernels: softmax, LayerNorm, anything that reduces each
row of a tensor along its last axis and then writes that row (numerics.float_islands.softmax,
Relax's layer_norm).

Scheduled block by block (default_cpu's generic schedule), every block is a pass over the whole
tensor and its intermediates (softmax's exponentials) are whole tensors: BERT-base's attention
softmax at batch 8 reads or writes 6 MB six times.  Here each row is computed start to end
before the next:

  parallel(rows) . [row max in 16 lanes (vector), then those lanes] . exp (vector)
      . [sum in 16 lanes, then those lanes] . normalized row (vector)

so a row's intermediates stay in L1.  The row reductions keep their 16-lane order (rfactor
into lanes, as default_cpu._sum_in_lanes does): the floats do not change.  Softmax over
12288 x 128 (BERT-base's attention rows at batch 8) took 0.66-0.81 ms block by block, 0.34 a
row at a time; a 1024 x 768 LayerNorm 0.22-0.27 and 0.10 (ad-hoc script, each kernel built
and timed alone, two runs).
"""

from __future__ import annotations

import tvm
from tvm import s_tir

from .common import is_elementwise

# A row reduction this long or longer sums in LANES vector lanes, here and in default_cpu's
# block-by-block schedule (_sum_in_lanes); shorter rows: lanes do not pay
LANES = 16
MIN_ROW = 64

_SPATIAL, _REDUCE = tvm.tirx.IterVar.DataPar, tvm.tirx.IterVar.CommReduce


def _extents(ivs) -> list[int] | None:
    out = []
    for iv in ivs:
        if not isinstance(iv.dom.extent, (int, tvm.tirx.IntImm)):
            return None
        out.append(int(iv.dom.extent))
    return out


def row_blocks(sch: s_tir.Schedule):
    """The function's blocks when it is a row kernel, else None: every block starts with the
    same row axes as the last one (all of its axes but the last); after them a reduction has
    one reduce axis (a whole number of 16 lanes, at least MIN_ROW long), an elementwise block
    at most one axis; the last block is elementwise and there is a reduction."""
    try:
        blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    except Exception:  # noqa: BLE001 - no root block (an extern call): not a row kernel
        return None
    if len(blocks) < 2:
        return None
    last = sch.get(blocks[-1]).iter_vars
    rows = _extents(last[:-1])
    if not rows or not is_elementwise(sch, blocks[-1]):
        return None
    reductions = 0
    for block in blocks:
        ivs = sch.get(block).iter_vars
        extents = _extents(ivs)
        if (extents is None or len(sch.get_loops(block)) != len(ivs)
                or extents[:len(rows)] != rows
                or any(iv.iter_type != _SPATIAL for iv in ivs[:len(rows)])):
            return None
        tail = ivs[len(rows):]
        if len(tail) > 1:
            return None
        if tail and tail[0].iter_type == _REDUCE:
            if extents[-1] % LANES or extents[-1] < MIN_ROW:
                return None
            reductions += 1
        elif tail and tail[0].iter_type != _SPATIAL:
            return None
    return blocks if reductions else None


def in_lanes(sch: s_tir.Schedule, block):
    """Sum (or max) a row reduction along its last loop as LANES partial results, then those
    (rfactor); returns the block of the partial results."""
    _, lane = sch.split(sch.get_loops(block)[-1], [None, LANES])
    return sch.rfactor(lane, len(sch.get(block).iter_vars) - 1)


def schedule_rows(sch: s_tir.Schedule, blocks) -> None:
    """Compute each row start to end (see the module docstring)."""
    lanes = []
    for block in blocks:
        if sch.get(block).iter_vars[-1].iter_type == _REDUCE:
            lanes.append(in_lanes(sch, block))
    children = list(sch.get_child_blocks(sch.get_sblock("root")))
    last = children[-1]
    loops = sch.get_loops(last)
    row = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    sch.parallel(row)
    for block in reversed(children[:-1]):
        sch.compute_at(block, row, preserve_unit_loops=True)
    lane_blocks = {sch.get(b).name_hint for b in lanes}
    for block in children:
        _vectorize_row_block(sch, block, sch.get(block).name_hint in lane_blocks)


def _vectorize_row_block(sch, block, is_lanes: bool) -> None:
    loops = sch.get_loops(block)[1:]  # under the row loop
    if is_lanes:
        # [lane, unit row loops..., steps]: steps outside, the 16 lanes one vector
        lane, steps = loops[0], loops[-1]
        sch.reorder(steps, lane)
        sch.vectorize(lane)  # before decompose: vectorize needs the reduction whole
        init = sch.decompose_reduction(block, steps)
        sch.vectorize(sch.get_loops(init)[-1])
        return
    if any(iv.iter_type == _REDUCE for iv in sch.get(block).iter_vars) or not loops:
        return  # the sum of a row's 16 lanes: 16 scalar steps
    inner = loops[-1]
    n = sch.get(inner).extent
    if int(n) % LANES == 0 and int(n) > LANES:
        sch.vectorize(sch.split(inner, [None, LANES])[1])
    elif int(n) == LANES:
        sch.vectorize(inner)
