"""Pass (c): requantize and the activation after it become one kernel with one clip.

    quantize(act(multiply(astype(acc, f32), multiply(sx, sw)) [+ bias]), so, zo)
      ==>  requantize(acc) clipped to [lo, hi]            (one TE kernel, the contract's math)

`act` is relu, clip (relu6, hardtanh) or nothing; a relu/clip applied afterwards on the
quantized result with the same qparams (an unfused ReLU6 module) is folded into the same clip --
except where the contract's clamp permutes a channels-last conv output (qnnpack: see
patterns.qnnpack_channels_last), which lower_qdq_ops then does.  The arithmetic is the
contract's requantize rule (numerics.requantize).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from ..numerics import requantize
from ..numerics.contracts import Contract
from .machinery import const_value, run_rewrite
from .patterns import ACC, BIAS, PRE_ACT, SW, SX, activation_bounds, qnnpack_clamp_permutes

SO, ZO = wildcard(), is_const()
ACT = is_op("relax.nn.relu")(PRE_ACT) | is_op("relax.clip")(PRE_ACT, wildcard(), wildcard())
INNER = is_op("relax.quantize")(ACT | PRE_ACT, SO, ZO)

S2, Z2, S3, Z3 = wildcard(), is_const(), wildcard(), is_const()
_DQ = is_op("relax.dequantize")(INNER, S2, Z2)
OUTER = is_op("relax.quantize")(
    is_op("relax.nn.relu")(_DQ) | is_op("relax.clip")(_DQ, wildcard(), wildcard()), S3, Z3)


def _find_act(ctx, quantize_call):
    inner = ctx.value_of(quantize_call.args[0])
    if isinstance(inner, relax.Call) and inner.op.name in ("relax.nn.relu", "relax.clip"):
        return inner
    return None


def _requantize_call(ctx, m, inner_quantize, contract: Contract, extra_bounds=None):
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
    rq = contract.requantize(sx, sw, so, zo, bias)
    ndim = len(acc.ty.shape)
    axis = 1 if ndim == 4 else ndim - 1
    names, arrays = rq.arrays()

    def kernel(acc_te, *consts):
        return requantize.requantize(acc_te, rq, dict(zip(names, consts)), lo, hi, axis)

    return ctx.call_te(kernel, ctx.new(acc), *[relax.const(a) for a in arrays],
                       primfunc_name_hint="requantize")


def fuse_requantize(mod: tvm.IRModule, contract: Contract) -> tvm.IRModule:
    """Replace each quantize of a conv/linear epilogue with one requantize+clip kernel."""
    permuting_clamp = contract.kernels.clamp_permutes_channels_last

    def rewrite(ctx, call):
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.quantize":
            return None
        m = ctx.match(OUTER, call)
        if m is not None:
            s2, z2 = float(const_value(m[S2], ctx)), int(const_value(m[Z2]))
            s3, z3 = float(const_value(m[S3], ctx)), int(const_value(m[Z3]))
            so, zo = float(const_value(m[SO], ctx)), int(const_value(m[ZO]))
            outer_act = ctx.value_of(call.args[0])
            permutes = (permuting_clamp and outer_act.op.name == "relax.clip"
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
