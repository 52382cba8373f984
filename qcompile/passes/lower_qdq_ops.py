"""Pass: the remaining Q/DQ regions (elementwise, unary, pooling, cat) become 8-bit kernels.

Each region `quantize(f(dequantize(x), ...), so, zo)` is replaced by the kernel the numerics
contract prescribes for `f`; then any quantize/dequantize left at the model's boundary becomes
the contract's quantize/dequantize kernel.  Run after fuse_requantize.

Under the qnnpack contract, add / add_relu, avg_pool2d (without ceil_mode) and adaptive average
pooling use QNNPACK's own kernels, and a clamp (relu6, hardtanh) of a channels-last tensor
permutes it as PyTorch's qnnpack clamp does (numerics.kernels, *_qnnpack / channels_last_clamp).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax.dpl import is_const, is_op, wildcard

from ..numerics import kernels, pt2e
from ..numerics.tables import unary_tables
from ..errors import EngineLimitError, QCompileError
from .fuse_requantize import activation_bounds, clip_range, qnnpack_clamp_permutes
from .rewrite import const_value, run_rewrite

R = relax.op

A, SA, ZA, B, SB, ZB = wildcard(), wildcard(), is_const(), wildcard(), wildcard(), is_const()
DQA = is_op("relax.dequantize")(A, SA, ZA)
DQB = is_op("relax.dequantize")(B, SB, ZB)
SO, ZO = wildcard(), is_const()
_ADD, _MUL = is_op("relax.add")(DQA, DQB), is_op("relax.multiply")(DQA, DQB)
BINARY = is_op("relax.quantize")(_ADD | _MUL | is_op("relax.nn.relu")(_ADD | _MUL), SO, ZO)

_ACT = is_op("relax.nn.relu")(DQA) | is_op("relax.clip")(DQA, wildcard(), wildcard())
SAME_QPARAMS_ACT = is_op("relax.quantize")(_ACT, SO, ZO)

_plus3 = is_op("relax.clip")(is_op("relax.add")(DQA, is_const()), wildcard(), wildcard())
HARDSIGMOID = is_op("relax.divide")(_plus3, is_const())
HARDSWISH = is_op("relax.divide")(is_op("relax.multiply")(DQA, _plus3), is_const())
SIGMOID = is_op("relax.sigmoid")(DQA)
UNARY = is_op("relax.quantize")(HARDSWISH | HARDSIGMOID | SIGMOID, SO, ZO)

POOL = is_op("relax.quantize")(
    is_op("relax.nn.adaptive_avg_pool2d")(DQA) | is_op("relax.nn.avg_pool2d")(DQA), SO, ZO)


def _qp(ctx, m, scale, zp):
    return float(const_value(m[scale], ctx)), int(const_value(m[zp]))


def _binary(ctx, call, m, contract, threads):
    inner = ctx.value_of(call.args[0])
    relu = inner.op.name == "relax.nn.relu"
    op = ctx.value_of(inner.args[0]).op.name if relu else inner.op.name
    qa, qb, qo = _qp(ctx, m, SA, ZA), _qp(ctx, m, SB, ZB), _qp(ctx, m, SO, ZO)
    a, b = ctx.new(m[A]), ctx.new(m[B])
    multiply = op == "relax.multiply"
    if contract == "pt2e":  # float ops, one element at a time: broadcasting changes nothing
        fn = lambda x, y: pt2e.binary(x, y, qa, qb, qo, multiply, relu)  # noqa: E731
        return ctx.call_te(fn, a, b, primfunc_name_hint="qmul" if multiply else "qadd")
    if [int(d) for d in a.ty.shape] != [int(d) for d in b.ty.shape] and not multiply:
        # PyTorch runs a broadcasting add through another loop (no vector body); not modelled.
        raise QCompileError("quantized add with broadcasting inputs "
                            f"{list(a.ty.shape)} + {list(b.ty.shape)} is not supported yet")
    if contract == "qnnpack" and not multiply:
        try:
            from ..numerics.constants import qnnpack_add

            qnnpack_add(qa[0], qb[0], qo[0])
        except ValueError as err:
            raise EngineLimitError(f"quantized add under qnnpack numerics: PyTorch's QNNPACK "
                                   f"add cannot take these scales ({err}); use fbgemm "
                                   "numerics") from None
        fn = lambda x, y: kernels.add_qnnpack(x, y, qa, qb, qo, relu)  # noqa: E731
        return ctx.call_te(fn, a, b, primfunc_name_hint="qadd_qnnpack")
    if contract == "integer":
        fn = lambda x, y: kernels.add_integer(x, y, qa, qb, qo, relu, multiply)  # noqa: E731
    elif multiply:
        fn = lambda x, y: kernels.mul_fbgemm(x, y, qa, qb, qo, relu)  # noqa: E731
    else:
        fn = lambda x, y: kernels.add_fbgemm(x, y, qa, qb, qo, relu, threads)  # noqa: E731
    return ctx.call_te(fn, a, b, primfunc_name_hint="qmul" if multiply else "qadd")


def _clamp_kernel(x, lo, hi):
    return te.compute(x.shape, lambda *i: tirx.max(tirx.min(x(*i), tirx.const(hi, x.dtype)),
                                                   tirx.const(lo, x.dtype)), name="qclip")


def _table_as_clamp(table: np.ndarray):
    """(lo, hi) when table[q] == clamp(q, lo, hi) for all 256 steps, else None."""
    steps = np.arange(256)
    lo, hi = int(table[0]), int(table[255])
    if lo <= hi and np.array_equal(table, np.clip(steps, lo, hi)):
        return lo, hi
    return None


def _pt2e_table(ctx, m, op: str, bounds=None):
    """Under pt2e a one-input op is a 256-entry table PyTorch's own float ops fill.  A table
    that is a clamp of the steps (relu/hardtanh with the same input and output qparams, the
    common case) becomes that clamp: elementwise, so it fuses into the kernel before it; a
    lookup (a gather) stays a kernel of its own."""
    qa, qo = _qp(ctx, m, SA, ZA), _qp(ctx, m, SO, ZO)
    table = pt2e.unary_table(op, qa, qo, bounds)
    clamp = _table_as_clamp(table)
    if clamp is not None:
        return ctx.call_te(_clamp_kernel, ctx.new(m[A]), *clamp, primfunc_name_hint="qclip")
    return ctx.call_te(lambda x, t: kernels.lookup(x, t, None, 1), ctx.new(m[A]),
                       relax.const(table), primfunc_name_hint=op)


def _same_qparams_act(ctx, call, m, contract):
    qa, qo = _qp(ctx, m, SA, ZA), _qp(ctx, m, SO, ZO)
    act = ctx.value_of(call.args[0])
    if contract == "pt2e":
        if act.op.name == "relax.nn.relu":
            return _pt2e_table(ctx, m, "relu")
        return _pt2e_table(ctx, m, "clip", clip_range(act))
    if qa != qo:  # an activation between two quantize steps (convert_fx's unfused relu)
        if act.op.name == "relax.nn.relu":
            bounds = (0.0, None)
        else:
            bounds = clip_range(act)
        if contract == "integer":
            fn = lambda t: kernels.requantize_tensor_integer(t, qa, qo, bounds)  # noqa: E731
        else:
            fn = lambda t: kernels.requantize_tensor(t, qa, qo, float_clip=bounds)  # noqa: E731
        return ctx.call_te(fn, ctx.new(m[A]), primfunc_name_hint="requantize_act")
    lo, hi = activation_bounds(act, qo[0], qo[1])
    if act.op.name == "relax.nn.relu":
        return ctx.call_te(_clamp_kernel, ctx.new(m[A]), lo, hi, primfunc_name_hint="qrelu")
    if contract == "qnnpack" and qnnpack_clamp_permutes(ctx, m[A]):
        x = ctx.new(m[A])
        nhwc = ctx.emit(ctx.call_te(kernels.channels_last_clamp, x, lo, hi,
                                    primfunc_name_hint="qclip_channels_last"))
        # a zero-copy view: PyTorch hands the NHWC-ordered memory on as an NCHW tensor
        return R.memory.view(nhwc, shape=[int(d) for d in x.ty.shape])
    return ctx.call_te(_clamp_kernel, ctx.new(m[A]), lo, hi, primfunc_name_hint="qclip")


def _unary(ctx, call, m, contract, threads):
    inner = ctx.value_of(call.args[0])
    if inner.op.name == "relax.sigmoid":
        op = "sigmoid"
    elif ctx.match(HARDSWISH, inner) is not None:
        op = "hardswish"
    else:
        op = "hardsigmoid"
    if contract == "pt2e":
        return _pt2e_table(ctx, m, op)
    qa, qo = _qp(ctx, m, SA, ZA), _qp(ctx, m, SO, ZO)
    body, tail = unary_tables(op, contract, qa, qo)
    args = [ctx.new(m[A]), relax.const(body)] + ([relax.const(tail)] if tail is not None else [])

    def fn(x, tb, tt=None):
        return kernels.lookup(x, tb, tt, threads)

    return ctx.call_te(fn, *args, primfunc_name_hint=op)


def _pool(ctx, call, m, contract):
    qa, qo = _qp(ctx, m, SA, ZA), _qp(ctx, m, SO, ZO)
    pool = ctx.value_of(call.args[0])
    x = ctx.new(m[A])
    if contract == "qnnpack":
        out = _pool_qnnpack(ctx, pool, x, qa)
        if out is not None:
            return out
    if pool.op.name == "relax.nn.adaptive_avg_pool2d":
        if contract == "pt2e":
            fn = lambda t: pt2e.adaptive_avg_pool_1x1(t, qa, qo)  # noqa: E731
        else:
            fn = lambda t: kernels.adaptive_avg_pool_1x1(t, qa, qo, contract)  # noqa: E731
        return ctx.call_te(fn, x, primfunc_name_hint="adaptive_avg_pool")
    attrs = pool.attrs
    params = dict(kernel=[int(v) for v in attrs.pool_size], stride=[int(v) for v in attrs.strides],
                  padding=[int(v) for v in attrs.padding], ceil_mode=bool(attrs.ceil_mode),
                  count_include_pad=bool(attrs.count_include_pad))
    if contract == "pt2e":
        fn = lambda t: pt2e.avg_pool2d(t, qa, qo, **params)  # noqa: E731
        return ctx.call_te(fn, x, primfunc_name_hint="avg_pool")
    fn = lambda t: kernels.avg_pool2d(t, qa, qo, contract, **params)  # noqa: E731
    return ctx.call_te(fn, x, primfunc_name_hint="avg_pool")


def _pool_qnnpack(ctx, pool, x, qa):
    """PyTorch's qnnpack engine pools with QNNPACK when the input is 4-D and either it is
    avg_pool2d without ceil_mode, or adaptive pooling to 1x1 of more than one element."""
    _, _, h, w = (int(d) for d in x.ty.shape)
    if pool.op.name == "relax.nn.adaptive_avg_pool2d":
        if h * w == 1:
            return None
        params = dict(kernel=(h, w), stride=(h, w), padding=(0, 0, 0, 0))
    else:
        attrs = pool.attrs
        if bool(attrs.ceil_mode) or any(int(d) != 1 for d in attrs.dilation):
            return None
        params = dict(kernel=[int(v) for v in attrs.pool_size],
                      stride=[int(v) for v in attrs.strides],
                      padding=[int(v) for v in attrs.padding])
    fn = lambda t: kernels.avg_pool2d_qnnpack(t, qa, **params)  # noqa: E731
    return ctx.call_te(fn, x, primfunc_name_hint="avg_pool_qnnpack")


def _concat(ctx, call, contract):
    cat = ctx.value_of(call.args[0])
    if not isinstance(cat, relax.Call) or cat.op.name != "relax.concat":
        return None
    parts = ctx.value_of(cat.args[0])
    so, zo = float(const_value(call.args[1], ctx)), int(const_value(call.args[2]))
    moved = []
    for part in parts.fields:
        dq = ctx.value_of(part)
        if not isinstance(dq, relax.Call) or dq.op.name != "relax.dequantize":
            return None
        qin = (float(const_value(dq.args[1], ctx)), int(const_value(dq.args[2])))
        fn = {"integer": kernels.requantize_tensor_integer,
              "pt2e": pt2e.requantize_tensor}.get(contract, kernels.requantize_tensor)
        moved.append(ctx.emit(ctx.call_te(fn, ctx.new(dq.args[0]), qin, (so, zo),
                                          primfunc_name_hint="requantize_tensor")))
    return R.concat(moved, axis=int(cat.attrs.axis))


def lower_qdq_ops(mod: tvm.IRModule, contract: str, threads: int) -> tvm.IRModule:
    """Lower elementwise, unary, pooling and cat Q/DQ regions to the contract's kernels."""

    def rewrite(ctx, call):
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.quantize":
            return None
        for pattern, lower in ((BINARY, lambda m: _binary(ctx, call, m, contract, threads)),
                               (SAME_QPARAMS_ACT,
                                lambda m: _same_qparams_act(ctx, call, m, contract)),
                               (UNARY, lambda m: _unary(ctx, call, m, contract, threads)),
                               (POOL, lambda m: _pool(ctx, call, m, contract))):
            m = ctx.match(pattern, call)
            if m is not None:
                out = lower(m)
                if out is not None:
                    return out
        return _concat(ctx, call, contract)

    return run_rewrite(mod, rewrite)


def lower_boundaries(mod: tvm.IRModule, contract: str = "fbgemm") -> tvm.IRModule:
    """The model's input quantize and output dequantize become the engines' formulas."""
    quantize = pt2e.quantize if contract == "pt2e" else kernels.quantize

    def rewrite(ctx, call):
        if not isinstance(call.op, tvm.ir.Op):
            return None
        if call.op.name == "relax.quantize":
            scale, zp = float(const_value(call.args[1], ctx)), int(const_value(call.args[2]))
            return ctx.call_te(quantize, ctx.new(call.args[0]), scale, zp,
                               call.attrs.out_dtype, primfunc_name_hint="quantize")
        if call.op.name == "relax.dequantize":
            scale, zp = float(const_value(call.args[1], ctx)), int(const_value(call.args[2]))
            return ctx.call_te(kernels.dequantize, ctx.new(call.args[0]), scale, zp,
                               primfunc_name_hint="dequantize")
        return None

    return run_rewrite(mod, rewrite)
