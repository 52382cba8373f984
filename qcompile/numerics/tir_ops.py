"""Scalar building blocks that pin float behaviour in generated code.

TVM's LLVM backend compiles with `AllowFPOpFusion = Fast`, so any float multiply feeding an add
is contracted into an FMA unless something stops it.  PyTorch fuses in some places and not in
others, so every kernel spells out which it wants: `fma` where PyTorch fuses, `fence` around a
product that must be rounded on its own.
"""

from __future__ import annotations

import numpy as np
from tvm import tirx

from .constants import q31

INT32_MIN = -(2**31)


def fence(x):
    """An arithmetic fence: LLVM may not contract or reassociate across it (no code emitted)."""
    return tirx.call_llvm_pure_intrin("float32", "llvm.arithmetic.fence", x)


def fma(a, b, c):
    """One float32 fused multiply-add, a single rounding."""
    return tirx.call_llvm_pure_intrin("float32", "llvm.fma", a, b, c)


def sat16_pair(x0, w0, x1, w1):
    """sat16(x0 w0 + x1 w1) for u8 x and i8 w, as an int16 saturating add of two int16
    products (each fits: 255 * -128 = -32640).  Equal to clamping the int32 sum to int16;
    written this way it is one vpmullw pair and a vpaddsw per 32 lanes, not int32 math."""
    a = x0.astype("int16") * w0.astype("int16")
    b = x1.astype("int16") * w1.astype("int16")
    return tirx.call_llvm_pure_intrin("int16", "llvm.sadd.sat", a, b)


def mul(a, b):
    """A float32 product rounded on its own (never contracted into a following add)."""
    return fence(a * b)


def f32(value):
    """A float32 immediate (value already rounded to float32 by the caller)."""
    return tirx.const(float(value), "float32")


def i32(value):
    return tirx.const(int(value), "int32")


def rne_i32(v):
    """float32 -> int32 as cvtps2dq does: round half to even; out of range (or NaN) gives INT32_MIN."""
    r = tirx.round(v)  # lowered to llvm.nearbyint: half to even in the default rounding mode
    in_range = tirx.all(r >= f32(-2147483648.0), r < f32(2147483648.0))
    return tirx.Select(in_range, r.astype("int32"), i32(INT32_MIN))


def _wrap_threshold(zero_point: int) -> float:
    """The least float32 t with rne(t) + zero_point >= 2^31 (floats there are integers)."""
    t = np.float32(2.0**31 - zero_point)
    return float(t if float(t) >= 2.0**31 - zero_point else np.nextafter(t, np.float32(np.inf)))


def fbgemm_step(p, zero_point: int, lo: int, hi: int, wrapping_add: bool = False,
                fits_int32: bool = False):
    """An int32 in [lo, hi]: what fbgemm's vector code stores for the scaled float p
    (cvtps2dq, round half to even with INT32_MIN out of range; saturate to int16; add the zero
    point saturating; saturate to 8 bits; the fused activation's clip [lo, hi]).
    `wrapping_add`: the zero point is added in int32 before saturating, as ATen's vectorized
    quantize does (add, mul): a rounded p within zero_point of 2^31 wraps and ends at lo too.
    `fits_int32` (saturating add only): the caller knows p < 2^31
    (Requantize.scaled_fits_int32), so the out-of-range select is left out.

    The bounds are 8-bit, so every step after the rounding is one clamp, which commutes with
    rounding to integer bounds: clamped in float first, the value always fits, and llvm.lrint
    (round in the current mode, half to even: one cvtps2dq) converts it; lrint is only
    undefined out of range.  The one out-of-range case that does not land on a bound is
    p >= 2^31 (cvtps2dq's INT32_MIN ends at lo).  p is never NaN here (integers times finite
    constants)."""
    low, high = f32(lo - zero_point), f32(hi - zero_point)
    inside = tirx.min(tirx.max(p, low), high)
    if not fits_int32:
        limit = f32(_wrap_threshold(zero_point if wrapping_add else 0))
        inside = tirx.Select(p >= limit, low, inside)
    return tirx.call_llvm_pure_intrin("int32", "llvm.lrint", inside) + i32(zero_point)


def clamp(v, lo, hi):
    return tirx.max(tirx.min(v, i32(hi)), i32(lo))


