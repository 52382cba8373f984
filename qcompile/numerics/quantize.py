"""Kernels that move 8-bit activations across the float boundary or between qparams:
quantize, dequantize and requantize of a tensor, in each reference's arithmetic.

  engine      quantize_per_tensor / QuantStub: clamp(rne(fma(x, f(1/s), zp))), the zero point
              inside the FMA; dequantize f(f32(s) * f32(q - zp)); requantize_tensor =
              dequantize then quantize (cat's slow path, an activation between two quantizes)
  integer     requantize_tensor_integer: the change of scale in fixed point, no float
  decomposed  PT2E's quantized_decomposed ops: quantize clamp(rne(f(x * f32(1.0 / s))) + zp)
              with 1/s in double and no FMA; dequantize as the engines'
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .constants import f32 as np_f32, quantize_bound
from .tir_ops import clamp, dtype_range, f32, fence, fma, mul, rescale_fixed, rne_i32


def quantize_value_fma(v, scale: float, zero_point: int, lo: int = 0, hi: int = 255):
    """quantize_per_tensor of one float32 TIR value: clamp(rne(fma(v, f(1/s), zp))), the zero
    point inside the FMA (an int32 value)."""
    inv = np_f32(1.0) / np_f32(scale)
    return clamp(rne_i32(fma(v, f32(inv), f32(zero_point))), lo, hi)


def quantize(x, scale: float, zero_point: int, dtype: str = "uint8"):
    """quantize_per_tensor of a float32 tensor (quantize_value_fma)."""
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    return te.compute(
        x.shape,
        lambda *i: quantize_value_fma(x(*i), scale, zero_point, lo, hi).astype(dtype),
        name="quantize",
    )


def dequantize_value(q, scale: float, zero_point: int):
    """f(f32(s) * f32(q - zp)) of one 8-bit TIR value, no FMA (PyTorch's dequantize, also
    PT2E's decomposed one)."""
    return mul(f32(np_f32(scale)), (q.astype("int32") - zero_point).astype("float32"))


def dequantize(q, scale: float, zero_point: int):
    """dequantize of a tensor (dequantize_value per element)."""
    return te.compute(q.shape, lambda *i: dequantize_value(q(*i), scale, zero_point),
                      name="dequantize")


def requantize_tensor(q, qin, qout, float_clip=None):
    """Move a tensor to other qparams as dequantize + quantize_per_tensor do (cat's slow path).

    `float_clip` (lo, hi), either may be None, is a float relu/clamp between the two (as
    convert_fx leaves an unfused activation: dequantize -> relu -> quantize_per_tensor).
    """
    (si, zi), (so, zo) = qin, qout
    inv = np_f32(1.0) / np_f32(so)
    lo, hi = float_clip or (None, None)

    def body(*idx):
        d = mul(f32(np_f32(si)), (q(*idx).astype("int32") - zi).astype("float32"))
        if lo is not None:
            d = tirx.max(d, f32(np_f32(lo)))
        if hi is not None:
            d = tirx.min(d, f32(np_f32(hi)))
        return clamp(rne_i32(fma(d, f32(inv), f32(zo))), 0, 255).astype("uint8")

    return te.compute(q.shape, body, name="requant_tensor")


def requantize_tensor_integer(q, qin, qout, float_clip=None):
    """Integer-only change of qparams; a float clip becomes a clamp in output steps."""
    (si, zi), (so, zo) = qin, qout
    lo, hi = float_clip or (None, None)
    qlo = 0 if lo is None else quantize_bound(lo, so, zo)
    qhi = 255 if hi is None else quantize_bound(hi, so, zo)

    def body(*idx):
        r = rescale_fixed(q(*idx).astype("int32") - zi, float(si) / float(so))
        return clamp(r.astype("int32") + zo, qlo, qhi).astype("uint8")

    return te.compute(q.shape, body, name="requant_tensor_int")


# ---------------------------------------------------------------------------- decomposed (PT2E)
def inv_scale(scale: float) -> np.float32:
    """quantize's multiplier: 1.0 / scale in double (Python), then rounded to float32."""
    return np.float32(1.0 / float(scale))


def quantize_value(v, scale: float, zero_point: int, lo: int = 0, hi: int = 255):
    """clamp(rne(f(v * inv)) + zp) of a float32 TIR value, as an int32 value."""
    return clamp(rne_i32(fence(v * f32(inv_scale(scale)))) + zero_point, lo, hi)


def quantize_decomposed(x, scale: float, zero_point: int, dtype: str = "uint8"):
    """quantize_per_tensor (quantized_decomposed) of a float32 tensor."""
    lo, hi = dtype_range(dtype)
    return te.compute(x.shape, lambda *i: quantize_value(x(*i), scale, zero_point, lo,
                                                         hi).astype(dtype), name="quantize")


def requantize_tensor_decomposed(q, qin, qout, float_clip=None):
    """quantize(dequantize(q)) to other qparams (cat inputs), the decomposed ops' arithmetic;
    `float_clip` (lo, hi), either may be None, a float clamp between the two."""
    lo, hi = float_clip or (None, None)

    def body(*i):
        d = dequantize_value(q(*i), *qin)
        if lo is not None:
            d = tirx.max(d, f32(np_f32(lo)))
        if hi is not None:
            d = tirx.min(d, f32(np_f32(hi)))
        return quantize_value(d, *qout).astype("uint8")

    return te.compute(q.shape, body, name="requantize_pt2e")
