"""Pass: float GELU and SiLU become PyTorch's formulas as vectorizable kernels
(numerics.float_islands); Relax's legalization would call libm's erf / exp per element."""

from __future__ import annotations

import tvm

from ..numerics import float_islands
from .machinery import run_rewrite

_FORMULAS = {"relax.nn.gelu": float_islands.gelu, "relax.nn.silu": float_islands.silu}


def _rewrite(ctx, call):
    if not isinstance(call.op, tvm.ir.Op) or call.op.name not in _FORMULAS:
        return None
    if str(call.ty.dtype) != "float32":
        return None
    formula = _FORMULAS[call.op.name]
    return ctx.call_te(formula, ctx.new(call.args[0]), primfunc_name_hint=formula.__name__)


def lower_float_islands(mod: tvm.IRModule) -> tvm.IRModule:
    """Rewrite every float32 relax.nn.gelu / relax.nn.silu into numerics.float_islands."""
    return run_rewrite(mod, _rewrite)
