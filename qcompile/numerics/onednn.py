"""What `torch.compile` (Inductor with freezing) computes for the convs and linears of an
X86InductorQuantizer model: oneDNN's int8 primitives (`onednn.qconv_pointwise`,
`qconv2d_pointwise.binary`, `qlinear_pointwise`), measured on torch 2.13's oneDNN
(tests/test_onednn_arithmetic.py calls them directly):

  value     the int32 accumulator as float32, then its scales applied one after the other,
              v = f(f(f(acc) * sx) * sw_c) + b                                    ("sequential")
            or as one product rounded first,
              v = f(f(acc) * f(sx * sw_c)) + b                                    ("combined")
            oneDNN's AMX brgemm kernels take the combined scale: convs with a kernel larger than
            1x1 that are not depthwise (brg_conv_fwd) and linears (brg_matmul).  Its 1x1 convs
            (brgconv_1x1), depthwise convs (brdgmm_dw) and every kernel on a CPU without AMX
            take the sequential one.
  unary     on the float value: relu max(v, 0), hardtanh min(max(v, lo), hi), hardswish
            v * min(max(f(f(v * f(1/6)) + 0.5), 0), 1), swish (SiLU) v * logistic(v) with
            oneDNN's own exp (`exp_onednn`) and logistic (`logistic_onednn`)
  residual  X86InductorQuantizer's conv + add (+ relu), oneDNN's 'sum' post-op: with a uint8
            output the residual is the 8-bit tensor, fma(f(r - zr), sr, v); with a float output
            Inductor dequantizes it first, f(v + f(f(r - zr) * sr))
  output    uint8: clamp(rne(f(f(v * f(1/so)) + zo))), the zero point added in float before
            rounding (Inductor's own quantize kernels round first, then add it); float32: v
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .quantize import dequantize_value, inv_scale
from .requantize import Scales, apply_act
from .tir_ops import clamp, f32, fence, fma, pow2i, rne_i32

# oneDNN's eltwise exp: log(FLT_MAX), log(FLT_MIN), log2(e), ln 2 and its degree-5 polynomial
_LN_FLT_MAX, _LN_FLT_MIN, _LOG2E, _LN2 = 0x42B17218, 0xC2AEAC50, 0x3FB8AA3B, 0x3F317218
_EXP_POLY = (0x3F7FFFFB, 0x3EFFFEE3, 0x3E2AAD40, 0x3D2B9D0D, 0x3C07CFCE)  # p1 .. p5


def _bits(u: int):
    return f32(np.array([u], np.uint32).view(np.float32)[0])


def exp_onednn(x):
    """exp of a float32 TIR value as oneDNN's jit eltwise injector computes it: x clamped to
    [log FLT_MIN, log FLT_MAX], n = floor(f(x * log2 e) + 0.5), r = fma(-n, ln 2, x), the
    polynomial 1 + r (p1 + r (p2 + ...)) by FMAs, times 2^(n-1), times 2 (0 below log
    FLT_MIN)."""
    under = x < _bits(_LN_FLT_MIN)
    x = tirx.max(tirx.min(x, _bits(_LN_FLT_MAX)), _bits(_LN_FLT_MIN))
    n = tirx.floor(fence(x * _bits(_LOG2E)) + f32(0.5))
    r = fma(-n, _bits(_LN2), x)
    scale = tirx.Select(under, f32(0.0), pow2i((n - f32(1.0)).astype("int32")))
    y = _bits(_EXP_POLY[4])
    for c in (_EXP_POLY[3], _EXP_POLY[2], _EXP_POLY[1], _EXP_POLY[0]):
        y = fma(y, r, _bits(c))
    y = fma(y, r, f32(1.0))
    return fence(fence(y * scale) * f32(2.0))


def logistic_onednn(x):
    """oneDNN's logistic: e = exp(-|x|), y = e / (e + 1), 1 - y for x >= 0 (by the sign bit)."""
    e = exp_onednn(-tirx.abs(x))
    y = e / (e + f32(1.0))
    negative = tirx.reinterpret("int32", x) < 0
    return tirx.Select(negative, y, f32(1.0) - y)

# what an accumulator comes from, as the epilogue pass names it (passes.fuse_epilogue_pt2e)
CONV, CONV_1X1, DEPTHWISE, LINEAR = "conv", "conv1x1", "depthwise", "linear"
ACCUMULATOR_KINDS = (CONV, CONV_1X1, DEPTHWISE, LINEAR)


def combined_scale(kind: str, amx: bool) -> bool:
    """Does oneDNN scale this accumulator by f(sx * sw) in one product (AMX brgemm kernels)?"""
    if kind not in ACCUMULATOR_KINDS:
        raise ValueError(f"unknown accumulator kind {kind!r}")
    return amx and kind in (CONV, LINEAR)


def scales(sx: float, sw: np.ndarray, kind: str, amx: bool) -> Scales:
    """The multipliers oneDNN applies to an accumulator of `kind` (module docstring)."""
    sx32, sw32 = np.float32(sx), np.asarray(sw, np.float32).reshape(-1)
    if combined_scale(kind, amx):
        return Scales((sx32 * sw32).astype(np.float32), None)
    return Scales(sw32, sx32)


def _act(v, act):
    """oneDNN's own hardswish and swish; relu and clip as everywhere (requantize.apply_act)."""
    kind = act[0] if act is not None else None
    if kind == "hardswish":
        gate = fence(fence(v * f32(np.float32(1.0 / 6.0))) + f32(0.5))
        return fence(v * tirx.min(tirx.max(gate, f32(0.0)), f32(1.0)))
    if kind == "silu":
        return fence(v * logistic_onednn(v))
    return apply_act(v, act)


def conv_epilogue(acc, channel, first, bias, axis: int, act=None, residual=None, act_after=None,
                  out=None):
    """One conv/linear output as oneDNN computes it (module docstring): the scaled accumulator
    (+ bias), act, [+ residual, act_after], then uint8 (`out` = (scale, zero_point)) or float.

    `channel` and `bias` are float32 TE placeholders (length 1 when per-tensor); `first` the
    input scale applied before `channel` (None: combined); `residual` (8-bit TE tensor, scale,
    zero point) or None."""
    per_channel = int(channel.shape[0]) > 1

    def body(*idx):
        c = idx[axis] if per_channel else 0
        v = acc(*idx).astype("float32")
        if first is not None:
            v = fence(v * f32(first))
        v = fence(v * channel[c])
        if bias is not None:
            v = fence(v + bias[idx[axis] if int(bias.shape[0]) > 1 else 0])
        v = _act(v, act)
        if residual is not None:
            r, rs, rz = residual
            if out is None:
                v = fence(v + dequantize_value(r(*idx), rs, rz))
            else:
                steps = (r(*idx).astype("int32") - rz).astype("float32")
                v = fma(steps, f32(np.float32(rs)), v)
            v = _act(v, act_after)
        if out is None:
            return v
        scale, zero_point = out
        shifted = fence(fence(v * f32(inv_scale(scale))) + f32(np.float32(zero_point)))
        return clamp(rne_i32(shifted), 0, 255).astype("uint8")

    return te.compute(acc.shape, body, name="epilogue_onednn")
