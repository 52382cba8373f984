"""Pooling kernels on 8-bit tensors, in each reference's arithmetic.

  max_pool2d           exact (max needs no arithmetic): the same for every contract
  adaptive (to 1x1)    fbgemm's vector/tail formula; QNNPACK's average pool; integer-only;
                       the decomposed float mean (PyTorch's vectorized sum order)
  avg_pool2d           fbgemm's; QNNPACK's (divisor always kh*kw); integer-only; decomposed
Each adaptive kernel takes (x, qin, qout), each avg_pool kernel (x, qin, qout, kernel, stride,
padding, ceil_mode, count_include_pad); pooling keeps the input qparams under the engines.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .constants import f32 as np_f32, qnnpack_avgpool_scale
from .quantize import dequantize_value, quantize_value, quantize_value_fma
from .tir_ops import clamp, divide_round_even, f32, fence, fma, mul, rescale_fixed, rne_i32
from .windows import padding4, pooled_size, reaching_padding, window_taps


def window_sum(x, zx: int, kernel, stride, pads, out_hw):
    """int32 sums of (q - zx) over each pooling window; padded positions contribute 0.

    The input is padded with zx (so a padded tap adds zx - zx) into window_taps' planes, as
    far as the last window reaches (ceil_mode), and "pool_sum_taps" is computed on whole
    vectors of output columns: the window schedule (schedules.depthwise) vectorizes it.  The
    kernel reading it crops to out_hw."""
    (kh, kw) = (int(k) for k in kernel)
    pads = reaching_padding(x, (kh, kw), stride, pads, out_hw)
    _oh, _ow, ow_ext, tap = window_taps(x, (kh, kw), stride, pads, zx)
    n, c = (int(d) for d in x.shape[:2])
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    return te.compute((n, c, out_hw[0], ow_ext), lambda b, k, i, j: te.sum(
        tap(b, k, i, j, rh, rw).astype("int32") - zx, axis=[rh, rw]), name="pool_sum_taps")


def avg_pool_geometry(h: int, w: int, kernel, stride, padding, ceil_mode, count_include_pad):
    """PyTorch's avg_pool2d output size (oh, ow) and its divisor(i, j) as a TIR expression."""
    kh, kw = kernel
    sh, sw = stride
    pt, pl, pb, pr = padding4(padding)

    def divisor(i, j):
        y0, z0 = i * sh - pt, j * sw - pl
        if count_include_pad:
            y1 = tirx.min(y0 + kh, h + pb)
            z1 = tirx.min(z0 + kw, w + pr)
            return (y1 - y0) * (z1 - z0)
        y1, z1 = tirx.min(y0 + kh, h), tirx.min(z0 + kw, w)
        return (y1 - tirx.max(y0, 0)) * (z1 - tirx.max(z0, 0))

    return (pooled_size(h, kh, sh, pt, pb, ceil_mode),
            pooled_size(w, kw, sw, pl, pr, ceil_mode)), divisor


def max_pool2d(x, kernel, strides, padding, ceil_mode: bool = False):
    """Max pooling of 8-bit data (exact: max needs no arithmetic), vectorizable along rows.

    Padding reads the dtype's minimum, which never wins; so ceil_mode is the floor rule over
    bottom/right padding extended to reach the last window (PyTorch's windows past the input
    take the max of what they cover, and each covers at least one input element).  The output width is computed padded
    to whole vectors from de-interleaved planes (`padded_planes`) and cropped ("pool_max_taps"
    is the reduction the schedule vectorizes, as for the depthwise kernel)."""
    n, c = (int(d) for d in x.shape[:2])
    kh, kw = (int(k) for k in kernel)
    lowest = int(np.iinfo(str(x.dtype)).min)
    if ceil_mode:
        h, w = (int(d) for d in x.shape[2:])
        pt, pl, pb, pr = padding4(padding)
        out_hw = (pooled_size(h, kh, int(strides[0]), pt, pb, True),
                  pooled_size(w, kw, int(strides[1]), pl, pr, True))
        padding = reaching_padding(x, (kh, kw), strides, padding, out_hw)
    oh, ow, ow_ext, tap = window_taps(x, (kh, kw), strides, padding, lowest)
    ry, rx = te.reduce_axis((0, kh), "ky"), te.reduce_axis((0, kw), "kx")
    taps = te.compute(
        (n, c, oh, ow_ext),
        lambda b, ch, i, j: te.max(tap(b, ch, i, j, ry, rx), axis=[ry, rx]),
        name="pool_max_taps")
    return te.compute((n, c, oh, ow), lambda b, ch, i, j: taps[b, ch, i, j], name="pool_max")


