"""Pass: the remaining Q/DQ regions (elementwise, unary, pooling, cat) become 8-bit kernels.

Each region `quantize(f(dequantize(x), ...), so, zo)` is matched by one pattern of LOWERINGS and
replaced by the kernel the numerics contract gives `f` (contract.kernels: add, mul, the unary
tables, pools, requantize_tensor); then any quantize/dequantize left at the model's boundary
becomes the contract's quantize/dequantize kernel (lower_boundaries).  Run after
fuse_requantize.  A relu or hardtanh that keeps its input's qparams is an integer clamp of the
steps under the engines' contracts (with qnnpack's permutation of a channels-last tensor where
the contract has it) and the table of the float op under a PT2E program's.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from ..errors import QCompileError
from ..numerics import elementwise
from ..numerics.contracts import Contract
from .machinery import const_value, run_rewrite
from .patterns import activation_bounds, clip_range, qnnpack_clamp_permutes

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

CAT = is_op("relax.quantize")(is_op("relax.concat")(wildcard()), SO, ZO)
MEAN = is_op("relax.quantize")(is_op("relax.mean")(DQA), SO, ZO)


def _qp(ctx, m, scale, zp):
    return float(const_value(m[scale], ctx)), int(const_value(m[zp]))


def _binary(ctx, call, m, contract: Contract, threads: int):
    inner = ctx.value_of(call.args[0])
    relu = inner.op.name == "relax.nn.relu"
    op = ctx.value_of(inner.args[0]).op.name if relu else inner.op.name
    qa, qb, qo = _qp(ctx, m, SA, ZA), _qp(ctx, m, SB, ZB), _qp(ctx, m, SO, ZO)
    multiply = op == "relax.multiply"
    kernel = contract.kernels.mul if multiply else contract.kernels.add
    fn = lambda x, y: kernel(x, y, qa, qb, qo, relu, threads)  # noqa: E731
    name = getattr(kernel, "primfunc_name", "qmul" if multiply else "qadd")
    return ctx.call_te(fn, ctx.new(m[A]), ctx.new(m[B]), primfunc_name_hint=name)


def _table_as_clamp(table: np.ndarray):
    """(lo, hi) when table[q] == clamp(q, lo, hi) for all 256 steps, else None."""
    steps = np.arange(256)
    lo, hi = int(table[0]), int(table[255])
    if lo <= hi and np.array_equal(table, np.clip(steps, lo, hi)):
        return lo, hi
    return None


def _table(ctx, m, contract: Contract, threads: int, op: str, bounds=None):
    """A one-input op as the contract's 256-entry table.  A table that is a clamp of the steps
    (relu/hardtanh with the same input and output qparams, the common case under a PT2E
    program) becomes that clamp: elementwise, so it fuses into the kernel before it; a lookup
    (a gather) stays a kernel of its own."""
    qa, qo = _qp(ctx, m, SA, ZA), _qp(ctx, m, SO, ZO)
    body, tail = contract.kernels.unary_table(op, qa, qo, bounds)
    x = ctx.new(m[A])
    clamp = _table_as_clamp(body) if tail is None else None
    if clamp is not None:
        return ctx.call_te(elementwise.clamp_steps, x, *clamp, primfunc_name_hint="qclip")
    args = [x, relax.const(body)] + ([relax.const(tail)] if tail is not None else [])

    def fn(t, tb, tt=None):
        return elementwise.lookup(t, tb, tt, threads)

    return ctx.call_te(fn, *args, primfunc_name_hint=op)


def _same_qparams_act(ctx, call, m, contract: Contract, threads: int):
    qa, qo = _qp(ctx, m, SA, ZA), _qp(ctx, m, SO, ZO)
    act = ctx.value_of(call.args[0])
    is_relu = act.op.name == "relax.nn.relu"
    kernels = contract.kernels
    if not kernels.integer_clamp:
        return _table(ctx, m, contract, threads, *(("relu",) if is_relu else
                                                   ("clip", clip_range(act))))
    if qa != qo:  # an activation between two quantize steps (convert_fx's unfused relu)
        bounds = (0.0, None) if is_relu else clip_range(act)
        fn = lambda t: kernels.requantize_tensor(t, qa, qo, bounds)  # noqa: E731
        return ctx.call_te(fn, ctx.new(m[A]), primfunc_name_hint="requantize_act")
    lo, hi = activation_bounds(act, qo[0], qo[1])
    x = ctx.new(m[A])
    if is_relu:
        return ctx.call_te(elementwise.clamp_steps, x, lo, hi, primfunc_name_hint="qrelu")
    if kernels.clamp_permutes_channels_last and qnnpack_clamp_permutes(ctx, m[A]):
        nhwc = ctx.emit(ctx.call_te(elementwise.channels_last_clamp, x, lo, hi,
                                    primfunc_name_hint="qclip_channels_last"))
        # a zero-copy view: PyTorch hands the NHWC-ordered memory on as an NCHW tensor
        return R.memory.view(nhwc, shape=[int(d) for d in x.ty.shape])
    return ctx.call_te(elementwise.clamp_steps, x, lo, hi, primfunc_name_hint="qclip")


def _unary(ctx, call, m, contract: Contract, threads: int):
    inner = ctx.value_of(call.args[0])
    if inner.op.name == "relax.sigmoid":
        op = "sigmoid"
    elif ctx.match(HARDSWISH, inner) is not None:
        op = "hardswish"
    else:
        op = "hardsigmoid"
    return _table(ctx, m, contract, threads, op)


def _pool(ctx, call, m, contract: Contract, threads: int):
    qa, qo = _qp(ctx, m, SA, ZA), _qp(ctx, m, SO, ZO)
    pool = ctx.value_of(call.args[0])
    kernels = contract.kernels
    if pool.op.name == "relax.nn.adaptive_avg_pool2d":
        fn = lambda t: kernels.adaptive_avg_pool(t, qa, qo)  # noqa: E731
        return ctx.call_te(fn, ctx.new(m[A]), primfunc_name_hint="adaptive_avg_pool")
    attrs = pool.attrs
    if any(int(d) != 1 for d in attrs.dilation):
        raise QCompileError("avg_pool2d with dilation is not supported")
    params = dict(kernel=[int(v) for v in attrs.pool_size], stride=[int(v) for v in attrs.strides],
                  padding=[int(v) for v in attrs.padding], ceil_mode=bool(attrs.ceil_mode),
                  count_include_pad=bool(attrs.count_include_pad))
    fn = lambda t: kernels.avg_pool(t, qa, qo, **params)  # noqa: E731
    return ctx.call_te(fn, ctx.new(m[A]), primfunc_name_hint="avg_pool")


def _mean(ctx, call, m, contract: Contract, threads: int):
    """The mean over H and W the frontends write for a quantized tensor's mean((2, 3))."""
    qa, qo = _qp(ctx, m, SA, ZA), _qp(ctx, m, SO, ZO)
    mean = ctx.value_of(call.args[0])
    dims = tuple(int(a) for a in mean.attrs.axis)  # as spelled: an engine may dispatch on it
    if sorted(d % 4 for d in dims) != [2, 3] or not bool(mean.attrs.keepdims):
        raise QCompileError(f"a quantized mean over axes {list(dims)} is not supported (the "
                            "global spatial mean only)")
    fn = lambda t: contract.kernels.mean(t, qa, qo, dims)  # noqa: E731
    return ctx.call_te(fn, ctx.new(m[A]), primfunc_name_hint="mean")


