"""Pass: float islands with a formula in the contract (GELU, SiLU, softmax, sigmoid) become
that formula as vectorizable kernels (numerics.float_islands); Relax's legalization would call
libm's erf / exp per element."""

from __future__ import annotations

import tvm

from ..numerics.contracts import Contract
from .machinery import run_rewrite


def lower_float_islands(mod: tvm.IRModule, contract: Contract) -> tvm.IRModule:
    """Rewrite every float32 call of an op in contract.kernels.float_islands into its formula."""
    formulas = contract.kernels.float_islands

    def rewrite(ctx, call):
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in formulas:
            return None
        if str(call.ty.dtype) != "float32":
            return None
        formula = formulas[call.op.name]
        # an op along one axis (softmax) passes it on
        axis = {} if call.attrs is None or "axis" not in dir(call.attrs) else {
            "axis": int(call.attrs.axis)}
        return ctx.call_te(formula, ctx.new(call.args[0]), primfunc_name_hint=formula.__name__,
                           **axis)

    return run_rewrite(mod, rewrite)
