"""Pass (a): conv2d / matmul between dequantized operands become u8 x i8 -> i32 compute.

    conv2d(dequantize(x, sx, zx), dequantize(W, sw, zw))
      ==>  multiply(astype(acc, f32), multiply(sx, sw))       acc: int32, exact

The accumulator `acc = sum (x - zx)(w - zw)` is computed as PyTorch defines it: the input is
padded with its zero point (so padding contributes nothing) and, when every weight zero point is
0, the u8 x i8 product is corrected by the constant `zx * sum(w[c])`.  The float epilogue that
remains (bias add, activation, quantize) is the next passes' business.

Under a contract with `saturating_depthwise` (fbgemm), a depthwise conv that PyTorch's fbgemm runs
through its depthwise fast path gets that kernel's accumulator instead, whose pairs of raw
products saturate to int16 (numerics.depthwise.depthwise_conv_fbgemm): not exact, but what
fbgemm computes.  Every other depthwise conv gets the exact accumulator as a window kernel of the
same shape (numerics.depthwise.depthwise_conv_exact), vectorized along the output rows, instead
of a grouped
conv2d scheduled generically (with it and the fused clamps of lower_qdq_ops, PT2E MobileNetV2
went from 5.0 to 3.7 ms); with u8 activations and weights that fit int8 once shifted by their
zero points, its taps are int8 and summed as one expression (depthwise_conv_exact_int8), which
x86 AVX-512 runs four taps per vpdpbusd (schedules.depthwise_quads).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from ..numerics import depthwise
from ..numerics.contracts import Contract
from .machinery import const_value, run_rewrite

R = relax.op
_OUT_ELEMWISE_FUSABLE = 4  # relax's OpPatternKind of conv2d

_x, _sx, _zx = wildcard(), wildcard(), is_const()
_w, _sw, _zw = is_const(), wildcard(), is_const()
_dqx = is_op("relax.dequantize")(_x, _sx, _zx)
_dqw = is_op("relax.dequantize")(_w, _sw, _zw)
CONV = is_op("relax.nn.conv2d")(_dqx, _dqw)
MATMUL = is_op("relax.matmul")(_dqx, is_op("relax.permute_dims")(_dqw))


def _taps_by_four(taps: np.ndarray) -> np.ndarray:
    """(OC, T) row-major depthwise taps as int8, zero weights appended up to a multiple of 4
    (the x86 kernels read the taps four at a time: schedules.depthwise_quads)."""
    oc, count = taps.shape
    padded = np.zeros((oc, -(-count // 4) * 4), dtype=np.int8)
    padded[:, :count] = taps
    return padded


def _depthwise_fbgemm(ctx, call, x, zx: int, w: np.ndarray, zw: np.ndarray):
    """fbgemm's depthwise fast-path accumulator as a TE kernel, or None if it does not apply."""
    attrs = call.attrs
    in_channels = int(x.ty.shape[1])
    oc, _, kh, kw = w.shape
    if not depthwise.fbgemm_depthwise_fast_path(in_channels, oc, int(attrs.groups), (kh, kw),
                                              attrs.strides, attrs.padding, attrs.dilation):
        return None
    taps = kh * kw
    w_taps = _taps_by_four(w.reshape(oc, taps))
    zw64 = zw.astype(np.int64)
    corr = taps * zx * zw64 - zx * w.astype(np.int64).reshape(oc, -1).sum(axis=1)
    args = [x, relax.const(w_taps), relax.const(corr.astype("int32"))]
    if np.any(zw != 0):
        args.append(relax.const(zw.astype("int32")))
    strides = [int(s) for s in attrs.strides]
    padding = [int(p) for p in attrs.padding]

    def fn(xt, wt, corr_t, zw_t=None):
        return depthwise.depthwise_conv_fbgemm(xt, wt, corr_t, zw_t, zx, kh, strides, padding)

    # a conv for FuseOps (kOutEWiseFusable: its epilogue fuses, its input's producers do not);
    # its one-expression body would otherwise read as injective and absorb a quantize before it
    return ctx.call_te(fn, *args, primfunc_name_hint="depthwise_conv_fbgemm",
                       primfunc_attrs={"op_pattern": _OUT_ELEMWISE_FUSABLE})