def _concat(ctx, call, m, contract: Contract, threads: int):
    cat = ctx.value_of(call.args[0])
    parts = ctx.value_of(cat.args[0])
    qo = float(const_value(call.args[1], ctx)), int(const_value(call.args[2]))
    moved = []
    for part in parts.fields:
        dq = ctx.value_of(part)
        if not isinstance(dq, relax.Call) or dq.op.name != "relax.dequantize":
            return None
        qin = (float(const_value(dq.args[1], ctx)), int(const_value(dq.args[2])))
        moved.append(ctx.emit(ctx.call_te(contract.kernels.requantize_tensor,
                                          ctx.new(dq.args[0]), qin, qo,
                                          primfunc_name_hint="requantize_tensor")))
    return R.concat(moved, axis=int(cat.attrs.axis))


# pattern -> lowering(ctx, call, match, contract, threads), tried in this order
LOWERINGS = ((BINARY, _binary), (SAME_QPARAMS_ACT, _same_qparams_act), (UNARY, _unary),
             (POOL, _pool), (MEAN, _mean), (CAT, _concat))


def lower_qdq_ops(mod: tvm.IRModule, contract: Contract, threads: int) -> tvm.IRModule:
    """Lower elementwise, unary, pooling and cat Q/DQ regions to the contract's kernels."""

    def rewrite(ctx, call):
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.quantize":
            return None
        for pattern, lower in LOWERINGS:
            m = ctx.match(pattern, call)
            if m is not None:
                out = lower(ctx, call, m, contract, threads)
                if out is not None:
                    return out
        return None

    return run_rewrite(mod, rewrite)


def lower_boundaries(mod: tvm.IRModule, contract: Contract) -> tvm.IRModule:
    """The model's input quantize and output dequantize become the contract's kernels."""
    kernels = contract.kernels

    def rewrite(ctx, call):
        if not isinstance(call.op, tvm.ir.Op):
            return None
        if call.op.name == "relax.quantize":
            scale, zp = float(const_value(call.args[1], ctx)), int(const_value(call.args[2]))
            return ctx.call_te(kernels.quantize, ctx.new(call.args[0]), scale, zp,
                               call.attrs.out_dtype, primfunc_name_hint="quantize")
        if call.op.name == "relax.dequantize":
            scale, zp = float(const_value(call.args[1], ctx)), int(const_value(call.args[2]))
            return ctx.call_te(kernels.dequantize, ctx.new(call.args[0]), scale, zp,
                               primfunc_name_hint="dequantize")
        return None

    return run_rewrite(mod, rewrite)
