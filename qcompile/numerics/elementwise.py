"""Elementwise kernels on 8-bit tensors: add, mul, unary tables, clamps.

  add, mul    fbgemm's (ATen's vectorized kernels: an AVX-512 body and a scalar tail per
              parallel chunk, so results depend on the thread count), QNNPACK's fixed-point
              add, integer-only ones, and the decomposed float ops of a PT2E program
  lookup      any op of one 8-bit input as a 256-entry table (numerics.tables fills them)
  clamps      relu / hardtanh in the input's own steps, and qnnpack's channels-last clamp
Every add and mul kernel takes (a, b, qa, qb, qo, relu, threads) with q* = (scale, zero_point).
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from ..errors import EngineLimitError, QCompileError
from .constants import f32 as np_f32, qnnpack_add
from .quantize import dequantize_value, quantize_value
from .tir_ops import (clamp, f32, fbgemm_step, fence, fma, i32, mul, rescale_fixed, rne_i32,
                      round_shift)

# PyTorch's vectorized quantized elementwise kernels work in blocks of this many elements and
# finish each parallel chunk with a scalar tail (AVX-512 build), and split tensors of at least
# GRAIN elements into min(threads, ceil(n / GRAIN)) chunks.  See docs/numerics.md, "add".
BLOCK = 64
GRAIN = 32768


def body_mask_fn(n: int, threads: int, block: int = BLOCK):
    """Return f(flat_index) -> bool: is this element in a vector body (True) or a scalar tail.

    Mirrors at::parallel_for over `n` elements with grain GRAIN, then per chunk a vector loop of
    `block`-element steps and a scalar remainder.  Returns None when every element is in a body.
    """
    tasks = 1 if n < GRAIN or threads <= 1 else min(threads, -(-n // GRAIN))
    chunk = -(-n // tasks)
    starts = range(0, n, chunk)
    if all((min(chunk, n - s) % block) == 0 for s in starts):
        return None

    def is_body(i):
        start = tirx.floordiv(i, chunk) * chunk
        length = tirx.min(i32(chunk), i32(n) - start)
        return (i - start) < tirx.floordiv(length, block) * block

    return is_body


def flat_index(shape, idx):
    """Row-major flat index of a TE index tuple."""
    flat = idx[0]
    for dim, i in zip(shape[1:], idx[1:]):
        flat = flat * int(dim) + i
    return flat


def broadcast_shape(a, b) -> tuple[int, ...]:
    """numpy broadcasting of two static TE shapes."""
    return tuple(np.broadcast_shapes(tuple(int(d) for d in a.shape),
                                     tuple(int(d) for d in b.shape)))


def at(t, out_shape, idx):
    """t read at an output index, broadcasting its size-1 (and missing leading) dims."""
    shape = [int(d) for d in t.shape]
    idx = idx[len(out_shape) - len(shape):]
    return t(*[0 if d == 1 else i for d, i in zip(shape, idx)])


def _same_shape(a, b, what: str) -> None:
    """PyTorch runs a broadcasting quantized add through another loop (no vector body), which
    is not modelled: refuse it."""
    if [int(d) for d in a.shape] != [int(d) for d in b.shape]:
        raise QCompileError(f"{what} with broadcasting inputs {[int(d) for d in a.shape]} + "
                            f"{[int(d) for d in b.shape]} is not supported yet")


def add_fbgemm(a, b, qa, qb, qo, relu: bool, threads: int):
    """quantized add / add_relu as fbgemm's (AVX-512) vector body and scalar tail compute them.

    qa, qb, qo are (scale, zero_point).  Body: d = fma(s, q, f(s * -z)), c = f(da + db),
    y = rne(f(c * inv)) + zo.  Tail: d = f(s * (q - z)), c = f(da + db),
    y = rint(f(f(c * inv) + zo)).
    """
    _same_shape(a, b, "quantized add")
    (sa, za), (sb, zb), (so, zo) = qa, qb, qo
    sa, sb, so = np_f32(sa), np_f32(sb), np_f32(so)
    inv = np_f32(1.0) / so
    n = int(np.prod([int(d) for d in a.shape]))
    is_body = body_mask_fn(n, threads)
    lo = zo if relu else 0

    def vector(x, s, z):
        return fma(f32(s), x.astype("float32"), f32(np_f32(s * np_f32(-z))))

    def scalar(x, s, z):
        return mul(f32(s), (x.astype("int32") - z).astype("float32"))

    def body(*idx):
        xa, xb = a(*idx), b(*idx)
        c = vector(xa, sa, za) + vector(xb, sb, zb)
        yv = fbgemm_step(mul(c, f32(inv)), zo, lo, 255, wrapping_add=True)
        if is_body is None:
            return yv.astype("uint8")
        ct = scalar(xa, sa, za) + scalar(xb, sb, zb)
        yt = clamp(rne_i32(mul(ct, f32(inv)) + f32(zo)), lo, 255)
        return tirx.Select(is_body(flat_index(a.shape, idx)), yv, yt).astype("uint8")

    return te.compute(a.shape, body, name="qadd")


def mul_fbgemm(a, b, qa, qb, qo, relu: bool, threads: int = 1):
    """quantized mul (broadcasting; ATen's mul kernel has no scalar tail: `threads` unused):
    m = f(f(f32(sa) * f32(sb)) * f(1/so));
    y = rne(f(f32(c) * m)) + zo with c the product of the zero-point-shifted inputs."""
    (sa, za), (sb, zb), (so, zo) = qa, qb, qo
    m = np_f32(np_f32(np_f32(sa) * np_f32(sb)) * (np_f32(1.0) / np_f32(so)))
    lo = zo if relu else 0
    shape = broadcast_shape(a, b)

    def body(*idx):
        c = (at(a, shape, idx).astype("int32") - za) * (at(b, shape, idx).astype("int32") - zb)
        return fbgemm_step(mul(c.astype("float32"), f32(m)), zo, lo, 255,
                           wrapping_add=True).astype("uint8")

    return te.compute(shape, body, name="qmul")


# ---------------------------------------------------------------------------- qnnpack engine
def add_qnnpack(a, b, qa, qb, qo, relu: bool, threads: int = 1):
    """quantized add / add_relu as PyTorch's qnnpack engine runs them (QNNPACK q8vadd, SSE2).

    Fixed point (constants.qnnpack_add): acc = m_a (a - za) + m_b (b - zb) in int32 (it fits),
    shifted right rounding half away from zero, + zo, clamped to [0 or zo, 255].
    """
    _same_shape(a, b, "quantized add")
    (sa, za), (sb, zb), (so, zo) = qa, qb, qo
    try:
        p = qnnpack_add(sa, sb, so)
    except ValueError as err:
        raise EngineLimitError(f"quantized add under qnnpack numerics: PyTorch's QNNPACK add "
                               f"cannot take these scales ({err}); use fbgemm numerics") from None
    mask = (1 << p.shift) - 1
    lo = zo if relu else 0

    def body(*idx):
        acc = ((a(*idx).astype("int32") - za) * p.a_mult
               + (b(*idx).astype("int32") - zb) * p.b_mult)
        rem = tirx.bitwise_and(acc, i32(mask)) - tirx.Select(acc < 0, i32(1), i32(0))
        q = tirx.shift_right(acc, i32(p.shift)) + tirx.Select(rem > mask >> 1, i32(1), i32(0))
        # packs to int16 and adds the zero point saturating: no effect once clamped to u8
        return clamp(clamp(q, -32768, 32767) + zo, lo, 255).astype("uint8")

    return te.compute(a.shape, body, name="qadd_qnnpack")


# its PrimFunc's name: the schedules keep this add's block materialized (schedules.common)
add_qnnpack.primfunc_name = "qadd_qnnpack"


def _integer_binary(a, b, qa, qb, qo, relu: bool, multiply: bool):
    """Integer-only add or mul.

    add: both inputs scaled to the output scale by multipliers at one common shift, so the sum
    is rounded once: (xa*Ma + xb*Mb) / 2^s, Ma = round(sa/so * 2^s) < 2^31.
    mul: the product of the shifted inputs times a Q31 multiplier of sa*sb/so.
    """
    (sa, za), (sb, zb), (so, zo) = qa, qb, qo
    lo = zo if relu else 0
    ra, rb = float(sa) / float(so), float(sb) / float(so)
    shift = 31 - int(np.frexp(max(ra, rb))[1])
    ma, mb = int(round(ra * 2.0**shift)), int(round(rb * 2.0**shift))

    shape = broadcast_shape(a, b)

    def body(*idx):
        xa = (at(a, shape, idx).astype("int32") - za).astype("int64")
        xb = (at(b, shape, idx).astype("int32") - zb).astype("int64")
        if multiply:
            r = rescale_fixed(xa * xb, float(sa) * float(sb) / float(so))
        else:
            r = round_shift(xa * tirx.const(ma, "int64") + xb * tirx.const(mb, "int64"), shift)
        r = tirx.max(tirx.min(r, tirx.const(1 << 20, "int64")), tirx.const(-(1 << 20), "int64"))
        return clamp(r.astype("int32") + zo, lo, 255).astype("uint8")

    return te.compute(shape, body, name="qadd_int")


def add_integer(a, b, qa, qb, qo, relu: bool, threads: int = 1):
    """Integer-only add (see _integer_binary)."""
    _same_shape(a, b, "quantized add")
    return _integer_binary(a, b, qa, qb, qo, relu, multiply=False)


def mul_integer(a, b, qa, qb, qo, relu: bool, threads: int = 1):
    """Integer-only mul, broadcasting (see _integer_binary)."""
    return _integer_binary(a, b, qa, qb, qo, relu, multiply=True)


def _decomposed_binary(a, b, qa, qb, qo, multiply: bool, relu: bool):
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


def add_decomposed(a, b, qa, qb, qo, relu: bool, threads: int = 1):
    """A PT2E program's add: float ops one element at a time (broadcasting changes nothing)."""
    return _decomposed_binary(a, b, qa, qb, qo, multiply=False, relu=relu)


def mul_decomposed(a, b, qa, qb, qo, relu: bool, threads: int = 1):
    """A PT2E program's mul (broadcasting: a squeeze-excite gate of shape (N, C, 1, 1))."""
    return _decomposed_binary(a, b, qa, qb, qo, multiply=True, relu=relu)


def lookup(q, table_body, table_tail, n_threads: int):
    """y = table[q]: any unary op on 8-bit input is exact as a 256-entry table.

    `table_tail` (or None) is used for elements in PyTorch's scalar tails (see body_mask_fn).
    """
    n = int(np.prod([int(d) for d in q.shape]))
    is_body = body_mask_fn(n, n_threads) if table_tail is not None else None

    def body(*idx):
        k = q(*idx).astype("int32")
        if is_body is None:
            return table_body[k]
        return tirx.Select(is_body(flat_index(q.shape, idx)), table_body[k], table_tail[k])

    return te.compute(q.shape, body, name="lookup")


def clamp_steps(x, lo: int, hi: int):
    """An 8-bit tensor clamped to [lo, hi] in its own steps (a relu or hardtanh that keeps the
    qparams, or a unary table that is such a clamp)."""
    return te.compute(x.shape, lambda *i: tirx.max(tirx.min(x(*i), tirx.const(hi, x.dtype)),
                                                   tirx.const(lo, x.dtype)), name="qclip")


def channels_last_clamp(x, lo: int, hi: int):
    """qnnpack engine's clamp (relu6, hardtanh) of a tensor PyTorch holds channels-last.

    PyTorch clamps the NHWC memory in order but returns it as a fresh contiguous NCHW tensor of
    the same sizes: the NCHW output, read in memory order, is the clamped input in NHWC order.
    This kernel returns that memory as an (N, H, W, C) tensor; reshaping it (row-major) to
    (N, C, H, W) gives PyTorch's result.
    """
    n, c, h, w = (int(d) for d in x.shape)
    lo_c, hi_c = tirx.const(lo, x.dtype), tirx.const(hi, x.dtype)
    return te.compute((n, h, w, c),
                      lambda b, i, j, k: tirx.max(tirx.min(x[b, k, i, j], hi_c), lo_c),
                      name="qclip_nhwc")
