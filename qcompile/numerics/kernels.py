"""Tensor-expression kernels of each numerics contract.

Each function takes TE tensors plus Python numbers (compile-time constants) and returns the
TE tensor of its result.  The passes wrap them into PrimFuncs with `BlockBuilder.call_te`; the
kernels know nothing of graphs, and the passes know nothing of rounding.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .constants import Requantize, f32 as np_f32
from .tir_ops import (INT32_MIN, clamp, f32, fbgemm_step, fence, fma, i32, mul, rne_i32,
                      sat16_pair)

# PyTorch's vectorized quantized elementwise kernels work in blocks of this many elements and
# finish each parallel chunk with a scalar tail (AVX-512 build), and split tensors of at least
# GRAIN elements into min(threads, ceil(n / GRAIN)) chunks.  See NUMERICS.md, "add".
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


def _channel(idx, axis, per_channel: bool):
    return idx[axis] if per_channel else 0


def quantize(x, scale: float, zero_point: int, dtype: str = "uint8"):
    """quantize_per_tensor: clamp(rne(fma(x, f(1/s), zp))) -- the zero point inside the FMA."""
    inv = np_f32(1.0) / np_f32(scale)
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    return te.compute(
        x.shape,
        lambda *i: clamp(rne_i32(fma(x(*i), f32(inv), f32(zero_point))), lo, hi).astype(dtype),
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


def requantize(acc, rq: Requantize, consts: dict, lo: int, hi: int, axis: int, out_dtype="uint8"):
    """int32 accumulator -> output steps, one contract's arithmetic, clamped to [lo, hi].

    `consts` maps "mult", "bias", "inv_ats", "shift" to TE placeholders of per-channel arrays
    (length 1 for per-tensor).  The clip of a fused relu/relu6/clamp is the [lo, hi] here.
    """
    per_channel = rq.mult.size > 1
    zo = rq.out_zero_point

    def channel_value(name, idx):
        return consts[name][_channel(idx, axis, per_channel or consts[name].shape[0] > 1)]

    fits = rq.kind != "fixed" and rq.scaled_fits_int32()

    def fbgemm_like(idx, v):
        return fbgemm_step(mul(v, channel_value("mult", idx)), zo, lo, hi, fits_int32=fits)

    def body(*idx):
        a = acc(*idx)
        if rq.kind == "fbgemm_tensor":
            v = fma(channel_value("bias", idx), channel_value("inv_ats", idx), a.astype("float32"))
            return fbgemm_like(idx, v)
        if rq.kind == "fbgemm_channel":
            v = a.astype("float32")
            if rq.bias is not None:
                v = v + channel_value("bias", idx)
            return fbgemm_like(idx, v)
        if rq.kind == "float":
            if rq.bias is not None:
                a = a + channel_value("bias", idx)
            return fbgemm_like(idx, a.astype("float32"))
        if rq.kind == "fixed":
            if rq.bias is not None:
                a = a + channel_value("bias", idx)
            s = channel_value("shift", idx)
            rounded = round_shift(a.astype("int64") * channel_value("mult", idx), s)
            r = tirx.max(tirx.min(rounded, tirx.const(2**31 - 1, "int64")),
                         tirx.const(INT32_MIN, "int64")).astype("int32")
            return clamp(clamp(r, -32768, 32767) + zo, lo, hi)
        raise ValueError(rq.kind)

    return te.compute(acc.shape, lambda *i: body(*i).astype(out_dtype), name="requantize")


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


def add_fbgemm(a, b, qa, qb, qo, relu: bool, n_threads: int, multiply: bool = False):
    """quantized add / add_relu as fbgemm's (AVX-512) vector body and scalar tail compute them.

    qa, qb, qo are (scale, zero_point).  Body: d = fma(s, q, f(s * -z)), c = f(da + db),
    y = rne(f(c * inv)) + zo.  Tail: d = f(s * (q - z)), c = f(da + db), y = rint(f(f(c * inv) + zo)).
    """
    (sa, za), (sb, zb), (so, zo) = qa, qb, qo
    sa, sb, so = np_f32(sa), np_f32(sb), np_f32(so)
    inv = np_f32(1.0) / so
    n = int(np.prod([int(d) for d in a.shape]))
    is_body = body_mask_fn(n, n_threads)
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


def broadcast_shape(a, b) -> tuple[int, ...]:
    """numpy broadcasting of two static TE shapes."""
    return tuple(np.broadcast_shapes(tuple(int(d) for d in a.shape),
                                     tuple(int(d) for d in b.shape)))


def at(t, out_shape, idx):
    """t read at an output index, broadcasting its size-1 (and missing leading) dims."""
    shape = [int(d) for d in t.shape]
    idx = idx[len(out_shape) - len(shape):]
    return t(*[0 if d == 1 else i for d, i in zip(shape, idx)])


def mul_fbgemm(a, b, qa, qb, qo, relu: bool):
    """quantized mul (broadcasting): m = f(f(f32(sa) * f32(sb)) * f(1/so));
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


