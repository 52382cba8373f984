"""Pass (c) for contracts whose conv/linear epilogue is float arithmetic (no requantize rule, a
`FloatEpilogue`: the pt2e and inductor contracts): each epilogue becomes one float kernel.

PT2E graphs (X86InductorQuantizer in particular) fuse more into a conv than eager mode does:

    quantize(act2(add(act1(conv + b), dequantize(r))), so, zo)   conv + residual add (+ relu)
    quantize(act1(conv + b), so, zo)                             the usual conv (+ relu/hardtanh)
    act1(conv + b)                                               a float output (the classifier)

After qdq_to_integer, `conv + b` is `multiply(astype(acc), multiply(sx, sw)) [+ bias]`.  Each
shape above becomes one TE kernel (numerics.requantize.conv_epilogue_decomposed) reading the
int32 accumulator: the float value, activations and residual in the contract's arithmetic,
then the quantize.  The contract's scales may depend on what the accumulator comes from (a 1x1,
depthwise or other conv, a linear) and on whether the CPU has AMX (numerics.onednn).  Run in
place of fuse_requantize; such a contract keeps the bias float (canonicalize_bias does nothing).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ..errors import QCompileError
from ..numerics import onednn
from ..numerics.contracts import Contract
from .machinery import const_value, run_rewrite
from .patterns import ACC, BIAS, PRE_ACT, SW, SX, clip_range

_R, _SR, _ZR = wildcard(), wildcard(), wildcard()
DEQUANTIZED = is_op("relax.dequantize")(_R, _SR, _ZR)


def _hardswish_input(ctx, e):
    """x if `e` is the frontend's float hardswish, (x * clip(x + 3, 0, 6)) / 6, else None."""
    if e.op.name != "relax.divide":
        return None
    product = ctx.value_of(e.args[0])
    if not (isinstance(product, relax.Call) and product.op.name == "relax.multiply"):
        return None
    clip = ctx.value_of(product.args[1])
    if not (isinstance(clip, relax.Call) and clip.op.name == "relax.clip"
            and clip_range(clip) == (0.0, 6.0)):
        return None
    plus3 = ctx.value_of(clip.args[0])
    if not (isinstance(plus3, relax.Call) and plus3.op.name == "relax.add"
            and ctx.value_of(plus3.args[0]).same_as(ctx.value_of(product.args[0]))
            and float(const_value(plus3.args[1], ctx)) == 3.0
            and float(const_value(e.args[1], ctx)) == 6.0):
        return None
    return product.args[0]


def _act_of(ctx, expr, acts):
    """(activation, its input) if `expr` is one of `acts` (relu, clip, hardswish, silu), else
    (None, expr)."""
    e = ctx.value_of(expr)
    if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
        if e.op.name == "relax.nn.relu" and "relu" in acts:
            return ("relu", None), e.args[0]
        if e.op.name == "relax.clip" and "clip" in acts:
            return ("clip", clip_range(e)), e.args[0]
        if e.op.name == "relax.nn.silu" and "silu" in acts and str(e.ty.dtype) == "float32":
            return ("silu", None), e.args[0]
        x = _hardswish_input(ctx, e) if "hardswish" in acts else None
        if x is not None:
            return ("hardswish", None), x
    return None, expr


def _match_epilogue(ctx, expr, acts):
    """The pieces of act2(add(act1(PRE_ACT), dequantize(r))) or act1(PRE_ACT), or None."""
    act2, inner = _act_of(ctx, expr, acts)
    e = ctx.value_of(inner)
    residual = None
    if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.add":
        for conv_side, other in ((e.args[0], e.args[1]), (e.args[1], e.args[0])):
            m = ctx.match(DEQUANTIZED, other)
            if m is not None and ctx.match(PRE_ACT, _act_of(ctx, conv_side, acts)[1]) is not None:
                residual, inner = m, conv_side
                break
    if residual is None:
        act1, act2 = act2, None
        core = inner
    else:
        act1, core = _act_of(ctx, inner, acts)
    m = ctx.match(PRE_ACT, core)
    if m is None or m[ACC].ty.dtype != "int32":
        return None
    return m, act1, residual, act2


def _accumulator_kind(ctx, acc) -> str:
    """What the int32 accumulator comes from (numerics.onednn's kinds), through the zero-point
    correction qdq_to_integer subtracts."""
    e = ctx.value_of(acc)
    while isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and \
            e.op.name == "relax.subtract":
        e = ctx.value_of(e.args[0])
    if not isinstance(e, relax.Call) or not isinstance(e.op, tvm.ir.Op):
        raise QCompileError(f"a conv/linear epilogue reads an unexpected accumulator: {e}")
    if e.op.name == "relax.matmul":
        return onednn.LINEAR
    if e.op.name == "relax.call_tir" and e.args[0].name_hint.startswith("depthwise_conv"):
        return onednn.DEPTHWISE
    if e.op.name != "relax.nn.conv2d":
        raise QCompileError(f"a conv/linear epilogue reads an accumulator from {e.op.name}")
    weight = [int(d) for d in e.args[1].ty.shape]  # OIHW
    groups = int(e.attrs.groups)
    if groups > 1 and weight[1] == 1:
        return onednn.DEPTHWISE
    return onednn.CONV_1X1 if weight[2:] == [1, 1] else onednn.CONV


def _kernel(ctx, pieces, out, contract: Contract, amx: bool):
    m, act1, residual, act2 = pieces
    acc = m[ACC]
    sx = np.float32(const_value(m[SX], ctx))
    sw = np.atleast_1d(const_value(m[SW], ctx)).reshape(-1).astype(np.float32)
    scales = contract.epilogue.scales(sx, sw, _accumulator_kind(ctx, acc), amx)
    # with the dtype given: relax.const makes a float64 array float32 otherwise
    args = [ctx.new(acc), relax.const(scales.channel, str(scales.channel.dtype))]
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

    def fn(acc_t, channel_t, *rest):
        rest = list(rest)
        bias_t = rest.pop(0) if has_bias else None
        res = (rest.pop(0), *r_args) if r_args is not None else None
        return contract.epilogue.kernel(acc_t, channel_t, scales.first, bias_t, axis, act1, res,
                                        act2, out)

    name = "requantize" if out is not None else "dequantize_acc"
    return ctx.call_te(fn, *args, primfunc_name_hint=name)


def fuse_epilogue_pt2e(mod: tvm.IRModule, contract: Contract, amx: bool = False) -> tvm.IRModule:
    """Quantized epilogues first, then the float ones nothing quantizes (model outputs).
    `amx`: the target CPU has AMX (the inductor contract's scales depend on it)."""

    def quantized(ctx, call):
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.quantize":
            return None
        if ctx.users(call.args[0]) > 1:
            # the float value has other readers: computed once in float (below), then quantized
            # on its own, as Inductor does (its quantize kernel rounds before adding the zero
            # point, oneDNN's output stage after)
            return None
        pieces = _match_epilogue(ctx, call.args[0], contract.epilogue.acts)
        if pieces is None:
            return None
        out = (float(const_value(call.args[1], ctx)), int(const_value(call.args[2], ctx)))
        return _kernel(ctx, pieces, out, contract, amx)

    def floating(ctx, call):
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in (
                "relax.add", "relax.multiply", "relax.nn.relu", "relax.clip", "relax.divide",
                "relax.nn.silu"):
            return None
        pieces = _match_epilogue(ctx, call, contract.epilogue.acts)
        return None if pieces is None else _kernel(ctx, pieces, None, contract, amx)

    return run_rewrite(run_rewrite(mod, quantized), floating)
