"""The conv/linear epilogue: an int32 accumulator to its output step, each contract's way.

A requantize rule (fbgemm_rule, qnnpack_rule, fixed_point_rule) computes a `Requantize` at
compile time: per-channel constants, and the `step` that turns one accumulator value into an
output step with them:
  fbgemm_tensor_step   v = fma(bias, inv_ats, f(acc));   y = rne(f(v * mult)) + zo   (fbgemm)
  fbgemm_channel_step  v = f(f(acc) + bias / ats);       y = rne(f(v * mult)) + zo   (fbgemm)
  float_step           v = f(acc + bias_q);               y = rne(f(v * mult)) + zo   (qnnpack)
  fixed_step           y = (acc + bias_q) * m0 / 2^s rounded half to even, + zo      (integer)
`requantize` builds the kernel from it.  `conv_epilogue_decomposed` is the PT2E program's
epilogue instead: the float value of the exact accumulator, activations, a dequantized residual,
then quantize (numerics.quantize's decomposed arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from tvm import te, tirx

from .constants import accumulator_scale, f32 as np_f32, q31
from .quantize import dequantize_value, quantize_value
from .tir_ops import INT32_MIN, clamp, f32, fbgemm_step, fence, fma, mul, round_shift

_F = "float32"


@dataclass
class Requantize:
    """What turns an int32 accumulator of one conv/linear output channel into an output step.

    `step(rq, acc, channel, lo, hi)` is the arithmetic (the module docstring's steps):
    `channel(name)` reads this output's entry of a constant array ("mult", "bias", "inv_ats",
    "shift"), and [lo, hi] is the clip of a fused relu/relu6/clamp.  Arrays have one entry per
    output channel (length 1 for per-tensor).
    """

    step: Callable
    mult: np.ndarray  # float32, or int64 Q31 multiplier m0 for fixed_step
    bias: np.ndarray | None  # float32 bias, bias/ats, or int32 bias_q, by step
    inv_ats: np.ndarray | None = None  # float32, fbgemm per-tensor only
    shift: np.ndarray | None = None  # int64 total right shift, fixed_step only
    out_zero_point: int = 0

    def scaled_fits_int32(self, float_bias: bool) -> bool:
        """Is f(v * mult) below 2^31 for every int32 accumulator (so cvtps2dq never gives its
        INT32_MIN for a huge positive value)?  Bounded from the constants alone, |acc| <= 2^31;
        the margin covers the float roundings of v and of the product.  `float_bias`: the bias
        is added in float (an int32 bias wraps instead and adds nothing to the bound)."""
        term = 0.0
        if self.bias is not None and float_bias:
            term = np.abs(self.bias.astype(np.float64))
            if self.inv_ats is not None:
                term = term * np.abs(self.inv_ats.astype(np.float64))
        bound = (2.0**31 + term) * np.abs(self.mult.astype(np.float64)) * (1 + 2.0**-20)
        return bool(np.all(bound < 2.0**31))

    def arrays(self) -> tuple[list[str], list[np.ndarray]]:
        """(names, arrays) of the constants the kernel reads, in the order it takes them."""
        names, arrays = ["mult"], [np.atleast_1d(self.mult)]
        for name in ("bias", "inv_ats", "shift"):
            value = getattr(self, name)
            if value is not None:
                names.append(name)
                arrays.append(np.atleast_1d(value))
        return names, arrays

    def describe(self) -> dict:
        """The multiplier, for `qcompile explain`: a float32 range, or Q31 m0 and shifts."""
        m = np.asarray(self.mult, dtype=np.float64)
        if self.shift is None:
            return {"float32_min": float(m.min()), "float32_max": float(m.max())}
        return {"m0": int(self.mult[0]), "shift": int(self.shift[0]),
                "shift_min": int(self.shift.min()), "shift_max": int(self.shift.max())}


# ---------------------------------------------------------------------------- steps
def _fbgemm_store(rq, v, channel, lo, hi):
    return fbgemm_step(mul(v, channel("mult")), rq.out_zero_point, lo, hi,
                       fits_int32=rq.scaled_fits_int32(float_bias=True))


def fbgemm_tensor_step(rq, acc, channel, lo, hi):
    """fbgemm, per-tensor weights: v = fma(bias, inv_ats, f(acc)), y = rne(f(v * mult)) + zo."""
    v = fma(channel("bias"), channel("inv_ats"), acc.astype("float32"))
    return _fbgemm_store(rq, v, channel, lo, hi)


def fbgemm_channel_step(rq, acc, channel, lo, hi):
    """fbgemm, per-channel weights (or no bias): v = f(f(acc) + bias / ats),
    y = rne(f(v * mult)) + zo."""
    v = acc.astype("float32")
    if rq.bias is not None:
        v = v + channel("bias")
    return _fbgemm_store(rq, v, channel, lo, hi)


def float_step(rq, acc, channel, lo, hi):
    """qnnpack: the int32 bias added (wrapping), then y = rne(f(f(acc) * mult)) + zo."""
    if rq.bias is not None:
        acc = acc + channel("bias")
    return fbgemm_step(mul(acc.astype("float32"), channel("mult")), rq.out_zero_point, lo, hi,
                       fits_int32=rq.scaled_fits_int32(float_bias=False))


def fixed_step(rq, acc, channel, lo, hi):
    """integer: (acc + bias_q) * m0 / 2^s in int64, rounded half to even, + zo."""
    if rq.bias is not None:
        acc = acc + channel("bias")
    s = channel("shift")
    rounded = round_shift(acc.astype("int64") * channel("mult"), s)
    r = tirx.max(tirx.min(rounded, tirx.const(2**31 - 1, "int64")),
                 tirx.const(INT32_MIN, "int64")).astype("int32")
    return clamp(clamp(r, -32768, 32767) + rq.out_zero_point, lo, hi)


# ---------------------------------------------------------------------------- rules
def fbgemm_rule(in_scale: float, weight_scales, out_scale: float, out_zero_point: int,
                bias) -> Requantize:
    """fbgemm: mult = f(ats / f32(s_out)) with ats = f(f32(s_in) f32(s_w)); the float bias
    through one FMA with f(1/ats) (per-tensor) or divided by ats (per-channel)."""
    ats = accumulator_scale(in_scale, weight_scales)
    mult = (ats / np_f32(out_scale)).astype(np.float32)
    if bias is None:
        return Requantize(fbgemm_channel_step, mult, None, out_zero_point=out_zero_point)
    b = np.asarray(bias, dtype=np.float32)
    if ats.size == 1:
        inv = (np_f32(1.0) / ats).astype(np.float32)
        return Requantize(fbgemm_tensor_step, mult, b, inv_ats=inv,
                          out_zero_point=out_zero_point)
    return Requantize(fbgemm_channel_step, mult, (b / ats).astype(np.float32),
                      out_zero_point=out_zero_point)


def qnnpack_rule(in_scale: float, weight_scales, out_scale: float, out_zero_point: int,
                 bias) -> Requantize:
    """qnnpack: mult = f(ats * f(1 / f32(s_out))); `bias` already int32 (or None)."""
    ats = accumulator_scale(in_scale, weight_scales)
    mult = (ats * (np_f32(1.0) / np_f32(out_scale))).astype(np.float32)
    return Requantize(float_step, mult, bias, out_zero_point=out_zero_point)


def fixed_point_rule(in_scale: float, weight_scales, out_scale: float, out_zero_point: int,
                     bias) -> Requantize:
    """integer: ats / s_out (in double) as a Q31 multiplier m0 and a shift; `bias` already
    int32 (or None)."""
    ats = accumulator_scale(in_scale, weight_scales)
    real = ats.astype(np.float64) / np.float64(np_f32(out_scale))
    m0, shift = q31(real)
    return Requantize(fixed_step, m0, bias, shift=shift, out_zero_point=out_zero_point)


def requantize(acc, rq: Requantize, consts: dict, lo: int, hi: int, axis: int, out_dtype="uint8"):
    """int32 accumulator -> output steps by `rq.step`, clamped to [lo, hi].

    `consts` maps the names of rq.arrays() to TE placeholders of those per-channel arrays."""
    per_channel = rq.mult.size > 1

    def body(*idx):
        def channel(name):
            values = consts[name]
            return values[idx[axis] if per_channel or values.shape[0] > 1 else 0]

        return rq.step(rq, acc(*idx), channel, lo, hi)

    return te.compute(acc.shape, lambda *i: body(*i).astype(out_dtype), name="requantize")


# ---------------------------------------------------------------------------- decomposed (PT2E)
@dataclass(frozen=True)
class Scales:
    """A float epilogue's per-channel multipliers: `channel` (one per output channel, or one;
    float32, float64 for the exact product) and `first`, the input scale applied before them
    (None: already inside `channel`)."""

    channel: np.ndarray
    first: np.float32 | None


def apply_act(v, act):
    """A float relu ("relu", None), clamp ("clip", (lo, hi)) or hardswish ("hardswish", None,
    (x * clip(x + 3, 0, 6)) / 6) as PyTorch's kernels do it."""
    if act is None:
        return v
    kind, bounds = act
    if kind == "relu":
        return tirx.max(v, f32(0.0))
    if kind == "hardswish":
        gate = tirx.min(tirx.max(fence(v + f32(3.0)), f32(0.0)), f32(6.0))
        return fence(fence(v * gate) / f32(6.0))
    lo, hi = bounds
    return tirx.min(tirx.max(v, f32(np.float32(lo))), f32(np.float32(hi)))


