"""The `pt2e` numerics contract: the float arithmetic of PT2E's `quantized_decomposed` ops.

A PT2E model (torchao prepare_pt2e / convert_pt2e) runs in PyTorch as a float program between
quantize and dequantize nodes (torch/ao/quantization/fx/_decomposed.py):

    dequantize:  f(f32(q - zp) * f32(s))
    quantize:    clamp(rne(f(x * f32(1.0 / s))) + zp, qmin, qmax)      (1.0 / s in double)
    ops between: PyTorch's float kernels (add: f(a + b); relu / hardtanh: max / min; ...)

Everything but conv and linear is reproduced bit for bit here.  A conv or linear sums float
products of dequantized values in an order oneDNN chooses; we compute its exact value from the
int32 accumulator instead, `f(double(acc) * (double(sx) * double(sw)))`, then add the float bias
as PyTorch does.  The two differ by the rounding error of PyTorch's float sum, which moves an
output step only when a value lies within that error of a rounding boundary (measured: see
README, "PT2E").
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .kernels import _padding4, at, avg_pool_geometry, broadcast_shape, dequantize_value
from .tir_ops import clamp, dtype_range, f32, fence, rne_i32

_F = "float32"


def inv_scale(scale: float) -> np.float32:
    """quantize's multiplier: 1.0 / scale in double (Python), then rounded to float32."""
    return np.float32(1.0 / float(scale))


def quantize_value(v, scale: float, zero_point: int, lo: int = 0, hi: int = 255):
    """clamp(rne(f(v * inv)) + zp) of a float32 TIR value, as an int32 value."""
    return clamp(rne_i32(fence(v * f32(inv_scale(scale)))) + zero_point, lo, hi)


def apply_act(v, act):
    """A float relu ("relu", None) or clamp ("clip", (lo, hi)) as PyTorch's kernels do it."""
    if act is None:
        return v
    kind, bounds = act
    if kind == "relu":
        return tirx.max(v, f32(0.0))
    lo, hi = bounds
    return tirx.min(tirx.max(v, f32(np.float32(lo))), f32(np.float32(hi)))


def quantize(x, scale: float, zero_point: int, dtype: str = "uint8"):
    """quantize_per_tensor of a float32 tensor."""
    lo, hi = dtype_range(dtype)
    return te.compute(x.shape, lambda *i: quantize_value(x(*i), scale, zero_point, lo,
                                                         hi).astype(dtype), name="quantize")


def conv_value(acc_value, ats64, bias_value):
    """The float value of one conv/linear output from its exact int32 accumulator."""
    v = (acc_value.astype("float64") * ats64).astype(_F)
    if bias_value is not None:
        v = fence(v + bias_value)
    return v