def _depthwise_exact(ctx, call, x, zx: int, w: np.ndarray, zw: np.ndarray):
    """The exact depthwise accumulator as a window kernel, or None if `call` is no depthwise
    conv (groups = in-channels > 1, out-channels a multiple of them, no dilation)."""
    attrs = call.attrs
    in_channels, groups = int(x.ty.shape[1]), int(attrs.groups)
    if (groups == 1 or groups != in_channels or w.shape[0] % groups
            or any(int(d) != 1 for d in attrs.dilation)):
        return None
    shifted = w[:, 0].astype(np.int32) - zw.astype(np.int32).reshape(-1, 1, 1)
    corr = (-zx * shifted.astype(np.int64).reshape(len(shifted), -1).sum(axis=1)).astype("int32")
    strides = [int(s) for s in attrs.strides]
    padding = [int(p) for p in attrs.padding]
    oc, kh, kw = shifted.shape
    if str(x.ty.dtype) == "uint8" and shifted.min() >= -128 and shifted.max() <= 127:
        taps = _taps_by_four(shifted.reshape(oc, -1))

        def fn8(xt, wt, corr_t):
            return depthwise.depthwise_conv_exact_int8(xt, wt, corr_t, zx, (kh, kw), strides,
                                                     padding)

        # conv2d's fusion pattern, as for the fbgemm kernel (its body reads as injective)
        return ctx.call_te(fn8, x, relax.const(taps), relax.const(corr),
                           primfunc_name_hint="depthwise_conv_exact",
                           primfunc_attrs={"op_pattern": _OUT_ELEMWISE_FUSABLE})

    def fn(xt, wt, corr_t):
        return depthwise.depthwise_conv_exact(xt, wt, corr_t, zx, strides, padding)

    return ctx.call_te(fn, x, relax.const(shifted), relax.const(corr),
                       primfunc_name_hint="depthwise_conv_exact")


def _conv_acc(ctx, call, x, zx: int, w: np.ndarray, zw: np.ndarray, contract: Contract):
    attrs = call.attrs
    if str(attrs.data_layout) == "NCHW" and str(attrs.kernel_layout) == "OIHW":
        saturating = contract.saturating_depthwise
        acc = _depthwise_fbgemm(ctx, call, x, zx, w, zw) if saturating else None
        if acc is None:
            acc = _depthwise_exact(ctx, call, x, zx, w, zw)
        if acc is not None:
            return acc
    top, left, bottom, right = [int(p) for p in attrs.padding]
    if any((top, left, bottom, right)):
        x = R.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(zx))
    conv = dict(strides=attrs.strides, padding=[0, 0, 0, 0], dilation=attrs.dilation,
                groups=int(attrs.groups), out_dtype="int32")
    if np.all(zw == 0):
        acc = R.nn.conv2d(x, relax.const(w.astype("int8")), **conv)
        if zx != 0:
            correction = zx * w.astype(np.int64).reshape(w.shape[0], -1).sum(axis=1)
            acc = R.subtract(acc, relax.const(correction.astype("int32").reshape(1, -1, 1, 1)))
        return acc
    shifted = (w.astype(np.int32) - zw.reshape(-1, 1, 1, 1)).astype("int32")
    x32 = R.subtract(R.astype(x, "int32"), relax.const(np.int32(zx)))
    return R.nn.conv2d(x32, relax.const(shifted), **conv)


def _matmul_acc(x, zx: int, w: np.ndarray, zw: np.ndarray):
    if np.all(zw == 0):
        acc = R.matmul(x, relax.const(np.ascontiguousarray(w.T).astype("int8")), out_dtype="int32")
        if zx != 0:
            correction = zx * w.astype(np.int64).sum(axis=1)
            acc = R.subtract(acc, relax.const(correction.astype("int32")))
        return acc
    shifted = (w.astype(np.int32) - zw.reshape(-1, 1)).astype("int32")
    x32 = R.subtract(R.astype(x, "int32"), relax.const(np.int32(zx)))
    return R.matmul(x32, relax.const(np.ascontiguousarray(shifted.T)), out_dtype="int32")


def _rewrite(ctx, call, contract: Contract):
    if not isinstance(call.op, tvm.ir.Op) or call.op.name not in ("relax.nn.conv2d",
                                                                  "relax.matmul"):
        return None
    is_conv = call.op.name == "relax.nn.conv2d"
    m = ctx.match(CONV if is_conv else MATMUL, call)
    if m is None:
        return None
    x = ctx.new(m[_x])
    zx = int(const_value(m[_zx]))
    w = const_value(m[_w])
    zw = np.broadcast_to(const_value(m[_zw]), (w.shape[0],))
    sx, sw = ctx.new(m[_sx]), ctx.new(m[_sw])
    if is_conv:
        acc = _conv_acc(ctx, call, x, zx, w, zw, contract)
        if len(sw.ty.shape) == 1:
            sw = R.reshape(sw, [1, -1, 1, 1])
    else:
        acc = _matmul_acc(x, zx, w, zw)
    return R.multiply(R.astype(ctx.emit(acc), "float32"), R.multiply(sx, sw))


def qdq_to_integer(mod: tvm.IRModule, contract: Contract) -> tvm.IRModule:
    """Rewrite every dequantized conv2d/matmul into an int32 accumulator times its scale.

    `contract` picks the accumulator where engines differ (fbgemm's depthwise fast path)."""
    return run_rewrite(mod, lambda ctx, call: _rewrite(ctx, call, contract))
