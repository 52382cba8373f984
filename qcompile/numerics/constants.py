"""Compile-time constants of the numerics contracts, computed exactly as the engines do.

Everything here runs in numpy at compile time; the kernels only consume the results.  The
formulas are docs/numerics.md's (PyTorch 2.13, verified bit for bit), pinned against PyTorch
itself by tests/test_numerics_exact.py, tests/test_ops.py and tests/test_dynamic.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

f32 = np.float32


def as_f32(values) -> np.ndarray:
    """Scales arrive as doubles in PyTorch and are cast to float32 before any arithmetic."""
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def rint_i32(values: np.ndarray) -> np.ndarray:
    """Round half to even and saturate to int32 (the saturating conversion qnnpack's linear uses)."""
    r = np.rint(np.asarray(values, dtype=np.float64))
    return np.clip(r, -(2**31), 2**31 - 1).astype(np.int32)


def accumulator_scale(in_scale: float, weight_scales) -> np.ndarray:
    """f(f32(s_in) * f32(s_w[c])): the scale of one step of the int32 accumulator."""
    return (f32(in_scale) * as_f32(weight_scales)).astype(np.float32)


def int32_bias_qnnpack(bias, in_scale: float, weight_scales) -> np.ndarray:
    """The bias as int32 at scale s_in*s_w[c] as QNNPACK rounds it:
    rint(f(b * f(1 / f(double(s_w) * double(s_x))))), saturated to int32."""
    b = np.asarray(bias, dtype=np.float32)
    sw = np.asarray(weight_scales, dtype=np.float64)
    inv = (f32(1.0) / (sw * np.float64(in_scale)).astype(np.float32)).astype(np.float32)
    return rint_i32((b * inv).astype(np.float32))


def int32_bias_nearest(bias, in_scale: float, weight_scales) -> np.ndarray:
    """The bias as int32 at scale s_in*s_w[c]: b / (s_in * s_w) in double, rounded half to
    even, saturated to int32."""
    b = np.asarray(bias, dtype=np.float32)
    sw = np.asarray(weight_scales, dtype=np.float64)
    return rint_i32(b.astype(np.float64) / (np.float64(in_scale) * sw))


def q31(multiplier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split positive multipliers into (m0, s) with multiplier ~= m0 / 2^s, m0 in [2^30, 2^31)."""
    m = np.asarray(multiplier, dtype=np.float64)
    mant, exp = np.frexp(m)  # m = mant * 2^exp, mant in [0.5, 1)
    m0 = np.round(mant * 2.0**31).astype(np.int64)
    carry = m0 == 2**31
    m0 = np.where(carry, m0 // 2, m0)
    exp = np.where(carry, exp + 1, exp)
    return m0, (31 - exp).astype(np.int64)


def quantize_bound(value: float, scale: float, zero_point: int, qmin=0, qmax=255) -> int:
    """The quantized step of a float clamp bound: rint(f(f(v * f(1/s)) + zp)), clamped."""
    inv = f32(1.0) / f32(scale)
    q = np.rint(f32(f32(f32(value) * inv) + f32(zero_point)))
    return int(np.clip(q, qmin, qmax))


def _f32_exponent(value: np.float32) -> int:
    """The unbiased binary exponent of a normal float32 (its bits 23..30, minus 127)."""
    return int(np.array(value, dtype=np.float32).view(np.uint32) >> 23) - 127


@dataclass
class QnnpackAdd:
    """QNNPACK q8vadd's fixed-point requantization (PyTorch's qnnpack engine, x86 SSE2 kernel).

    ratio_a = f(f32(sa) / f32(so)), likewise b; with e the exponent of the larger ratio,
    shift = 21 - e and m_a = rint(ratio_a * 2^shift) (< 2^22, the larger one >= 2^21).
    acc = m_a (a - za) + m_b (b - zb);  y = (acc >> shift) + ((acc & mask) - (acc < 0) > mask >> 1)
    (round half away from zero), then + zo and clamp.
    """

    a_mult: int
    b_mult: int
    shift: int


def qnnpack_add(a_scale: float, b_scale: float, out_scale: float) -> QnnpackAdd:
    """QNNPACK add parameters; raises ValueError where QNNPACK refuses the scales."""
    ra = np.float32(f32(a_scale) / f32(out_scale))
    rb = np.float32(f32(b_scale) / f32(out_scale))
    for r in (ra, rb):
        if not (2.0**-14 <= float(r) < 2.0**8):
            raise ValueError(f"input-to-output scale ratio {float(r):.7g} outside [2**-14, 2**8)")
    shift = 21 - _f32_exponent(max(ra, rb))
    if shift >= 32:  # QNNPACK asserts shift < 32 (debug builds); release builds shift int32 by
        # 32+ bits, undefined behaviour (measured: PyTorch returns zo or zo + 1 at random)
        raise ValueError(f"larger input-to-output scale ratio {float(max(ra, rb)):.7g} below "
                         "2**-10: QNNPACK's fixed-point shift would be 32 bits or more")
    a_mult = int(np.rint(np.float64(ra) * 2.0**shift))
    b_mult = int(np.rint(np.float64(rb) * 2.0**shift))
    return QnnpackAdd(a_mult, b_mult, shift)


def qnnpack_avgpool_scale(scale: float, pool_size: int) -> np.float32:
    """QNNPACK average pooling's float multiplier: f(f32(s) / f(f32(s) * f(pool_size)))."""
    s = f32(scale)
    return np.float32(s / np.float32(s * f32(pool_size)))
