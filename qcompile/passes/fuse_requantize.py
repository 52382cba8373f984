"""Pass (c): requantize and the activation after it become one kernel with one clip.

    quantize(act(multiply(astype(acc, f32), multiply(sx, sw)) [+ bias]), so, zo)
      ==>  requantize(acc) clipped to [lo, hi]            (one TE kernel, the contract's math)

`act` is relu, clip (relu6, hardtanh) or nothing; a relu/clip applied afterwards on the
quantized result with the same qparams (an unfused ReLU6 module) is folded into the same clip --
except under the qnnpack contract when that clip would see a channels-last conv output: PyTorch's
qnnpack clamp then permutes the data (see `qnnpack_channels_last`), and lower_qdq_ops does that.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from ..numerics import kernels
from ..numerics.constants import quantize_bound, requantize
from .rewrite import const_value, run_rewrite

R = relax.op

ACC, SX, SW, BIAS, SO, ZO = wildcard(), wildcard(), wildcard(), is_const(), wildcard(), is_const()
EPILOGUE = is_op("relax.multiply")(is_op("relax.astype")(ACC), is_op("relax.multiply")(SX, SW))
BIASED = is_op("relax.add")(EPILOGUE, BIAS)
PRE_ACT = BIASED | EPILOGUE
ACT = is_op("relax.nn.relu")(PRE_ACT) | is_op("relax.clip")(PRE_ACT, wildcard(), wildcard())
INNER = is_op("relax.quantize")(ACT | PRE_ACT, SO, ZO)

S2, Z2, S3, Z3 = wildcard(), is_const(), wildcard(), is_const()
_DQ = is_op("relax.dequantize")(INNER, S2, Z2)
OUTER = is_op("relax.quantize")(
    is_op("relax.nn.relu")(_DQ) | is_op("relax.clip")(_DQ, wildcard(), wildcard()), S3, Z3)


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


def activation_bounds(act_call, scale: float, zero_point: int) -> tuple[int, int]:
    """[lo, hi] in output steps of a relu or clip applied before quantizing to (scale, zp)."""
    if act_call.op.name == "relax.nn.relu":
        return zero_point, 255
    lo, hi = clip_range(act_call)
    return quantize_bound(lo, scale, zero_point), quantize_bound(hi, scale, zero_point)


def clip_range(clip_call) -> tuple[float, float]:
    """The float (min, max) of a relax.clip call."""
    return tuple(float(getattr(a.value, "value", a.value)) for a in clip_call.args[1:3])


def _find_act(ctx, quantize_call):
    inner = ctx.value_of(quantize_call.args[0])
    if isinstance(inner, relax.Call) and inner.op.name in ("relax.nn.relu", "relax.clip"):
        return inner
    return None


def _requantize_call(ctx, m, inner_quantize, contract, extra_bounds=None):
    acc = m[ACC]
    if acc.ty.dtype != "int32":
        return None
    so = float(const_value(m[SO], ctx))
    zo = int(const_value(m[ZO]))
    lo, hi = 0, 255
    act = _find_act(ctx, inner_quantize)
    if act is not None:
        lo, hi = activation_bounds(act, so, zo)
    if extra_bounds is not None:
        lo, hi = max(lo, extra_bounds[0]), min(hi, extra_bounds[1])
    sx = float(const_value(m[SX], ctx))
    sw = np.atleast_1d(const_value(m[SW], ctx)).reshape(-1)
    bias = const_value(m[BIAS]).reshape(-1) if BIAS in m else None
    rq = requantize(contract, sx, sw, so, zo, bias)
    ndim = len(acc.ty.shape)
    axis = 1 if ndim == 4 else ndim - 1
    names, arrays = _constant_arrays(rq)

    def kernel(acc_te, *consts):
        return kernels.requantize(acc_te, rq, dict(zip(names, consts)), lo, hi, axis)

    return ctx.call_te(kernel, ctx.new(acc), *[relax.const(a) for a in arrays],
                       primfunc_name_hint="requantize")


def _constant_arrays(rq):
    names, arrays = ["mult"], [np.atleast_1d(rq.mult)]
    if rq.bias is not None:
        names.append("bias")
        arrays.append(np.atleast_1d(rq.bias))
    if rq.inv_ats is not None:
        names.append("inv_ats")
        arrays.append(np.atleast_1d(rq.inv_ats))
    if rq.shift is not None:
        names.append("shift")
        arrays.append(np.atleast_1d(rq.shift))
    return names, arrays


def fuse_requantize(mod: tvm.IRModule, contract: str) -> tvm.IRModule:
    """Replace each quantize of a conv/linear epilogue with one requantize+clip kernel."""

    def rewrite(ctx, call):
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.quantize":
            return None
        m = ctx.match(OUTER, call)
        if m is not None:
            s2, z2 = float(const_value(m[S2], ctx)), int(const_value(m[Z2]))
            s3, z3 = float(const_value(m[S3], ctx)), int(const_value(m[Z3]))
            so, zo = float(const_value(m[SO], ctx)), int(const_value(m[ZO]))
            outer_act = ctx.value_of(call.args[0])
            permutes = (contract == "qnnpack" and outer_act.op.name == "relax.clip"
                        and qnnpack_clamp_permutes(ctx, outer_act.args[0]))
            if (s2, z2) == (s3, z3) == (so, zo) and not permutes:
                bounds = activation_bounds(outer_act, so, zo)
                inner_q = ctx.value_of(ctx.value_of(outer_act.args[0]).args[0])
                out = _requantize_call(ctx, m, inner_q, contract, bounds)
                if out is not None:
                    return out
        m = ctx.match(INNER, call)
        if m is None:
            return None
        return _requantize_call(ctx, m, call, contract)

    return run_rewrite(mod, rewrite)