def conv_value(acc_value, ats64, bias_value):
    """The float value of one conv/linear output from its exact int32 accumulator."""
    v = (acc_value.astype("float64") * ats64).astype(_F)
    if bias_value is not None:
        v = fence(v + bias_value)
    return v


def decomposed_scales(sx: float, sw, kind: str, amx: bool):
    """The PT2E program's conv scale, double(sx) * double(sw) (exact: two float32 significands
    fit in a double's), the same for every accumulator kind and CPU."""
    ats = np.float64(np.float32(sx)) * np.asarray(sw, np.float32).reshape(-1).astype(np.float64)
    return Scales(ats, None)


def conv_epilogue_decomposed(acc, ats, _first, bias, axis: int, act=None, residual=None,
                             act_after=None, out=None):
    """conv/linear output: act(value) [+ dequantized residual, then act_after], then either
    quantized to `out` = (scale, zero_point) or left float (out None).

    `ats` (float64, from decomposed_scales) and `bias` (float32) are TE placeholders of
    per-channel arrays (length 1 for per-tensor); `residual` is (8-bit TE tensor, scale,
    zero_point) or None.
    """
    per_channel = int(ats.shape[0]) > 1

    def body(*idx):
        c = idx[axis] if per_channel else 0
        cb = idx[axis] if bias is not None and int(bias.shape[0]) > 1 else 0
        v = conv_value(acc(*idx), ats[c], None if bias is None else bias[cb])
        v = apply_act(v, act)
        if residual is not None:
            r, rs, rz = residual
            v = apply_act(fence(v + dequantize_value(r(*idx), rs, rz)), act_after)
        if out is None:
            return v
        return quantize_value(v, out[0], out[1]).astype("uint8")

    return te.compute(acc.shape, body, name="epilogue_pt2e")