def _fixed_point(real: float):
    from .constants import q31

    m0, s = q31(np.array([real]))
    return int(m0[0]), int(s[0])


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


def _rescale_fixed(x_minus_z, real: float):
    """round(x * real) in integer arithmetic: x * m0 / 2^s, rounded half to even, in int64."""
    m0, s = _fixed_point(real)
    return round_shift(x_minus_z.astype("int64") * tirx.const(m0, "int64"), s)


def add_integer(a, b, qa, qb, qo, relu: bool, multiply: bool = False):
    """Integer-only add (and mul).

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
            r = _rescale_fixed(xa * xb, float(sa) * float(sb) / float(so))
        else:
            r = round_shift(xa * tirx.const(ma, "int64") + xb * tirx.const(mb, "int64"), shift)
        r = tirx.max(tirx.min(r, tirx.const(1 << 20, "int64")), tirx.const(-(1 << 20), "int64"))
        return clamp(r.astype("int32") + zo, lo, 255).astype("uint8")

    return te.compute(shape, body, name="qadd_int")


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
    from .constants import quantize_bound

    (si, zi), (so, zo) = qin, qout
    lo, hi = float_clip or (None, None)
    qlo = 0 if lo is None else quantize_bound(lo, so, zo)
    qhi = 255 if hi is None else quantize_bound(hi, so, zo)

    def body(*idx):
        r = _rescale_fixed(q(*idx).astype("int32") - zi, float(si) / float(so))
        return clamp(r.astype("int32") + zo, qlo, qhi).astype("uint8")

    return te.compute(q.shape, body, name="requant_tensor_int")


def adaptive_avg_pool_1x1(x, qin, qout, contract: str):
    """adaptive_avg_pool2d to 1x1 on a channels-last quint8 tensor (keeps the input qparams).

    acc = sum(q) - zx*HW; m = f(1/HW), s' = f(1/m), inv = f(1/s').  fbgemm/qnnpack: the first
    floor(C/8)*8 channels rne(fma(f(acc), inv, zx)), the others rint(f(f(acc*inv) + zx)).
    """
    n, c, h, w = (int(d) for d in x.shape)
    zx = qin[1]
    rh, rw = te.reduce_axis((0, h), "rh"), te.reduce_axis((0, w), "rw")
    total = te.compute((n, c, 1, 1), lambda b, k, i, j: te.sum(
        x[b, k, rh, rw].astype("int32"), axis=[rh, rw]), name="pool_sum")
    if contract == "integer":
        return te.compute(total.shape, lambda *i: clamp(
            _rescale_fixed(total(*i) - zx * h * w, 1.0 / (h * w)).astype("int32") + zx,
            0, 255).astype("uint8"), name="avg_pool_int")
    m = np_f32(1.0) / np_f32(h * w)
    inv = np_f32(1.0) / (np_f32(1.0) / m)
    body_channels = (c // 8) * 8

    def out(b, k, i, j):
        acc = (total[b, k, i, j] - zx * h * w).astype("float32")
        vec = rne_i32(fma(acc, f32(inv), f32(zx)))
        tail = tirx.round(mul(acc, f32(inv)) + f32(zx)).astype("int32")
        return clamp(tirx.Select(k < body_channels, vec, tail), 0, 255).astype("uint8")

    return te.compute(total.shape, out, name="adaptive_avg_pool")


def _padding4(padding) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from Relax's 2- or 4-element padding."""
    pads = [int(p) for p in padding]
    return tuple(pads * 2) if len(pads) == 2 else tuple(pads)