# ---------------------------------------------------------------------------- adaptive, to 1x1
def _pool_sum(x):
    n, c, h, w = (int(d) for d in x.shape)
    rh, rw = te.reduce_axis((0, h), "rh"), te.reduce_axis((0, w), "rw")
    return te.compute((n, c, 1, 1), lambda b, k, i, j: te.sum(
        x[b, k, rh, rw].astype("int32"), axis=[rh, rw]), name="pool_sum")


def adaptive_avg_pool_engine(x, qin, qout):
    """adaptive_avg_pool2d to 1x1 on a channels-last quint8 tensor, as fbgemm's kernels compute
    it (keeps the input qparams).

    acc = sum(q) - zx*HW; m = f(1/HW), s' = f(1/m), inv = f(1/s').  The first floor(C/8)*8
    channels rne(fma(f(acc), inv, zx)), the others rint(f(f(acc*inv) + zx)).
    """
    _, c, h, w = (int(d) for d in x.shape)
    zx = qin[1]
    total = _pool_sum(x)
    m = np_f32(1.0) / np_f32(h * w)
    inv = np_f32(1.0) / (np_f32(1.0) / m)
    body_channels = (c // 8) * 8

    def out(b, k, i, j):
        acc = (total[b, k, i, j] - zx * h * w).astype("float32")
        vec = rne_i32(fma(acc, f32(inv), f32(zx)))
        tail = tirx.round(mul(acc, f32(inv)) + f32(zx)).astype("int32")
        return clamp(tirx.Select(k < body_channels, vec, tail), 0, 255).astype("uint8")

    return te.compute(total.shape, out, name="adaptive_avg_pool")


def _running_mean(x, qin):
    """f(s * (q - zp)) of the (N, C, H, W) 8-bit x summed in float in order over the H*W
    positions, from 0, then divided by H*W: (the sum, the mean of an element)."""
    n, c, h, w = (int(d) for d in x.shape)
    rh, rw = te.reduce_axis((0, h), "rh"), te.reduce_axis((0, w), "rw")
    total = te.compute((n, c, 1, 1), lambda b, k, i, j: te.sum(
        dequantize_value(x[b, k, rh, rw], *qin), axis=[rh, rw]), name="mean_sum")
    count = f32(np_f32(h * w))
    return total, lambda *idx: fence(total(*idx) / count)


def mean_engine(x, qin, qout, dims=(2, 3)):
    """x.mean(dims) over H and W of an 8-bit tensor as PyTorch's quantized mean computes it
    (fbgemm and x86 engines, channels-last or not, however the dims are spelled): the values
    dequantized, f(s * (q - zp)), summed in float in order over the H*W positions, divided by
    H*W, quantized (quantize_per_tensor) to qout."""
    total, mean = _running_mean(x, qin)
    return te.compute(total.shape, lambda *idx: quantize_value_fma(mean(*idx), *qout).astype(
        "uint8"), name="mean")


def mean_inductor(x, qin, qout, dims=(2, 3)):
    """quantize(mean(dequantize(x))) over H and W as Inductor's generated code computes it on a
    channels-last tensor: each channel's dequantized values summed in order (vector lanes are
    channels), divided by H*W, quantized as quantized_decomposed does (numerics.quantize)."""
    total, mean = _running_mean(x, qin)
    return te.compute(total.shape, lambda *idx: quantize_value(mean(*idx), *qout).astype(
        "uint8"), name="mean_inductor")


def adaptive_avg_pool_inductor(x, qin, qout):
    """adaptive_avg_pool2d to 1x1 under Inductor: its mean over H and W (mean_inductor)."""
    return mean_inductor(x, qin, qout)


def mean_qnnpack(x, qin, qout, dims):
    """x.mean(dims) under PyTorch's qnnpack engine: dims spelled exactly (2, 3) go to QNNPACK's
    global average pool, the arithmetic of avg_pool_qnnpack_window over the whole map; any other
    spelling ((-1, -2), (3, 2)...) to ATen's kernel, as mean_engine."""
    if tuple(dims) == (2, 3):
        return adaptive_avg_pool_qnnpack(x, qin, qout)
    return mean_engine(x, qin, qout)


def mean_integer(x, qin, qout, dims):
    """Integer-only mean over H and W (adaptive_avg_pool_integer)."""
    return adaptive_avg_pool_integer(x, qin, qout)


def mean_decomposed(x, qin, qout, dims):
    """A PT2E program's mean over H and W (adaptive_avg_pool_decomposed)."""
    return adaptive_avg_pool_decomposed(x, qin, qout)


def adaptive_avg_pool_integer(x, qin, qout):
    """Integer-only mean to 1x1: (sum(q) - zx*HW) / HW in fixed point, rounded half to even."""
    _, _, h, w = (int(d) for d in x.shape)
    zx = qin[1]
    total = _pool_sum(x)
    return te.compute(total.shape, lambda *i: clamp(
        rescale_fixed(total(*i) - zx * h * w, 1.0 / (h * w)).astype("int32") + zx,
        0, 255).astype("uint8"), name="avg_pool_int")


def adaptive_avg_pool_qnnpack(x, qin, qout):
    """PyTorch's qnnpack engine pools with QNNPACK (avg_pool_qnnpack_window over the whole map)
    when there is more than one element, else as fbgemm."""
    _, _, h, w = (int(d) for d in x.shape)
    if h * w == 1:
        return adaptive_avg_pool_engine(x, qin, qout)
    return avg_pool_qnnpack_window(x, qin, (h, w), (h, w), (0, 0, 0, 0))


# PyTorch's float sum of a contiguous row (aten/src/ATen/native/cpu/SumKernel.cpp, the AVX2
# Vectorized<float> build its dispatcher picks for sums): the row is read as whole 8-lane
# vectors, vector v going to accumulator row v % 4 of group v // 4 while whole groups of 4 last
# (the "ILP" rows); each (row, lane) stream is summed by multi_row_sum's cascade; the vectors
# after the last whole group are added to row 0; rows 1..3 are added to row 0; then a scalar
# sum of the elements after the last whole vector, to which the 8 lanes are added in order.
# A row shorter than a vector is summed the same way with one-element "vectors".
_LANES, _ILP = 8, 4


def _lanes(n_values: int) -> int:
    return _LANES if n_values >= _LANES else 1


def _add(a, b):
    """a + b in float32 as written (None: nothing summed yet; 0 + b == b exactly)."""
    return b if a is None else fence(a + b)


_CHUNK = 16  # multi_row_sum's level step (2^4; larger only for streams of 2^16+ elements)


def _running_sum(values: list):
    """A running float32 sum of values in order (None for none)."""
    total = None
    for value in values:
        total = _add(total, value)
    return total


def _sum_streams(x, qin, n_values: int):
    """The (N, C, ILP, lanes) accumulators of PyTorch's sum over each (b, c) row of the
    dequantized x (rows of n_values elements, read through x's last two axes), rows 1..3 not
    yet added.  Each stream of G elements is summed by multi_row_sum's cascade: chunks of 16
    summed in order into level 0; after each chunk level 0 is added into level 1, level 1 into
    level 2 after every 16 chunks, level 2 into level 3 after every 256; the elements after the
    last whole chunk go to level 0; at the end levels 1, 2, 3 are added to level 0 in that
    order.  The chunk sums are a TE reduction of 16 (an in-order loop from 0, which adds the
    first element exactly), so no expression grows with the row."""
    n, c, _, w = (int(d) for d in x.shape)
    lanes = _lanes(n_values)
    groups = n_values // lanes // _ILP
    if groups >= 1 << 16:
        raise ValueError(f"a pooled map of {n_values} elements: the sum's cascade is modelled "
                         "for rows of fewer than 2^21 elements")

    def value(b, k, row, lane, g):
        t = (g * _ILP + row) * lanes + lane
        return dequantize_value(x[b, k, t // w, t % w], *qin)

    chunks = groups // _CHUNK
    if chunks:
        j = te.reduce_axis((0, _CHUNK), "j")
        chunk = te.compute((n, c, _ILP, lanes, chunks), lambda b, k, row, lane, m: te.sum(
            value(b, k, row, lane, m * _CHUNK + j), axis=j), name="sum_chunks")

    def stream(b, k, row, lane):
        def block(m):  # level-2 block m: its 16 chunk sums in order
            return _running_sum([chunk[b, k, row, lane, i] for i in range(m * _CHUNK,
                                                                          (m + 1) * _CHUNK)])

        blocks = chunks // _CHUNK                # whole level-2 blocks
        flushed = blocks // _CHUNK * _CHUNK      # blocks already moved into level 3
        acc3 = _running_sum([_running_sum([block(m) for m in range(s, s + _CHUNK)])
                             for s in range(0, flushed, _CHUNK)])
        acc2 = _running_sum([block(m) for m in range(flushed, blocks)])
        acc1 = _running_sum([chunk[b, k, row, lane, i] for i in range(blocks * _CHUNK, chunks)])
        acc0 = _running_sum([value(b, k, row, lane, g) for g in range(chunks * _CHUNK, groups)])
        return _running_sum([a for a in (acc0, acc1, acc2, acc3) if a is not None])

    return te.compute((n, c, _ILP, lanes), stream, name="sum_streams")


def _row_sum(x, qin, streams, b, k, n_values: int):
    """Finish PyTorch's sum of row (b, k) from its stream accumulators (see above)."""
    w = int(x.shape[3])
    width = _lanes(n_values)
    vectors = n_values // width
    whole = vectors // _ILP * _ILP

    def value(t):
        return dequantize_value(x[b, k, t // w, t % w], *qin)

    def lane_sum(lane):  # ILP row 0, the vectors after the last whole group, rows 1..3
        rows = [streams[b, k, row, lane] for row in range(_ILP)] if whole else []
        leftover = [value(v * width + lane) for v in range(whole, vectors)]
        return _running_sum(rows[:1] + leftover + rows[1:])

    lanes = [lane_sum(lane) for lane in range(width)]
    tail = [value(t) for t in range(vectors * width, n_values)]
    return _running_sum(tail + [acc for acc in lanes if acc is not None])


def decomposed_mean(x, qin):
    """The float32 mean over H and W of the dequantized (N, C, H, W) x as PyTorch computes
    `mean(dims=(-2, -1))`: its sum (above), then one division by H * W."""
    n, c, h, w = (int(d) for d in x.shape)
    streams = _sum_streams(x, qin, h * w) if h * w >= _lanes(h * w) * _ILP else None
    return te.compute((n, c), lambda b, k: fence(
        _row_sum(x, qin, streams, b, k, h * w) / f32(np.float32(h * w))), name="mean_pt2e")


def adaptive_avg_pool_decomposed(x, qin, qout):
    """quantize(adaptive_avg_pool2d(dequantize(x), 1)): PyTorch computes it as
    mean(dims=(-2, -1)) (decomposed_mean)."""
    mean = decomposed_mean(x, qin)
    n, c = (int(d) for d in x.shape[:2])
    return te.compute((n, c, 1, 1), lambda b, k, i, j: quantize_value(mean[b, k], *qout).astype(
        "uint8"), name="adaptive_avg_pool_pt2e")


# ---------------------------------------------------------------------------- avg_pool2d
def avg_pool_engine(x, qin, qout, kernel, stride, padding, ceil_mode, count_include_pad):
    """avg_pool2d on a channels-last quint8 tensor as fbgemm's kernels compute it (keeps the
    input qparams).

    acc = sum(q - zx) over the window; m = f(1/div).  First floor(C/16)*16 channels:
    rne(f(acc*m)) + zx; the others rint(f(f(acc*f(1/f(1/m))) + zx)).
    """
    n, c, h, w = (int(d) for d in x.shape)
    zx = qin[1]
    (oh, ow), divisor = avg_pool_geometry(h, w, kernel, stride, padding, ceil_mode,
                                          count_include_pad)
    total = window_sum(x, zx, kernel, stride, padding4(padding), (oh, ow))
    body_channels = (c // 16) * 16

    def out(b, k, i, j):
        div = divisor(i, j).astype("float32")
        acc = total[b, k, i, j]
        m = fence(f32(1.0) / div)
        vec = rne_i32(mul(acc.astype("float32"), m)) + zx
        inv = fence(f32(1.0) / fence(f32(1.0) / m))
        tail = tirx.round(mul(acc.astype("float32"), inv) + f32(zx)).astype("int32")
        return clamp(tirx.Select(k < body_channels, vec, tail), 0, 255).astype("uint8")

    return te.compute((n, c, oh, ow), out, name="avg_pool")


def avg_pool_integer(x, qin, qout, kernel, stride, padding, ceil_mode, count_include_pad):
    """Integer-only avg_pool2d: sum(q - zx) / divisor, rounded half to even, + zx."""
    n, c, h, w = (int(d) for d in x.shape)
    zx = qin[1]
    (oh, ow), divisor = avg_pool_geometry(h, w, kernel, stride, padding, ceil_mode,
                                          count_include_pad)
    total = window_sum(x, zx, kernel, stride, padding4(padding), (oh, ow))

    def out(b, k, i, j):
        return clamp(divide_round_even(total[b, k, i, j], divisor(i, j)) + zx, 0,
                     255).astype("uint8")

    return te.compute((n, c, oh, ow), out, name="avg_pool")


def avg_pool_qnnpack(x, qin, qout, kernel, stride, padding, ceil_mode, count_include_pad):
    """PyTorch's qnnpack engine: QNNPACK's kernel (avg_pool_qnnpack_window) without ceil_mode,
    fbgemm's formula with it."""
    if ceil_mode:
        return avg_pool_engine(x, qin, qout, kernel, stride, padding, ceil_mode,
                               count_include_pad)
    return avg_pool_qnnpack_window(x, qin, kernel, stride, padding)


def avg_pool_qnnpack_window(x, qin, kernel, stride, padding):
    """QNNPACK average pooling (qnnpack engine: avg_pool2d without ceil_mode, adaptive 1x1).

    acc = sum(q - zx) over the window, padding contributing 0; the divisor is always kh*kw
    (count_include_pad and divisor_override are ignored): y = rne(f(f32(acc) * m)) + zx with
    m = f(f32(s) / f(f32(s) * f(kh*kw))) (constants.qnnpack_avgpool_scale).
    """
    _, _, h, w = (int(d) for d in x.shape)
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in stride)
    pt, pl, pb, pr = padding4(padding)
    scale, zx = qin
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    m = qnnpack_avgpool_scale(scale, kh * kw)
    total = window_sum(x, zx, (kh, kw), (sh, sw), (pt, pl, pb, pr), (oh, ow))

    def out(*idx):
        r = rne_i32(mul(total(*idx).astype("float32"), f32(m)))
        return clamp(clamp(r, -32768, 32767) + zx, 0, 255).astype("uint8")

    return te.compute((*total.shape[:2], oh, ow), out, name="avg_pool_qnnpack")


def avg_pool_decomposed(x, qin, qout, kernel, stride, padding, ceil_mode, count_include_pad):
    """quantize(avg_pool2d(dequantize(x))): PyTorch's float kernel sums each window row by row
    in a float (padding adds nothing), then divides by the divisor (measured bit for bit for
    2x2/s2, 3x3/s1 p1, 3x3/s2 p1 without count_include_pad, 3x3/s3)."""
    n, c, h, w = (int(d) for d in x.shape)
    kh, kw = kernel
    sh, sw = stride
    pt, pl = padding4(padding)[:2]
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
        mean = fence(total / divisor(i, j).astype("float32"))
        return quantize_value(mean, *qout).astype("uint8")

    return te.compute((n, c, oh, ow), out, name="avg_pool_pt2e")
