"""Pass (c) for contracts whose epilogue is the PT2E program's float arithmetic (no requantize
rule: the pt2e contract): each conv/linear epilogue becomes one float kernel.

PT2E graphs (X86InductorQuantizer in particular) fuse more into a conv than eager mode does:

    quantize(act2(add(act1(conv + b), dequantize(r))), so, zo)   conv + residual add (+ relu)
    quantize(act1(conv + b), so, zo)                             the usual conv (+ relu/hardtanh)
    act1(conv + b)                                               a float output (the classifier)

After qdq_to_integer, `conv + b` is `multiply(astype(acc), multiply(sx, sw)) [+ bias]`.  Each
shape above becomes one TE kernel (numerics.requantize.conv_epilogue_decomposed) reading the
int32 accumulator: the float value, activations and residual as PyTorch's float ops compute
them, then the quantize.  Run in place of fuse_requantize; such a contract keeps the bias float
(canonicalize_bias does nothing).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ..numerics.requantize import conv_epilogue_decomposed
from .machinery import const_value, run_rewrite
from .patterns import ACC, BIAS, PRE_ACT, SW, SX, clip_range

_R, _SR, _ZR = wildcard(), wildcard(), wildcard()
DEQUANTIZED = is_op("relax.dequantize")(_R, _SR, _ZR)


def _act_of(ctx, expr):
    """(activation, its input) if `expr` is a relu or clip, else (None, expr)."""
    e = ctx.value_of(expr)
    if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
        if e.op.name == "relax.nn.relu":
            return ("relu", None), e.args[0]
        if e.op.name == "relax.clip":
            return ("clip", clip_range(e)), e.args[0]
    return None, expr


def _match_epilogue(ctx, expr):
    """The pieces of act2(add(act1(PRE_ACT), dequantize(r))) or act1(PRE_ACT), or None."""
    act2, inner = _act_of(ctx, expr)
    e = ctx.value_of(inner)
    residual = None
    if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.add":
        for conv_side, other in ((e.args[0], e.args[1]), (e.args[1], e.args[0])):
            m = ctx.match(DEQUANTIZED, other)
            if m is not None and ctx.match(PRE_ACT, _act_of(ctx, conv_side)[1]) is not None:
                residual, inner = m, conv_side
                break
    if residual is None:
        act1, act2 = act2, None
        core = inner
    else:
        act1, core = _act_of(ctx, inner)
    m = ctx.match(PRE_ACT, core)
    if m is None or m[ACC].ty.dtype != "int32":
        return None
    return m, act1, residual, act2


def _kernel(ctx, pieces, out):
    m, act1, residual, act2 = pieces
    acc = m[ACC]
    sx = np.float32(const_value(m[SX], ctx))
    sw = np.atleast_1d(const_value(m[SW], ctx)).reshape(-1).astype(np.float32)
    # double(sx) * double(sw): exact (two float32 significands fit in a double's)
    ats = np.float64(sx) * sw.astype(np.float64)
    # with the dtype given: relax.const makes a float64 array float32 otherwise
    args = [ctx.new(acc), relax.const(ats, "float64")]
    bias = const_value(m[BIAS]).reshape(-1).astype(np.float32) if BIAS in m else None
    if bias is not None:
        args.append(relax.const(bias))
    r_args = None
    if residual is not None:
        r_args = (float(const_value(residual[_SR], ctx)), int(const_value(residual[_ZR], ctx)))
        args.append(ctx.new(residual[_R]))
    ndim = len(acc.ty.shape)
    axis = 1 if ndim == 4 else ndim - 1
    has_bias = bias is not None

    def fn(acc_t, ats_t, *rest):
        rest = list(rest)
        bias_t = rest.pop(0) if has_bias else None
        res = (rest.pop(0), *r_args) if r_args is not None else None
        return conv_epilogue_decomposed(acc_t, ats_t, bias_t, axis, act1, res, act2, out)

    name = "requantize" if out is not None else "dequantize_acc"
    return ctx.call_te(fn, *args, primfunc_name_hint=name)


def fuse_epilogue_pt2e(mod: tvm.IRModule) -> tvm.IRModule:
    """Quantized epilogues first, then the float ones nothing quantizes (model outputs)."""

    def quantized(ctx, call):
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.quantize":
            return None
        pieces = _match_epilogue(ctx, call.args[0])
        if pieces is None:
            return None
        out = (float(const_value(call.args[1], ctx)), int(const_value(call.args[2], ctx)))
        return _kernel(ctx, pieces, out)

    def floating(ctx, call):
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in (
                "relax.add", "relax.multiply", "relax.nn.relu", "relax.clip"):
            return None
        pieces = _match_epilogue(ctx, call)
        return None if pieces is None else _kernel(ctx, pieces, None)

    return run_rewrite(run_rewrite(mod, quantized), floating)
