"""Pass: fail loudly if any float-semantics op of the Q/DQ form survived lowering."""

from __future__ import annotations

import tvm
from tvm import relax

from ..errors import QCompileError

_FLOAT_ONLY = {"relax.quantize", "relax.dequantize", "relax.nn.conv2d", "relax.matmul",
               "relax.sigmoid", "relax.divide", "relax.nn.avg_pool2d",
               "relax.nn.adaptive_avg_pool2d"}


def check_lowered(mod: tvm.IRModule) -> None:
    """Raise QCompileError naming each Q/DQ or float op that no pass lowered."""
    leftovers = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            name = expr.op.name
            dtype = getattr(expr.ty, "dtype", None)
            if name in ("relax.quantize", "relax.dequantize") or (
                    name in _FLOAT_ONLY and dtype == "float32"):
                leftovers.append(name)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    if leftovers:
        raise QCompileError(
            "these ops could not be lowered to integer kernels: "
            f"{', '.join(sorted(set(leftovers)))}. The quantized pattern around them is not one "
            "qcompile supports yet (e.g. a float op between dequantize and quantize).")
