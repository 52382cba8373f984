"""Dynamic quantization (torch.ao.quantization.quantize_dynamic): the run-time arithmetic.

A dynamically quantized Linear takes a float input, chooses the input's qparams from that very
tensor, quantizes it, multiplies u8 x i8 into int32 and scales the accumulator back to float:

  qparams   min/max of the whole input, extended to include 0; PyTorch's
            ChooseQuantizationParams on [qmin, qmax] (scale in double, the small-scale cut-off,
            the zero point from whichever end of the range rounds less, nearbyint in double)
  quantize  q = clamp(rne(min(fma(x, f(1/f32(scale)), zp), 2^31 - 128)), 0, 255)
            (fbgemm's QuantizeAvx2; at::quantize_per_tensor, which the qnnpack engine calls,
            computes the same)
  int32     acc = sum (q - zp)(w - zw), exact
  output    fbgemm:  out = fma(f(acc), f(f32(scale) * f32(sw[n])), bias[n])   (one rounding)
                     without bias: f(f(acc) * m)
            qnnpack: out = f(f(f(acc) * m) + bias[n])                          (unfused)
  relu      out < 0 ? 0 : out (max(0, out) as vmaxps computes it: -0.0 and NaN pass through)

The range [qmin, qmax] and whether the bias is fused are the contract's (DynamicLinear in
numerics.contracts): fbgemm (and PyTorch's x86 engine, which runs dynamic linear on fbgemm)
honours the module's reduce_range (always set by quantize_dynamic's modules: [0, 127]); qnnpack
ignores it ([0, 255]).  NaN and infinite inputs are not modelled.  Verified against PyTorch 2.13
in tests/test_dynamic.py.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .constants import f32 as np_f32
from .tir_ops import clamp, f32, fence, fma, mul, rne_i32

# PyTorch's SMALL_SCALE_THRESHOLD (a float constant): smaller scales are raised to it.
SMALL_SCALE = np_f32(6.1e-5)
# fbgemm clips the scaled value here before converting (the largest float below 2^31).
INT32_FLOAT_MAX = np_f32(2147483520.0)

def _f64(v):
    return v.astype("float64")


def _d(value: float):
    return tirx.const(float(value), "float64")


# min/max are taken in two stages: per row, this many lanes of the last axis at a time (a
# vectorizable reduction the default schedule parallelizes over rows), then over the partials.
LANES = 16


def _reduce_all(x, reducer, name: str):
    """min or max of every element of `x`, as a 0-d tensor (exact in any order)."""
    *lead, k = (int(d) for d in x.shape)
    lanes = min(LANES, k)
    blocks = -(-k // lanes)
    kb = te.reduce_axis((0, blocks), f"{name}_kb")

    def element(idx, lane):
        col = kb * lanes + lane
        if blocks * lanes != k:
            col = tirx.min(col, k - 1)  # reading the last element again changes no min or max
        return x[(*idx, col)]

    partial = te.compute((*lead, lanes),
                         lambda *i: reducer(element(i[:-1], i[-1]), axis=kb), name=f"{name}_rows")
    axes = [te.reduce_axis((0, d), f"{name}_r{i}") for i, d in enumerate(partial.shape)]
    return te.compute((), lambda: reducer(partial[tuple(axes)], axis=axes), name=name)


def choose_qparams(x, qmin: int, qmax: int):
    """Run-time qparams of the float tensor `x`: [scale (float32, 0-d), zero point (int32, 0-d)].

    PyTorch's ChooseQuantizationParams(min(x), max(x), qmin, qmax), one 0-d stage per step.
    PyTorch keeps the scale as a double but uses it only as float32 once the zero point,
    computed here from the double, is chosen."""
    span = qmax - qmin
    lo = _reduce_all(x, te.min, "x_min")
    hi = _reduce_all(x, te.max, "x_max")
    # the range extended to include 0; the scale in double, 0.1 when it is 0 or 1/scale is inf
    lo = te.compute((), lambda: tirx.min(lo(), f32(0.0)), name="range_min")
    hi = te.compute((), lambda: tirx.max(hi(), f32(0.0)), name="range_max")

    def first_scale():
        scale = (_f64(hi()) - _f64(lo())) / _d(span)
        s32 = scale.astype("float32")
        unusable = tirx.Or(s32 == f32(0.0), tirx.isinf(f32(1.0) / s32))
        return tirx.Select(unusable, _d(0.1), scale)

    scale = te.compute((), first_scale, name="range_scale")
    # scales below SMALL_SCALE are raised to it and the range stretched to match
    small = lambda: scale() < _d(SMALL_SCALE)  # noqa: E731
    amplifier = lambda: f32(SMALL_SCALE) / scale().astype("float32")  # noqa: E731
    stretched = np_f32(SMALL_SCALE * np_f32(span))
    lo_small = te.compute((), lambda: tirx.Select(
        tirx.Or(tirx.Not(small()), lo() == f32(0.0)), lo(),
        tirx.Select(hi() == f32(0.0), f32(-stretched), mul(lo(), amplifier()))), name="small_min")
    hi_small = te.compute((), lambda: tirx.Select(
        tirx.Not(small()), hi(), tirx.Select(
            lo() == f32(0.0), f32(stretched),
            tirx.Select(hi() == f32(0.0), hi(), mul(hi(), amplifier())))), name="small_max")
    final = te.compute((), lambda: tirx.Select(small(), _d(SMALL_SCALE), scale()),
                       name="final_scale")

    def zero_point():
        # from the end of the range whose terms are smaller (less rounding error), nearbyint
        lo_steps, hi_steps = _f64(lo_small()) / final(), _f64(hi_small()) / final()
        err_lo = _d(abs(qmin)) - tirx.abs(lo_steps)
        err_hi = _d(abs(qmax)) - tirx.abs(hi_steps)
        initial = tirx.Select(err_lo < err_hi, _d(qmin) - lo_steps, _d(qmax) - hi_steps)
        return tirx.Select(initial < _d(qmin), tirx.const(qmin, "int32"),
                           tirx.Select(initial > _d(qmax), tirx.const(qmax, "int32"),
                                       tirx.round(initial).astype("int32")))

    zp = te.compute((), zero_point, name="dynamic_zero_point")
    scale32 = te.compute((), lambda: final().astype("float32"), name="dynamic_scale")
    return [scale32, zp]


def quantize(x, scale, zero_point):
    """x -> uint8 with run-time qparams: clamp(rne(min(fma(x, f(1/s), zp), 2^31-128)), 0, 255)."""

    def body(*i):
        inv = f32(1.0) / scale()
        v = fma(x(*i), inv, zero_point().astype("float32"))
        return clamp(rne_i32(tirx.min(v, f32(INT32_FLOAT_MAX))), 0, 255).astype("uint8")

    return te.compute(x.shape, body, name="quantize_dynamic")


def linear_output(acc, scale, zero_point, weight_scale, bias, weight_sum, fused_bias: bool,
                  relu: bool):
    """int32 accumulator -> float32 output of a dynamic linear (see the module docstring).

    `acc[..., n]` is sum q w (when `weight_sum` is given, the zero-point correction
    zp * weight_sum[n] is subtracted here) or already sum (q - zp)(w - zw).  `weight_scale` and
    `bias` (or None) are float32 per output feature; `fused_bias`: the bias is added inside the
    FMA (fbgemm), else after the rounded product (qnnpack)."""

    def body(*idx):
        n = idx[-1]
        a = acc(*idx)
        if weight_sum is not None:
            a = a - zero_point() * weight_sum[n]
        v = a.astype("float32")
        m = mul(scale(), weight_scale[n])  # f(f32(scale) * f32(sw[n])), rounded on its own
        if bias is None:
            out = mul(v, m)
        elif fused_bias:
            out = fma(v, m, bias[n])
        else:  # the product rounded, then the bias added
            out = fence(mul(v, m) + bias[n])
        if relu:
            out = tirx.Select(out < f32(0.0), f32(0.0), out)
        return out

    return te.compute(acc.shape, body, name="dynamic_linear_output")


def weight_arrays(weight: np.ndarray, scales, zero_points) -> dict:
    """Compile-time arrays of a dynamic linear's int8 weight W[N, K]: float32 scales per output
    feature, and whether the zero points are all 0 (then sum(W[n]) corrects the accumulator)."""
    n = weight.shape[0]
    sw = np.broadcast_to(np.asarray(scales, np.float64).astype(np.float32), (n,))
    zw = np.broadcast_to(np.asarray(zero_points, np.int64), (n,))
    return {"scale": np.ascontiguousarray(sw), "zero_point": np.ascontiguousarray(zw),
            "symmetric": bool(np.all(zw == 0)),
            "sum": weight.astype(np.int64).sum(axis=1).astype(np.int32)}
