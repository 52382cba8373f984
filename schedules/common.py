"""What the schedules share: finding blocks, fusing an epilogue per tile, PrimFunc passes.

Every scheduling module (packed, depthwise, amx, default_cpu) and the passes that read the
kernels' block names use these; none of them is private to one schedule.
"""

from __future__ import annotations

import tvm
from tvm import s_tir


def extent(sch: s_tir.Schedule, loop) -> int:
    """The constant extent of a loop."""
    return int(sch.get(loop).extent)


def find_block(sch: s_tir.Schedule, name: str):
    """The block of that name in the scheduled function, or None when it has none."""
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001 - no block of that name
        return None


def reads_blocked(sch: s_tir.Schedule, block) -> bool:
    """True when the block reads a channel-blocked [N, C/B, H, W, B] activation
    (qcompile.passes.block_activations) instead of NCHW."""
    return any(len(r.source.shape) == 5 for r in sch.get(block).reads)


# Epilogue blocks computed into a tile buffer of their own instead of inlined: qnnpack's
# fixed-point add reads its sum three times (rounding), so inlining a chain of them (MobileNetV2's
# residuals) grew the expression 3x per add: one kernel took 460 s to build.
MATERIALIZED = ("qadd_qnnpack",)


def inline_epilogue(sch: s_tir.Schedule, block):
    """Inline the elementwise blocks after a reduction; return the blocks that stay (the
    output writer last, and any MATERIALIZED ones before it), or None when the function has
    another shape (several outputs).

    What remains reads the accumulator tile (through the inlined unpack/requantize/clip/add
    chain) and writes the function's output."""
    root = sch.get_sblock("root")
    keep = {sch.get(block).name_hint, "pack_data", "pack_pad"}
    for b in sch.get_child_blocks(root):
        name = sch.get(b).name_hint
        if name in keep or name.startswith(MATERIALIZED):
            continue
        try:
            sch.compute_inline(b)
        except Exception:  # noqa: BLE001 - the output writer (or a reduction) stays a block
            continue
    rest = [b for b in sch.get_child_blocks(root) if sch.get(b).name_hint not in keep]
    # the last block writes the output (a MATERIALIZED one may: an add ending the kernel);
    # every block before it must be a MATERIALIZED one, else there are several outputs
    if not rest or any(not sch.get(b).name_hint.startswith(MATERIALIZED) for b in rest[:-1]):
        return None
    return rest


def schedule_epilogue(sch: s_tir.Schedule, blocks, tile_loop, lanes: int | None = None):
    """Compute the epilogue blocks per tile, in order, each vectorized along its inner loop
    (`lanes` at a time when given, else the whole loop)."""
    for block in blocks:
        sch.reverse_compute_at(block, tile_loop, preserve_unit_loops=True)
        inner = sch.get_loops(block)[-1]
        if lanes is not None:
            inner = sch.split(inner, [None, lanes])[1]
        try:
            sch.vectorize(inner)
        except Exception:  # noqa: BLE001 - not vectorizable: stays scalar, still correct
            pass


def is_elementwise(sch: s_tir.Schedule, block) -> bool:
    """True when every axis of the block is spatial (no reduction)."""
    return all(iv.iter_type == tvm.tirx.IterVar.DataPar for iv in sch.get(block).iter_vars)


def is_scheduled(func: tvm.tirx.PrimFunc) -> bool:
    """True when a pass (a tuning database, ours) has scheduled the PrimFunc already."""
    return func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False))


def primfunc_pass(name: str, rewrite) -> tvm.transform.Pass:
    """A module pass that replaces each PrimFunc by `rewrite(gvar, func)`, where that returns
    a function (None: the PrimFunc stays as it is)."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates = {}
        for gvar, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc):
                new = rewrite(gvar, func)
                if new is not None:
                    updates[gvar] = new
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    return _pass