def epilogue(acc, ats, bias, axis: int, act=None, residual=None, act_after=None, out=None):
    """conv/linear output: act(value) [+ dequantized residual, then act_after], then either
    quantized to `out` = (scale, zero_point) or left float (out None).

    `ats` (float64) and `bias` (float32) are TE placeholders of per-channel arrays (length 1 for
    per-tensor); `residual` is (8-bit TE tensor, scale, zero_point) or None.
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


def binary(a, b, qa, qb, qo, multiply: bool, relu: bool):
    """quantize(act(dequantize(a) op dequantize(b))) of two 8-bit tensors (broadcasting, as
    a squeeze-excite block's x * gate of shape (N, C, 1, 1))."""
    shape = broadcast_shape(a, b)

    def body(*idx):
        da = dequantize_value(at(a, shape, idx), *qa)
        db = dequantize_value(at(b, shape, idx), *qb)
        c = fence(da * db) if multiply else fence(da + db)
        if relu:
            c = tirx.max(c, f32(0.0))
        return quantize_value(c, *qo).astype("uint8")

    return te.compute(shape, body, name="qmul_pt2e" if multiply else "qadd_pt2e")


def requantize_tensor(q, qin, qout):
    """quantize(dequantize(q)) to other qparams (cat inputs)."""
    return te.compute(q.shape, lambda *i: quantize_value(dequantize_value(q(*i), *qin),
                                                         *qout).astype("uint8"),
                      name="requantize_pt2e")


def _vectorized_sum(values: list):
    """PyTorch's float sum of a contiguous row of n < 512 elements (SumKernel.cpp, AVX2
    Vectorized<float>: 8 lanes, 4 interleaved vector accumulators), as one TIR expression:
    lane sums over whole 8-element vectors (vector j into accumulator j % 4 while four fit,
    the rest into accumulator 0), accumulators 1..3 added into 0, then a scalar sum of the
    tail, then the 8 lanes added to it in order.  Matched bit for bit for 2x2..14x14 windows."""
    n, lanes, ilp = len(values), 8, 4
    vectors = n // lanes
    whole = vectors // ilp * ilp
    acc = [[None] * lanes for _ in range(ilp)]

    def add(a, b):
        return b if a is None else fence(a + b)

    for j in range(vectors):
        slot = j % ilp if j < whole else 0
        for lane in range(lanes):
            acc[slot][lane] = add(acc[slot][lane], values[j * lanes + lane])
    for slot in range(1, ilp):
        for lane in range(lanes):
            if acc[slot][lane] is not None:
                acc[0][lane] = add(acc[0][lane], acc[slot][lane])
    total = None
    for k in range(vectors * lanes, n):
        total = add(total, values[k])
    for lane in range(lanes):
        if acc[0][lane] is not None:
            total = add(total, acc[0][lane])
    return total


def adaptive_avg_pool_1x1(x, qin, qout):
    """quantize(adaptive_avg_pool2d(dequantize(x), 1)): PyTorch computes it as
    sum(dims=(-2, -1)) / (H * W), the sum in its vectorized order (_vectorized_sum)."""
    n, c, h, w = (int(d) for d in x.shape)
    if h * w >= 512:
        from ..errors import QCompileError

        raise QCompileError(f"global average pooling of {h}x{w} under pt2e numerics: PyTorch's "
                            "cascade sum over 512 or more elements is not modelled yet")

    def out(b, k, i, j):
        values = [dequantize_value(x[b, k, t // w, t % w], *qin) for t in range(h * w)]
        mean = fence(_vectorized_sum(values) / f32(np.float32(h * w)))
        return quantize_value(mean, *qout).astype("uint8")

    return te.compute((n, c, 1, 1), out, name="adaptive_avg_pool_pt2e")


def avg_pool2d(x, qin, qout, kernel, stride, padding, ceil_mode, count_include_pad):
    """quantize(avg_pool2d(dequantize(x))): PyTorch's float kernel sums each window row by row
    in a float (padding adds nothing), then divides by the divisor (measured bit for bit for
    2x2/s2, 3x3/s1 p1, 3x3/s2 p1 without count_include_pad, 3x3/s3)."""
    n, c, h, w = (int(d) for d in x.shape)
    kh, kw = kernel
    sh, sw = stride
    pt, pl = _padding4(padding)[:2]
    (oh, ow), divisor = avg_pool_geometry(h, w, kernel, stride, padding, ceil_mode,
                                          count_include_pad)

    def out(b, k, i, j):
        total = None
        for a in range(kh):
            for e in range(kw):
                y, z = i * sh + a - pt, j * sw + e - pl
                inside = tirx.all(y >= 0, y < h, z >= 0, z < w)
                v = dequantize_value(x[b, k, tirx.max(tirx.min(y, h - 1), 0),
                                       tirx.max(tirx.min(z, w - 1), 0)], *qin)
                v = tirx.Select(inside, v, f32(0.0))
                total = v if total is None else fence(total + v)
        mean = fence(total / divisor(i, j).astype(_F))
        return quantize_value(mean, *qout).astype("uint8")

    return te.compute((n, c, oh, ow), out, name="avg_pool_pt2e")


def unary_table(fn_name: str, qin: tuple, qout: tuple, bounds=None) -> np.ndarray:
    """The 256-entry table of quantize(op(dequantize(q))), filled by PyTorch's own float ops."""
    import torch
    import torch.ao.quantization.fx._decomposed  # noqa: F401 - registers quantized_decomposed
    import torch.nn.functional as F

    qd = torch.ops.quantized_decomposed
    steps = torch.arange(256, dtype=torch.uint8)
    d = qd.dequantize_per_tensor(steps, float(qin[0]), int(qin[1]), 0, 255, torch.uint8)
    fns = {"relu": torch.relu, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
           "sigmoid": torch.sigmoid,
           "clip": lambda t: torch.clamp(t, float(bounds[0]), float(bounds[1]))}
    y = fns[fn_name](d)
    q = qd.quantize_per_tensor(y, float(qout[0]), int(qout[1]), 0, 255, torch.uint8)
    return q.numpy().astype(np.uint8)
