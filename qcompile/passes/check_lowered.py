"""Pass: fail loudly if any float-semantics op of the Q/DQ form survived lowering."""

from __future__ import annotations

import tvm
from tvm import relax

from ..errors import QCompileError

# Float data movement is fine (e.g. a reshape of the model's dequantized output); any other
# float op means a Q/DQ region that no pass turned into an integer kernel.
_MOVEMENT = {"relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims",
             "relax.flatten", "relax.concat", "relax.split", "relax.strided_slice",
             "relax.take", "relax.call_tir", "relax.memory.view"}


def check_lowered(mod: tvm.IRModule) -> None:
    """Raise QCompileError naming each Q/DQ or float op that no pass lowered."""
    leftovers = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            name = expr.op.name
            dtype = getattr(expr.ty, "dtype", None)
            if name in ("relax.quantize", "relax.dequantize") or (
                    name not in _MOVEMENT and dtype is not None and "float" in str(dtype)):
                leftovers.append(name)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    if leftovers:
        raise QCompileError(
            "these ops could not be lowered to integer kernels: "
            f"{', '.join(sorted(set(leftovers)))}. The quantized pattern around them is not one "
            "qcompile supports yet (e.g. a float op between dequantize and quantize).")
