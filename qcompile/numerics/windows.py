"""What the window kernels share (depthwise convs, max and average pools): padding in
Relax's forms, and the de-interleaved padded planes that make a window tap read consecutive
memory for consecutive outputs."""

from __future__ import annotations

from tvm import te, tirx

DEPTHWISE_LANES = 16  # output columns per vector (int32 lanes of a 512-bit register)


def padding4(padding) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from Relax's 2- or 4-element padding."""
    pads = [int(p) for p in padding]
    return tuple(pads * 2) if len(pads) == 2 else tuple(pads)


def pooled_size(size: int, k: int, s: int, p0: int, p1: int, ceil_mode: bool) -> int:
    """PyTorch's pooled output size: floor or ceil of (size + p0 + p1 - k) / s, plus one; with
    ceil_mode the last window must still start inside the input or the leading padding."""
    span = size + p0 + p1 - k
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= size + p0:
        o -= 1
    return o


def reaching_padding(x, kernel, strides, padding, out_hw) -> tuple[int, int, int, int]:
    """(top, left, bottom, right): `padding` with bottom and right extended until the floor
    rule gives out_hw windows (ceil_mode's last windows reach past the input's end)."""
    h, w = (int(d) for d in x.shape[2:])
    (kh, kw), (sh, sw) = (int(k) for k in kernel), (int(s) for s in strides)
    pt, pl, pb, pr = padding4(padding)
    oh, ow = out_hw
    return (pt, pl, max(pb, (oh - 1) * sh + kh - h - pt), max(pr, (ow - 1) * sw + kw - w - pl))


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
    pt, pl, pb, pr = padding4(padding)
    oh, ow = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    ow_ext = -(-ow // DEPTHWISE_LANES) * DEPTHWISE_LANES
    xpad = padded_planes(x, (pt, pl, pb, pr), fill, sw, ow_ext, kw, slack)

    def tap(b, ch, i, j, ky, kx):
        if isinstance(kx, int):
            return xpad[b, ch, i * sh + ky, kx % sw, j + kx // sw]
        return xpad[b, ch, i * sh + ky, tirx.floormod(kx, sw), j + tirx.floordiv(kx, sw)]

    return oh, ow, ow_ext, tap