def _window_sum(x, zx: int, kernel, stride, pads, out_hw):
    """int32 sums of (q - zx) over each pooling window; padded positions contribute 0."""
    n, c, h, w = (int(d) for d in x.shape)
    (kh, kw), (sh, sw) = kernel, stride
    pt, pl = pads[0], pads[1]
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")

    def tap(b, k, i, j):
        y, z = i * sh + rh - pt, j * sw + rw - pl
        inside = tirx.all(y >= 0, y < h, z >= 0, z < w)
        value = x[b, k, tirx.max(tirx.min(y, h - 1), 0), tirx.max(tirx.min(z, w - 1), 0)]
        return tirx.Select(inside, value.astype("int32") - zx, 0)

    return te.compute((n, c) + tuple(out_hw),
                      lambda b, k, i, j: te.sum(tap(b, k, i, j), axis=[rh, rw]), name="pool_sum")


def avg_pool_geometry(h: int, w: int, kernel, stride, padding, ceil_mode, count_include_pad):
    """PyTorch's avg_pool2d output size (oh, ow) and its divisor(i, j) as a TIR expression."""
    kh, kw = kernel
    sh, sw = stride
    pt, pl, pb, pr = _padding4(padding)

    def out_size(size, k, s, p0, p1):
        span = size + p0 + p1 - k
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= size + p0:
            o -= 1
        return o

    def divisor(i, j):
        y0, z0 = i * sh - pt, j * sw - pl
        if count_include_pad:
            y1 = tirx.min(y0 + kh, h + pb)
            z1 = tirx.min(z0 + kw, w + pr)
            return (y1 - y0) * (z1 - z0)
        y1, z1 = tirx.min(y0 + kh, h), tirx.min(z0 + kw, w)
        return (y1 - tirx.max(y0, 0)) * (z1 - tirx.max(z0, 0))

    return (out_size(h, kh, sh, pt, pb), out_size(w, kw, sw, pl, pr)), divisor


