"""A default CPU schedule for untuned fused PrimFuncs: parallel outer loops, vector inner ones.

The Relax CPU pipeline leaves fused PrimFuncs unscheduled (one thread, scalar).  This pass gives
each block of each PrimFunc a parallel outer spatial loop, so untuned models use every core.
"""

from __future__ import annotations

import tvm
from tvm import s_tir


def _schedule(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    sch = s_tir.Schedule(func)
    try:
        root = sch.get_sblock("root")
    except Exception:  # noqa: BLE001 - no root block: leave the function as it is
        return func
    for block in sch.get_child_blocks(root):
        loops = sch.get_loops(block)
        iter_vars = sch.get(block).iter_vars
        spatial = []
        for loop, iv in zip(loops, iter_vars):
            if iv.iter_type != tvm.tirx.IterVar.DataPar or len(spatial) == 2:
                break
            spatial.append(loop)
        if not spatial:
            continue
        try:
            sch.parallel(sch.fuse(*spatial) if len(spatial) > 1 else spatial[0])
        except Exception:  # noqa: BLE001 - a loop TVM refuses to parallelize stays serial
            continue
    return sch.mod["main"]


@tvm.transform.module_pass(opt_level=0, name="qcompile.DefaultCPUSchedule")
def default_cpu_schedule(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Parallelize every unscheduled PrimFunc in the module."""
    updates = {}
    for gvar, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and not func.attrs.get("tir.is_scheduled", False):
            updates[gvar] = _schedule(func)
    for gvar, func in updates.items():
        mod[gvar] = func
    return mod
