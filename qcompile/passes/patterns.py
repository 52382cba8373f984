"""Patterns and helpers more than one pass matches with (not a pass).

The conv/linear epilogue as qdq_to_integer leaves it:

    multiply(astype(acc, f32), multiply(sx, sw)) [+ bias]          PRE_ACT (BIASED | EPILOGUE)

and what reading a relu / clip between two quantizes takes: its float bounds, its bounds in
output steps, and whether PyTorch's qnnpack engine would see the clamped tensor channels-last.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from ..numerics.constants import quantize_bound

ACC, SX, SW, BIAS = wildcard(), wildcard(), wildcard(), is_const()
EPILOGUE = is_op("relax.multiply")(is_op("relax.astype")(ACC), is_op("relax.multiply")(SX, SW))
BIASED = is_op("relax.add")(EPILOGUE, BIAS)
PRE_ACT = BIASED | EPILOGUE


def clip_range(clip_call) -> tuple[float, float]:
    """The float (min, max) of a relax.clip call."""
    return tuple(float(getattr(a.value, "value", a.value)) for a in clip_call.args[1:3])


def activation_bounds(act_call, scale: float, zero_point: int) -> tuple[int, int]:
    """[lo, hi] in output steps of a relu or clip applied before quantizing to (scale, zp)."""
    if act_call.op.name == "relax.nn.relu":
        return zero_point, 255
    lo, hi = clip_range(act_call)
    return quantize_bound(lo, scale, zero_point), quantize_bound(hi, scale, zero_point)


def qnnpack_channels_last(ctx, expr) -> bool:
    """Does PyTorch's qnnpack engine hold the 4-D tensor `expr` stands for in channels-last memory?

    Measured on PyTorch 2.13 (qnnpack engine): conv outputs are channels-last; clamp (relu6,
    hardtanh) outputs are contiguous; relu, add, mul, cat, pooling and the table ops keep their
    (first) input's memory format; model inputs and reshapes are contiguous.  Follows original
    bindings (ctx.value_of) through Q/DQ ops and kernels already lowered by earlier passes.
    """
    for _ in range(10000):
        e = ctx.value_of(expr)
        if not isinstance(e, relax.Call) or not isinstance(e.op, tvm.ir.Op):
            return False
        name = e.op.name
        if name == "relax.call_tir":
            hint = e.args[0].name_hint
            if hint.startswith("depthwise_conv"):
                return True
            if hint.startswith(("qclip", "quantize")):
                return False
            fields = e.args[1].fields
            if not fields:
                return False
            expr = fields[0]  # requantize: the accumulator; elementwise/pool kernels: input 0
            continue
        if name == "relax.nn.conv2d":
            return True
        if name in ("relax.clip", "relax.reshape", "relax.matmul", "relax.permute_dims"):
            return False
        if name == "relax.concat":
            parts = ctx.value_of(e.args[0])
            if not isinstance(parts, relax.Tuple) or not parts.fields:
                return False
            expr = parts.fields[0]
            continue
        if not e.args:
            return False
        expr = e.args[0]
    return False


def qnnpack_clamp_permutes(ctx, expr) -> bool:
    """Would a qnnpack clamp of `expr` permute its elements (channels-last, C > 1, H*W > 1)?"""
    shape = expr.ty.shape if hasattr(expr.ty, "shape") else None
    if shape is None or len(shape) != 4:
        return False
    _, c, h, w = (int(d) for d in shape)
    return c > 1 and h * w > 1 and qnnpack_channels_last(ctx, expr)
