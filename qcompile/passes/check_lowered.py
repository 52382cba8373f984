"""Pass: fail loudly if a quantized op of the Q/DQ form survived lowering (float islands pass)."""

from __future__ import annotations

import tvm
from tvm import relax

from ..errors import QCompileError


def _reads_int8_constant(call, var2val) -> bool:
    """Does a float conv / matmul read an int8 constant (through bindings, transposes, casts
    and kernel calls)?  Then it is a quantized conv / linear no pass lowered; with float
    weights (or none) it is a float island, an op the quantizer left in float."""
    todo, seen = list(call.args), 0
    while todo and seen < 64:
        e, seen = todo.pop(), seen + 1
        while isinstance(e, relax.Var) and e in var2val:
            e = var2val[e]
        if isinstance(e, tvm.ir.expr.Constant) and str(getattr(e.ty, "dtype", "")) == "int8":
            return True
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name in (
                "relax.permute_dims", "relax.call_tir", "relax.astype"):
            todo.extend(e.args[1].fields if e.op.name == "relax.call_tir" else e.args[:1])
    return False


def check_lowered(mod: tvm.IRModule) -> None:
    """Raise QCompileError naming each Q/DQ op no pass lowered, and each float conv or matmul
    of int8 weights (a quantized conv/linear that was not turned into integer math).  Other
    float ops are float islands (LayerNorm, softmax, GELU, attention, convs and linears the
    quantizer left in float...) and stay."""
    leftovers = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            name = expr.op.name
            dtype = getattr(expr.ty, "dtype", None)
            is_float = dtype is not None and "float" in str(dtype)
            if name in ("relax.quantize", "relax.dequantize") or (
                    is_float and name in ("relax.nn.conv2d", "relax.matmul")
                    and _reads_int8_constant(expr, var2val)):
                leftovers.append(name)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            var2val = relax.analysis.get_var2val(func)
            relax.analysis.post_order_visit(func, visit)
    if leftovers:
        raise QCompileError(
            "these ops could not be lowered to integer kernels: "
            f"{', '.join(sorted(set(leftovers)))}. The quantized pattern around them is not one "
            "qcompile supports yet (e.g. a float op between dequantize and quantize).")
