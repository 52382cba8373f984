"""Pass: u8 x i8 -> i32 conv2d / matmul with constant weights become packed-layout kernels.

A dot-product instruction (VNNI's vpdpbusd, ARM's sdot) multiplies `in_block` consecutive
activation bytes by an `out_block x in_block` weight tile held contiguously in memory.  This
pass packs the weights once, at compile time, into that layout and emits a kernel whose
reduction reads it, so a schedule can tensorize the tile and be right by construction:

  dense   W[N, K]        -> Wp[N/ob, K/ib, ob, ib]      acc[m, n]  = sum_k x[m, k] Wp[..]
  conv2d  W[O, C, KH, KW] -> Wp[O/ob, C/ib, KH, KW, ob, ib]
          x[N, C, H, W]  -> xp[N, C/ib, H+pad, W+pad, ib] (the zero-point padding is absorbed)
          acc[n, o/ob, y, x, ob] -> out[n, o, y, x]
  grouped (groups G > 1, not depthwise): the same, W[O, C/G, ..] packed by a tile width that
          fills each group's outputs with whole blocks (16, or 8 / 4 where a family has
          narrower intrinsics); output block o reads its group's C/G/ib channel blocks
  With `pixel_lanes` (a target whose intrinsic can take pixels as lanes), pixels are the
  vector lanes instead of channels, and the accumulator is NCHW already (no transposing
  epilogue):
  1x1 conv, stride 1, unpadded, H*W a multiple of the lanes: pixels flattened
          x[N, C, H, W]  -> xp[N, C/ib, H*W, ib]      acc[n, o, p] = sum_c xp[..] Wp[..]
          acc[n, o, p]   -> out[n, o, p / W, p % W]
  any other conv (dilation 1) whose output width is a multiple of the lanes: rows of pixels,
  the padded input split by stride phase so each tap reads 16 consecutive pixel quads
          x[N, C, H, W]  -> xp[N, C/ib, H+pad, SW, (W+pad)/SW, ib]
          acc[n, o, y, x] = sum xp[n, c, y*SH + ky, kx % SW, x + kx / SW, ci] Wp[..]

Channel counts that are not multiples of the blocks are padded with zero weights (the padded
activations then contribute nothing).  The arithmetic is unchanged: these are the same exact
integer sums, in another memory order.

`signed_activations` (ARM, whose sdot/smull take i8 x i8): the packed activations are a - 128
(exact in int8) and 128 * sum(W[o, ...]), a compile-time constant per output, is added back
when unpacking: sum (a - 128) w + 128 sum w = sum a w, for every tap, padding included.

Block names ("pack_data", "conv2d_packed", "conv2d_pixels", "conv2d_pixel_rows",
"dense_packed") are how the schedules find these kernels.  Which blocks a target uses comes
from schedules/ (the `out_block`/`in_block`/`pixel_lanes` arguments); this pass knows no
target.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from .machinery import run_rewrite


def _ceil_to(v: int, block: int) -> int:
    return -(-v // block) * block


def pack_dense_weight(w: np.ndarray, ob: int, ib: int) -> np.ndarray:
    """W[N, K] int8 -> [ceil(N/ob), ceil(K/ib), ob, ib], zero-padded."""
    n, k = w.shape
    padded = np.zeros((_ceil_to(n, ob), _ceil_to(k, ib)), np.int8)
    padded[:n, :k] = w
    n2, k2 = padded.shape
    return np.ascontiguousarray(padded.reshape(n2 // ob, ob, k2 // ib, ib).transpose(0, 2, 1, 3))


def pack_conv_weight(w: np.ndarray, ob: int, ib: int) -> np.ndarray:
    """W[O, C, KH, KW] int8 -> [ceil(O/ob), ceil(C/ib), KH, KW, ob, ib], zero-padded."""
    o, c, kh, kw = w.shape
    padded = np.zeros((_ceil_to(o, ob), _ceil_to(c, ib), kh, kw), np.int8)
    padded[:o, :c] = w
    o2, c2 = padded.shape[:2]
    return np.ascontiguousarray(
        padded.reshape(o2 // ob, ob, c2 // ib, ib, kh, kw).transpose(0, 2, 4, 5, 1, 3))


def _shifted(value):
    """u8 a -> i8 a - 128 (what the signed-activation intrinsics read)."""
    return (value.astype("int32") - 128).astype("int8")


def _corrected(value, correction, out):
    """An unpacked accumulator, plus the shift correction of output `out` when there is one."""
    return value if correction is None else value + correction[out]


def _dense_te(x, wp, n_out: int, correction=None):
    """x[..., K] u8 with packed Wp -> int32 [..., n_out]; `correction` [n_out] int32:
    the activations are packed shifted to i8 and the correction added back."""
    *lead, k = (int(d) for d in x.shape)
    nb, kb, ob, ib = (int(d) for d in wp.shape)
    if k != kb * ib or correction is not None:
        def pad_k(*idx):
            value = tirx.if_then_else(idx[-1] < k, x[(*idx[:-1], tirx.min(idx[-1], k - 1))],
                                      tirx.const(0, "uint8"))
            return value if correction is None else _shifted(value)
        x = te.compute((*lead, kb * ib), pad_k, name="pack_data")
    r = te.reduce_axis((0, kb * ib), "k")
    acc = te.compute(
        (*lead, nb * ob),
        lambda *idx: te.sum(
            x[(*idx[:-1], r)].astype("int32")
            * wp[idx[-1] // ob, r // ib, idx[-1] % ob, r % ib].astype("int32"), axis=r),
        name="dense_packed")
    if nb * ob == n_out and correction is None:
        return acc
    return te.compute((*lead, n_out), lambda *idx: _corrected(acc[idx], correction, idx[-1]),
                      name="unpack")


def _read_padded(x, b, ch, y, z, pad_value: int):
    """x[b, ch, y, z] (u8), or `pad_value` where (ch, y, z) is outside x: a channel past the
    last (zero weights meet it) or a row/column of the padding."""
    _, c, h, w = (int(d) for d in x.shape)
    inside = tirx.all(ch < c, y >= 0, y < h, z >= 0, z < w)
    value = x[b, tirx.min(ch, c - 1), tirx.max(tirx.min(y, h - 1), 0),
              tirx.max(tirx.min(z, w - 1), 0)]
    return tirx.if_then_else(inside, value, tirx.const(pad_value, "uint8"))


# An output row is tiled by a divisor of its width (the register tile holds whole rows of x
# positions).  A width with none in this range (17, 71, 73, 149: Inception's) is computed
# padded to a multiple of ROW_TILE and cropped: 17 -> 20 is 18 % more work, where a tile of
# one position per channel block left 3 of 4 accumulator rows empty.
ROW_TILES = range(4, 17)
ROW_TILE = 4


def computed_width(ow: int) -> int:
    """The output width a channel-lane conv computes: `ow`, or padded (see ROW_TILES)."""
    if ow < ROW_TILES.start or any(ow % t == 0 for t in ROW_TILES):
        return ow
    return -(-ow // ROW_TILE) * ROW_TILE


def _conv_te(x, wp, o_count: int, pad4, pad_value: int, strides, dilation, correction=None,
             groups: int = 1):
    """x[N, C, H, W] u8 (unpadded) with packed Wp -> int32 [N, o_count, OH, OW];
    `correction` [o_count] int32: activations packed shifted to i8, the correction added back.
    With `groups`, each output block reads the channel blocks of its group (Wp's blocks never
    straddle two groups).  The accumulator is computed computed_width(OW) wide, from the
    input packed as wide as that needs (what lies past the padding reads the pad value), and
    cropped when unpacked."""
    n, _, h, w = (int(d) for d in x.shape)
    obn, cbn, kh, kw, ob, ib = (int(d) for d in wp.shape)
    top, left, bottom, right = pad4
    hp, wpd = h + top + bottom, w + left + right
    sh, sw = strides
    dh, dw = dilation
    oh = (hp - dh * (kh - 1) - 1) // sh + 1
    ow = (wpd - dw * (kw - 1) - 1) // sw + 1
    ow_ext = computed_width(ow)
    if ow_ext != ow:
        wpd = (ow_ext - 1) * sw + dw * (kw - 1) + 1

    def pack(b, cb, y, z, ci):
        value = _read_padded(x, b, cb * ib + ci, y - top, z - left, pad_value)
        return value if correction is None else _shifted(value)

    xp = te.compute((n, cbn * groups, hp, wpd, ib), pack, name="pack_data")
    rc = te.reduce_axis((0, cbn), "cb")
    ry = te.reduce_axis((0, kh), "ky")
    rx = te.reduce_axis((0, kw), "kx")
    ri = te.reduce_axis((0, ib), "ci")

    def channel_block(o):
        # a grouped conv's output block o reads its group's cbn channel blocks
        return rc if groups == 1 else o // (obn // groups) * cbn + rc

    acc = te.compute(
        (n, obn, oh, ow_ext, ob),
        lambda b, o, y, z, oi: te.sum(
            xp[b, channel_block(o), y * sh + ry * dh, z * sw + rx * dw, ri].astype("int32")
            * wp[o, rc, ry, rx, oi, ri].astype("int32"), axis=[rc, ry, rx, ri]),
        name="conv2d_packed")
    return te.compute(
        (n, o_count, oh, ow),
        lambda b, o, y, z: _corrected(acc[b, o // ob, y, z, o % ob], correction, o),
        name="unpack")


def _conv_pixels_te(x, wp, o_count: int):
    """1x1 stride-1 conv, x[N, C, H, W] u8 with packed Wp -> int32 [N, o_count, H, W], its
    accumulator [N, o_count, H*W] laid out with the pixels innermost (the vector lanes)."""
    n, c, h, w = (int(d) for d in x.shape)
    _, cbn, _, _, ob, ib = (int(d) for d in wp.shape)

    def pack(b, cb, p, ci):
        ch = cb * ib + ci
        value = x[b, tirx.min(ch, c - 1), p // w, p % w]
        return tirx.if_then_else(ch < c, value, tirx.const(0, "uint8"))

    xp = te.compute((n, cbn, h * w, ib), pack, name="pack_data")
    rc = te.reduce_axis((0, cbn), "cb")
    ri = te.reduce_axis((0, ib), "ci")
    acc = te.compute(
        (n, o_count, h * w),
        lambda b, o, p: te.sum(
            xp[b, rc, p, ri].astype("int32") * wp[o // ob, rc, 0, 0, o % ob, ri].astype("int32"),
            axis=[rc, ri]),
        name="conv2d_pixels")
    return te.compute((n, o_count, h, w), lambda b, o, y, z: acc[b, o, y * w + z],
                      name="unpack")


def _conv_pixel_rows_te(x, wp, o_count: int, pad4, pad_value: int, strides):
    """Conv (dilation 1) with rows of pixels as the lanes: x[N, C, H, W] u8 (unpadded) with
    packed Wp -> int32 [N, o_count, OH, OW], NCHW; the input packed padded and split by
    stride phase, so a tap's 16 outputs read 16 consecutive pixel quads."""
    n, _, h, w = (int(d) for d in x.shape)
    _, cbn, kh, kw, ob, ib = (int(d) for d in wp.shape)
    top, left, bottom, right = pad4
    sh, sw = strides
    oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    quads = ow + (kw - 1) // sw  # pixel positions each phase plane needs

    def pack(b, cb, yy, phase, q, ci):
        return _read_padded(x, b, cb * ib + ci, yy - top, q * sw + phase - left, pad_value)

    xp = te.compute((n, cbn, h + top + bottom, sw, quads, ib), pack, name="pack_data")
    rc = te.reduce_axis((0, cbn), "cb")
    ry = te.reduce_axis((0, kh), "ky")
    rx = te.reduce_axis((0, kw), "kx")
    ri = te.reduce_axis((0, ib), "ci")
    return te.compute(
        (n, o_count, oh, ow),
        lambda b, o, y, z: te.sum(
            xp[b, rc, y * sh + ry, rx % sw, z + rx // sw, ri].astype("int32")
            * wp[o // ob, rc, ry, rx, o % ob, ri].astype("int32"), axis=[rc, ry, rx, ri]),
        name="conv2d_pixel_rows")


# A pixel-lane 1x1 conv's register tile reads up to 8 pixel vectors of the whole reduction
# for every channel tile: with more input channels than fit 8 x lanes x C in this many bytes
# of L1 they stream from L2 instead.  Timed kernel alone (profile_kernels, Zen 5, 2 threads):
# 512->512 at 28x28 pixel lanes 0.553 ms, channel lanes 0.286; 128->512 0.079 vs 0.127,
# 256->256 at 56x56 0.253 vs 0.310.
PIXEL_TILE_BYTES = 32 * 1024


def _pixel_kernel(x, w: np.ndarray, pad4, strides, dilation, lanes: int | None) -> str | None:
    """Which pixel-lane kernel computes this conv, if any: "conv2d_pixels" (1x1, stride 1,
    unpadded, H*W a multiple of `lanes`, see PIXEL_TILE_BYTES) or "conv2d_pixel_rows" (output
    width a multiple of `lanes`, dilation 1).  Whole vectors only: no partial tile, no masked
    store."""
    if lanes is None:
        return None
    h, wd = int(x.ty.shape[2]), int(x.ty.shape[3])
    if w.shape[2:] == (1, 1) and not any(pad4) and list(strides) == [1, 1]:
        if 8 * lanes * w.shape[1] > PIXEL_TILE_BYTES:
            return None
        if (h * wd) % lanes == 0:
            return "conv2d_pixels"
    out_w = (wd + pad4[1] + pad4[3] - w.shape[3]) // strides[1] + 1
    if list(dilation) == [1, 1] and out_w % lanes == 0:
        return "conv2d_pixel_rows"
    return None


def _shift_correction(w: np.ndarray, out_axis: int):
    """128 * sum of each output's weights: what shifting the activations by -128 takes away."""
    axes = tuple(a for a in range(w.ndim) if a != out_axis)
    return relax.const((128 * w.astype(np.int64).sum(axis=axes)).astype(np.int32))


def _weight(expr):
    if isinstance(expr, tvm.ir.expr.Constant) and expr.value.dtype == "int8":
        return expr.value.numpy()
    return None


def _group_lanes(w: np.ndarray, groups: int, ib: int, lanes: tuple) -> int | None:
    """The widest tile (of `lanes`) a grouped conv's groups fill with whole blocks, or None
    when none does or its groups' input channels are no whole number of ib-blocks."""
    cout_g, cin_g = w.shape[0] // groups, w.shape[1]
    if cin_g % ib:
        return None
    return next((n for n in lanes if cout_g % n == 0), None)


def _rewrite(ctx, call, ob: int, ib: int, signed: bool, pixel_lanes: int | None,
             group_lanes: tuple):
    if not isinstance(call.op, tvm.ir.Op):
        return None
    name = call.op.name
    if name not in ("relax.nn.conv2d", "relax.matmul"):
        return None
    if str(call.attrs.out_dtype) != "int32":
        return None
    x_orig, w_expr = call.args
    w = _weight(ctx.value_of(w_expr))
    if w is None or x_orig.ty.dtype != "uint8":
        return None
    if name == "relax.matmul":
        if w.ndim != 2 or x_orig.ty.ndim < 2:
            return None
        wp = pack_dense_weight(np.ascontiguousarray(w.T), ob, ib)
        correction = [_shift_correction(w, 1)] if signed else []
        return ctx.call_te(_dense_te, ctx.new(x_orig), relax.const(wp), int(w.shape[1]),
                           *correction, primfunc_name_hint="dense_packed")
    attrs = call.attrs
    groups = int(attrs.groups)
    if (str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW"
            or str(attrs.out_layout) != "NCHW"):
        return None
    if groups != 1:
        ob = _group_lanes(w, groups, ib, group_lanes)
        if ob is None:
            return None
    pad4, pad_value = [int(p) for p in attrs.padding], 0
    source = ctx.value_of(x_orig)
    if (isinstance(source, relax.Call) and source.op.name == "relax.nn.pad"
            and str(source.attrs.pad_mode) == "constant" and not any(pad4)):
        widths = [int(p) for p in source.attrs.pad_width]
        if not any(widths[:4]):
            top, bottom, left, right = widths[4:]
            pad4, pad_value = [top, left, bottom, right], int(source.attrs.pad_value)
            x_orig = source.args[0]
    elif any(pad4):
        return None  # conv2d's own padding pads with 0: leave such a conv to the generic path
    wp = pack_conv_weight(w, ob, ib)
    strides, dilation = [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation]
    pixels = None if signed or groups != 1 else _pixel_kernel(x_orig, w, pad4, strides, dilation,
                                                              pixel_lanes)
    if pixels == "conv2d_pixels":
        return ctx.call_te(_conv_pixels_te, ctx.new(x_orig), relax.const(wp), int(w.shape[0]),
                           primfunc_name_hint=pixels)
    if pixels == "conv2d_pixel_rows":
        return ctx.call_te(_conv_pixel_rows_te, ctx.new(x_orig), relax.const(wp),
                           int(w.shape[0]), pad4, pad_value, strides, primfunc_name_hint=pixels)
    correction = [_shift_correction(w, 0)] if signed else []
    if groups == 1:  # (the same call as before grouped convs were packed: same kernels)
        return ctx.call_te(_conv_te, ctx.new(x_orig), relax.const(wp), int(w.shape[0]), pad4,
                           pad_value, strides, dilation, *correction,
                           primfunc_name_hint="conv2d_packed")

    def grouped(xt, wt, *corr):
        return _conv_te(xt, wt, int(w.shape[0]), pad4, pad_value, strides, dilation,
                        *corr, groups=groups)

    return ctx.call_te(grouped, ctx.new(x_orig), relax.const(wp), *correction,
                       primfunc_name_hint="conv2d_packed")


def pack_layout(mod: tvm.IRModule, out_block: int, in_block: int,
                signed_activations: bool = False, pixel_lanes: int | None = None,
                group_lanes: tuple = ()) -> tvm.IRModule:
    """Rewrite u8 x i8 conv2d (groups 1) / matmul with constant weights into packed kernels.

    `out_block` x `in_block` is the weight tile of the target's dot-product instruction
    (16 x 4 for AVX-512 VNNI, 4 x 4 for ARM); `signed_activations`: the instruction takes
    i8 x i8 (activations packed shifted by -128, see the module docstring); `pixel_lanes`:
    the target also has a pixel-lane intrinsic of that many lanes (the convs _pixel_kernel
    picks use it); `group_lanes`: the tile widths a grouped conv (groups > 1, not depthwise)
    may be packed to, the widest that divides its groups' output channels (none: grouped
    convs stay generic)."""
    return run_rewrite(mod, lambda ctx, call: _rewrite(ctx, call, out_block, in_block,
                                                       signed_activations, pixel_lanes,
                                                       group_lanes))