def dtype_range(dtype: str) -> tuple[int, int]:
    return {"uint8": (0, 255), "int8": (-128, 127), "int32": (-(2**31), 2**31 - 1)}[dtype]


# ---------------------------------------------------------------------------- integer arithmetic
def round_shift(v, s):
    """v / 2^s rounded half to even, in int64 (the engines round ties to even too)."""
    one = tirx.const(1, "int64")
    s = tirx.const(s, "int64") if isinstance(s, (int, np.integer)) else s
    q = v >> s
    rem = v - (q << s)
    half = one << (s - one)
    up = tirx.Or(rem > half, tirx.And(rem == half, (q & one) == one))
    return q + up.astype("int64")


def divide_round_even(a, d):
    """a / d for int32 a and positive int32 d, rounded half to even, integer ops only."""
    q = tirx.floordiv(a, d)
    twice = 2 * (a - q * d)
    up = tirx.Or(twice > d, tirx.And(twice == d, tirx.floormod(q, 2) == 1))
    return q + up.astype("int32")


def rescale_fixed(x_minus_z, real: float):
    """round(x * real) in integer arithmetic: x * m0 / 2^s, rounded half to even, in int64."""
    m0, s = q31(np.array([real]))
    return round_shift(x_minus_z.astype("int64") * tirx.const(int(m0[0]), "int64"), int(s[0]))


def pow2i(q):
    """2^q for an int32 TIR value q in the normal range, from the exponent bits."""
    return tirx.reinterpret("float32", (q + 127) << 23)


# exp's polynomial on [-ln2/2, ln2/2] (Cephes expf), highest degree first
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
             1.6666665459e-1, 5.0000001201e-1)


def exp_poly(x):
    """exp(x) of a float32 TIR value as one vectorizable expression (the method of TVM's
    fast_exp: x = n ln2 + r, a degree-7 polynomial in r, times 2^n built from the exponent bits;
    within ~2 ulp of exp).  TVM's exp calls libm one lane at a time."""
    x = tirx.max(tirx.min(x, f32(88.3762626647950)), f32(-88.3762626647949))
    n = tirx.floor(fma(x, f32(1.44269504088896341), f32(0.5)))
    r = fma(n, f32(-0.693359375), x)
    r = fma(n, f32(2.12194440e-4), r)
    p = f32(_EXP_POLY[0])
    for c in _EXP_POLY[1:]:
        p = fma(p, r, f32(c))
    y = fma(p, r * r, r) + f32(1.0)
    return y * pow2i(n.astype("int32"))


# Sleef's expf (u10), what Inductor's generated code calls (at::vec::Vectorized<float>::exp)
_SLEEF_L2U, _SLEEF_L2L = 0.693145751953125, 1.428606765330187045e-06
_SLEEF_R_LN2 = 1.442695040888963407359924681001892137426645954152985934135449406931
_SLEEF_POLY = (0.000198527617612853646278381, 0.00139304355252534151077271,
               0.00833336077630519866943359, 0.0416664853692054748535156,
               0.166666671633720397949219, 0.5)


def exp_sleef(d):
    """Sleef's expf_u10 of a float32 TIR value, bit for bit (FMA build): q = rint(d / ln2),
    s = d - q ln2 in two FMAs, a degree-6 polynomial, 1 + s + s^2 p, scaled by 2^q in two
    halves; 0 below -104, inf above 100."""
    q = tirx.round(fence(d * f32(np.float32(_SLEEF_R_LN2)))).astype("int32")
    qf = q.astype("float32")
    s = fma(qf, f32(-np.float32(_SLEEF_L2U)), d)
    s = fma(qf, f32(-np.float32(_SLEEF_L2L)), s)
    u = f32(np.float32(_SLEEF_POLY[0]))
    for c in _SLEEF_POLY[1:]:
        u = fma(u, s, f32(np.float32(c)))
    u = f32(1.0) + fma(fence(s * s), u, s)
    half = q >> 1
    u = fence(fence(u * pow2i(half)) * pow2i(q - half))
    u = tirx.Select(d < f32(-104.0), f32(0.0), u)
    return tirx.Select(d > f32(100.0), f32(float("inf")), u)