def avg_pool2d(x, qin, qout, contract: str, kernel, stride, padding, ceil_mode,
               count_include_pad):
    """avg_pool2d on a channels-last quint8 tensor (keeps the input qparams).

    acc = sum(q - zx) over the window; m = f(1/div).  First floor(C/16)*16 channels:
    rne(f(acc*m)) + zx; the others rint(f(f(acc*f(1/f(1/m))) + zx)).
    """
    n, c, h, w = (int(d) for d in x.shape)
    zx = qin[1]
    (oh, ow), divisor = avg_pool_geometry(h, w, kernel, stride, padding, ceil_mode,
                                          count_include_pad)
    total = _window_sum(x, zx, kernel, stride, _padding4(padding), (oh, ow))

    body_channels = (c // 16) * 16

    def out(b, k, i, j):
        div = divisor(i, j).astype("float32")
        acc = total[b, k, i, j]
        if contract == "integer":
            return clamp(divide_round_even(acc, divisor(i, j)) + zx, 0, 255).astype("uint8")
        m = fence(f32(1.0) / div)
        vec = rne_i32(mul(acc.astype("float32"), m)) + zx
        inv = fence(f32(1.0) / fence(f32(1.0) / m))
        tail = tirx.round(mul(acc.astype("float32"), inv) + f32(zx)).astype("int32")
        return clamp(tirx.Select(k < body_channels, vec, tail), 0, 255).astype("uint8")

    return te.compute((n, c, oh, ow), out, name="avg_pool")


# ---------------------------------------------------------------------------- fbgemm depthwise
def fbgemm_depthwise_fast_path(in_channels: int, out_channels: int, groups: int, kernel,
                               strides, padding, dilation) -> bool:
    """Does PyTorch's fbgemm engine run this conv through its depthwise kernel?

    Measured on PyTorch 2.13 with inputs that make the int16 saturation visible: groups = C,
    out-channels C or 2C, C % 8 == 0, a square 3x3/5x5/7x7 kernel, each stride 1 or 2 (they
    may differ), padding (k-1)/2 on every side, no dilation.  Anything else is exact.
    """
    kh, kw = (int(k) for k in kernel)
    pads = [int(p) for p in padding]
    return (groups == in_channels and in_channels % 8 == 0
            and out_channels in (in_channels, 2 * in_channels)
            and kh == kw and kh in (3, 5, 7)
            and all(int(s) in (1, 2) for s in strides)
            and all(int(d) == 1 for d in dilation)
            and all(p == (kh - 1) // 2 for p in pads))


DEPTHWISE_LANES = 16  # output columns per vector (int32 lanes of a 512-bit register)


def padded_planes(x, pad4, fill: int, stride_w: int, out_w: int, kernel_w: int,
                  slack: int = 0):
    """x[N, C, H, W] padded with `fill`, columns de-interleaved by the stride: "pack_data"
    [N, C, H + pad, stride, ceil(cols / stride)] with cols = (out_w - 1) stride + kernel_w,
    so element [.., y, z % stride, z // stride] is padded column z.  A window tap then reads
    consecutive memory for consecutive outputs, at stride 1 and 2 alike.  `slack` more columns
    per plane let a kernel load whole vectors past the last tap (what it loads there it never
    uses, and a schedule may leave those columns unwritten).

    At stride > 1 the planes are built in two steps: "pack_pad" pads each row (contiguous, the
    bounds checks vectorize), then "pack_data" de-interleaves it, a plain strided copy LLVM's
    loop vectorizer turns into shuffles.  Done in one step, the strided read with bounds
    checks was a scalar gather: it made a stride-2 depthwise conv 2x slower than a stride-1
    one with 4x the outputs."""
    n, c, h, wd = (int(d) for d in x.shape)
    pt, pl, pb, _pr = pad4
    cols = (out_w - 1) * stride_w + kernel_w
    groups = -(-cols // stride_w) + slack

    def pad(b, ch, y, z):
        yy, zz = y - pt, z - pl
        inside = tirx.all(yy >= 0, yy < h, zz >= 0, zz < wd)
        value = x[b, ch, tirx.max(tirx.min(yy, h - 1), 0), tirx.max(tirx.min(zz, wd - 1), 0)]
        return tirx.if_then_else(inside, value, tirx.const(fill, x.dtype))

    if stride_w == 1:
        return te.compute((n, c, h + pt + pb, 1, groups),
                          lambda b, ch, y, _phase, z: pad(b, ch, y, z), name="pack_data")
    rows = te.compute((n, c, h + pt + pb, groups * stride_w), pad, name="pack_pad")
    return te.compute((n, c, h + pt + pb, stride_w, groups),
                      lambda b, ch, y, phase, zq: rows[b, ch, y, zq * stride_w + phase],
                      name="pack_data")


def window_taps(x, kernel_hw, strides, padding, fill: int, slack: int = 0):
    """What the window kernels share: (oh, ow, ow_ext, tap).  The output is computed ow_ext
    wide (ow rounded up to whole DEPTHWISE_LANES vectors, cropped afterwards) from `x` padded
    with `fill` into de-interleaved planes (padded_planes, `slack` extra columns); tap(b, ch,
    i, j, ky, kx) reads the input under output (i, j) at kernel tap (ky, kx), consecutive in
    memory along j.  ky, kx are reduction variables or Python ints (then the indices are
    plain constants)."""
    _n, _c, h, wd = (int(d) for d in x.shape)
    kh, kw = (int(k) for k in kernel_hw)
    sh, sw = (int(s) for s in strides)
    pt, pl, pb, pr = _padding4(padding)
    oh, ow = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    ow_ext = -(-ow // DEPTHWISE_LANES) * DEPTHWISE_LANES
    xpad = padded_planes(x, (pt, pl, pb, pr), fill, sw, ow_ext, kw, slack)

    def tap(b, ch, i, j, ky, kx):
        if isinstance(kx, int):
            return xpad[b, ch, i * sh + ky, kx % sw, j + kx // sw]
        return xpad[b, ch, i * sh + ky, tirx.floormod(kx, sw), j + tirx.floordiv(kx, sw)]

    return oh, ow, ow_ext, tap


def max_pool2d(x, kernel, strides, padding):
    """Max pooling of 8-bit data (exact: max needs no arithmetic), vectorizable along rows.

    Padding reads the dtype's minimum, which never wins.  The output width is computed padded
    to whole vectors from de-interleaved planes (`padded_planes`) and cropped ("pool_max_taps"
    is the reduction the schedule vectorizes, as for the depthwise kernel)."""
    n, c = (int(d) for d in x.shape[:2])
    kh, kw = (int(k) for k in kernel)
    lowest = int(np.iinfo(str(x.dtype)).min)
    oh, ow, ow_ext, tap = window_taps(x, (kh, kw), strides, padding, lowest)
    ry, rx = te.reduce_axis((0, kh), "ky"), te.reduce_axis((0, kw), "kx")
    taps = te.compute(
        (n, c, oh, ow_ext),
        lambda b, ch, i, j: te.max(tap(b, ch, i, j, ry, rx), axis=[ry, rx]),
        name="pool_max_taps")
    return te.compute((n, c, oh, ow), lambda b, ch, i, j: taps[b, ch, i, j], name="pool_max")


def fbgemm_pair_sum(x_at, w_at, taps: int):
    """sum over fbgemm's pairs of taps of sat16(x_t0 w_t0 + x_t1 w_t1), in int32.

    Taps are paired row-major, (0, 1), (2, 3), ...; an odd count ends with a pair whose second
    weight is 0 and whose second activation is tap taps-1's.  x_at(t) is the u8 activation
    under tap t, w_at(t) its i8 weight (t a Python int).  One expression, no reduction axis:
    the fbgemm depthwise kernel computes it, and the x86 tensor intrinsic that replaces it
    (schedules.depthwise_quads) is described by it."""
    total = None
    for t0 in range(0, taps, 2):
        t1 = t0 + 1
        pair = sat16_pair(x_at(t0), w_at(t0), x_at(min(t1, taps - 1)), w_at(t1))
        total = pair.astype("int32") if total is None else total + pair.astype("int32")
    return total


def depthwise_conv_fbgemm(x, w, wsum_corr, zw, zx: int, kernel: int, strides, padding):
    """int32 accumulator of fbgemm's depthwise fast path, saturation quirk included.

    fbgemm multiplies the raw u8 activations (padding reads the input zero point) by the raw
    i8 weights with vpmaddubsw: taps are taken row-major two at a time and each pair's sum of
    products saturates to int16; the pair sums add in int32.  The zero-point corrections come
    afterwards, exactly:
        acc = sum_pairs sat16(x_t0 w_t0 + x_t1 w_t1) - zx sum(w) - zw sum(x) + T zx zw
    `w` is (OC, T4) int8, the row-major taps padded with zero weights to a multiple of 4 (the
    pairs read the first T rounded up to even; an x86 kernel taking four taps at a time reads
    all); `wsum_corr` (OC,) int32 holds T zx zw - zx sum(w); `zw` (OC,) int32 the weight zero
    points (None when all are 0).  Out-channel oc reads input channel oc // (OC / C).

    "dw_conv2d_pairs" is one expression per output (fbgemm_pair_sum), a spatial block: a
    schedule vectorizes or tensorizes it DEPTHWISE_LANES outputs at a time.  Its planes carry
    DEPTHWISE_LANES columns of slack, so a 2 x DEPTHWISE_LANES-byte load at any vector of
    outputs stays inside them.
    """
    n, c = (int(d) for d in x.shape[:2])
    oc_count = int(w.shape[0])
    k = kernel
    mult = oc_count // c
    taps = k * k
    # The output width is computed padded to a whole number of vectors (window_taps), from an
    # input padded with zx; the extra columns are cropped before the epilogue.
    oh, ow, ow_ext, tap = window_taps(x, (k, k), strides, padding, zx, slack=DEPTHWISE_LANES)

    def pair_sum(b, oc, i, j):
        def x_at(t):
            return tap(b, tirx.floordiv(oc, mult), i, j, *divmod(t, k))

        return fbgemm_pair_sum(x_at, lambda t: w[oc, t], taps)

    raw = te.compute((n, oc_count, oh, ow_ext), pair_sum, name="dw_conv2d_pairs",
                     attrs={"fbgemm_depthwise": [k, k, int(strides[1])]})
    if zw is None:
        return te.compute((n, oc_count, oh, ow),
                          lambda b, oc, i, j: raw[b, oc, i, j] + wsum_corr[oc],
                          name="dw_conv2d_acc")
    t = te.reduce_axis((0, taps), "tap")
    xsum = te.compute((n, oc_count, oh, ow),
                      lambda b, oc, i, j: te.sum(
                          tap(b, tirx.floordiv(oc, mult), i, j, tirx.floordiv(t, k),
                              tirx.floormod(t, k)).astype("int32"), axis=t),
                      name="dw_conv2d_xsum")
    return te.compute((n, oc_count, oh, ow), lambda b, oc, i, j: raw[b, oc, i, j] + wsum_corr[oc]
                      - zw[oc] * xsum[b, oc, i, j], name="dw_conv2d_acc")


def depthwise_conv_exact(x, w, corr, zx: int, strides, padding):
    """The exact int32 accumulator of a depthwise conv, sum_t (x_t - zx) w_t, as a window kernel.

    `w` (OC, KH, KW) int32 holds the weights minus their zero points; `corr` (OC,) int32 is
    -zx * sum_t w_t, so that acc = sum_t x_t w_t + corr with x padded by zx (padding then adds
    nothing).  Out-channel oc reads input channel oc // (OC / C).  x may be u8 or i8.  Same
    layout as the fbgemm kernel: output width padded to whole vectors, de-interleaved planes,
    cropped before the epilogue ("dw_conv2d_taps" is the reduction the schedule vectorizes)."""
    n, c = (int(d) for d in x.shape[:2])
    oc_count, kh, kw = (int(d) for d in w.shape)
    mult = oc_count // c
    oh, ow, ow_ext, tap = window_taps(x, (kh, kw), strides, padding, zx)
    ry, rx = te.reduce_axis((0, kh), "ky"), te.reduce_axis((0, kw), "kx")
    taps = te.compute(
        (n, oc_count, oh, ow_ext),
        lambda b, oc, i, j: te.sum(
            tap(b, tirx.floordiv(oc, mult), i, j, ry, rx).astype("int32") * w[oc, ry, rx],
            axis=[ry, rx]),
        name="dw_conv2d_taps")
    return te.compute((n, oc_count, oh, ow), lambda b, oc, i, j: taps[b, oc, i, j] + corr[oc],
                      name="dw_conv2d_acc")


def exact_tap_sum(x_at, w_at, taps: int):
    """sum_t x_t w_t in int32 over `taps` taps (t a Python int): the exact depthwise sum as one
    expression, which the x86 tensor intrinsic that replaces it describes itself with
    (schedules.depthwise_quads)."""
    total = None
    for t in range(taps):
        term = x_at(t).astype("int32") * w_at(t).astype("int32")
        total = term if total is None else total + term
    return total


def depthwise_conv_exact_int8(x, w, corr, zx: int, kernel_hw, strides, padding):
    """depthwise_conv_exact for u8 activations and weights that fit int8 once shifted by their
    zero points (symmetric int8 weights: PT2E, the integer contract): `w` (OC, T4) int8 holds
    the row-major taps, zero-padded to a multiple of 4.  The sum is one expression per output
    ("dw_conv2d_taps", a spatial block: exact_tap_sum), so a schedule vectorizes or tensorizes
    it DEPTHWISE_LANES outputs at a time; the planes carry DEPTHWISE_LANES columns of slack, as
    depthwise_conv_fbgemm's."""
    n, c = (int(d) for d in x.shape[:2])
    oc_count = int(w.shape[0])
    kh, kw = (int(k) for k in kernel_hw)
    mult = oc_count // c
    oh, ow, ow_ext, tap = window_taps(x, (kh, kw), strides, padding, zx, slack=DEPTHWISE_LANES)

    def tap_sum(b, oc, i, j):
        def x_at(t):
            return tap(b, tirx.floordiv(oc, mult), i, j, *divmod(t, kw))

        return exact_tap_sum(x_at, lambda t: w[oc, t], kh * kw)

    taps = te.compute((n, oc_count, oh, ow_ext), tap_sum, name="dw_conv2d_taps",
                      attrs={"exact_depthwise": [kh, kw, int(strides[1])]})
    return te.compute((n, oc_count, oh, ow), lambda b, oc, i, j: taps[b, oc, i, j] + corr[oc],
                      name="dw_conv2d_acc")


# ---------------------------------------------------------------------------- qnnpack engine
def add_qnnpack(a, b, qa, qb, qo, relu: bool):
    """quantized add / add_relu as PyTorch's qnnpack engine runs them (QNNPACK q8vadd, SSE2).

    Fixed point (constants.qnnpack_add): acc = m_a (a - za) + m_b (b - zb) in int32 (it fits),
    shifted right rounding half away from zero, + zo, clamped to [0 or zo, 255].
    """
    from .constants import qnnpack_add

    (sa, za), (sb, zb), (so, zo) = qa, qb, qo
    p = qnnpack_add(sa, sb, so)
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


def avg_pool2d_qnnpack(x, qin, kernel, stride, padding):
    """QNNPACK average pooling (qnnpack engine: avg_pool2d without ceil_mode, adaptive 1x1).

    acc = sum(q - zx) over the window, padding contributing 0; the divisor is always kh*kw
    (count_include_pad and divisor_override are ignored): y = rne(f(f32(acc) * m)) + zx with
    m = f(f32(s) / f(f32(s) * f(kh*kw))) (constants.qnnpack_avgpool_scale).
    """
    from .constants import qnnpack_avgpool_scale

    _, _, h, w = (int(d) for d in x.shape)
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in stride)
    pt, pl, pb, pr = _padding4(padding)
    scale, zx = qin
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    m = qnnpack_avgpool_scale(scale, kh * kw)
    total = _window_sum(x, zx, (kh, kw), (sh, sw), (pt, pl, pb, pr), (oh, ow))

    def out(*idx):
        r = rne_i32(mul(total(*idx).astype("float32"), f32(m)))
        return clamp(clamp(r, -32768, 32767) + zx, 0, 255).astype("uint8")

    return te.compute(total.shape, out, name="avg_pool_qnnpack")


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
