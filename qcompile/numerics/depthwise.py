"""Depthwise convolution accumulators: fbgemm's fast path (its int16 pair saturation) and
the exact sum, as window kernels vectorized (or tensorized: schedules.depthwise_quads) along
the output rows."""

from __future__ import annotations

from tvm import te, tirx

from .tir_ops import sat16_pair
from .windows import DEPTHWISE_LANES, window_taps

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
