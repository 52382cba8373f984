"""Default schedules for the packed int8 kernels (qcompile.passes.pack_layout), tensorized.

The packed reduction's innermost (out_block x in_block) tile is tensorized with the target
family's dot-product intrinsic, accumulating into a register tile held in "local" scope:

  conv2d_packed[n, ob, y, x, o]:  parallel(n, y) . ob/OB . x/XB . cb . ky . kx . [OB . XB] . tile
                                  (the input rows packed inside each parallel iteration;
                                  with fewer than 8 rows: parallel(n, ob/OB, y), packed first)
  conv2d_pixels[n, o, p]:         parallel(n, p/PB) . o/OB . cb . [OB . PB] . tile
                                  (a 1x1 conv with pixels as lanes: the tile is 16 pixels of
                                  one channel; its input packed first)
  conv2d_pixel_rows[n, o, y, x]:  parallel(n, y) . x/XB . o/OB . cb . ky . kx . [OB . XB] . tile
                                  (any other conv whose output width is whole vectors: the
                                  stems; its padded, stride-phase-split input packed first)
  dense_packed[..., m, n]:        parallel(n/NB, m/MB) . k/KC . k . [MB . NB] . tile

OB x XB (MB x NB) accumulators stay in vector registers for the whole reduction; the epilogue
(unpack, requantize, clip, residual add: everything fused after the reduction) is inlined into
one block computed per register tile, so the int32 accumulator never goes to memory (a
channel-lane tile's NCHW output through a small transposing local tile: _store_transposed).
The tile sizes are a default, picked from the shape; MetaSchedule tuning searches beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from .common import extent, find_block, inline_epilogue, reads_blocked, schedule_epilogue

# default accumulator budget (measured on Zen 4: 28 of the 32 zmm spilled and ran slower, 16 not)
ACC_REGISTERS = 16
# A conv with at least this many output rows (batch x height) runs its parallel loop over rows
# only, packing each row's input inside the iteration.  Timed alone against the parallel loop
# over (channel block, row) with the input packed before it (ad-hoc script, 2 threads):
# 16->96 1x1 at 112x112 0.268 -> 0.171 ms, MobileNetV2's stem 0.143 -> 0.080, a 1x1 stride-2
# 64->128 0.053 -> 0.027, ResNet's 7x7 stem 0.573 -> 0.522, 3x3 convs within +-5 %.
ROWS_PER_PARALLEL_KERNEL = 8


@dataclass(frozen=True)
class PackedTiles:
    rows: int       # conv: output x positions per tile; dense: rows (m) per tile
    blocks: int     # out_block-wide column blocks per tile
    k_chunk: int    # dense: reduction elements per cache block (conv: whole reduction)


def _divisors(n: int):
    return [d for d in range(1, n + 1) if n % d == 0]


def conv_tiles(out_w: int, out_blocks: int, registers: int = ACC_REGISTERS) -> PackedTiles:
    """Largest register tile (x positions x channel blocks) dividing the output shape."""
    best = (0, 1, 1)
    for blocks in _divisors(out_blocks):
        if blocks > 4:
            break
        for rows in _divisors(out_w):
            if rows * blocks <= registers:
                # prefer more accumulators, then fewer channel blocks (more weight reuse per load)
                score = (rows * blocks, -blocks)
                if score > best[:2]:
                    best = (rows * blocks, -blocks, rows)
    rows = best[2]
    return PackedTiles(rows=rows, blocks=-best[1], k_chunk=0)


def pixel_tiles(pixel_vectors: int, channels: int, registers: int = ACC_REGISTERS) -> PackedTiles:
    """Pixel vectors x channels of a pixel-lane tile: the most accumulators dividing the
    shape, then more pixel vectors (each channel's weights are broadcast once per step)."""
    best = (0, 0, 1, 1)
    for vectors in _divisors(pixel_vectors):
        for chans in _divisors(channels):
            if vectors <= 8 and chans <= 8 and vectors * chans <= registers:
                best = max(best, (vectors * chans, vectors, vectors, chans))
    return PackedTiles(rows=best[2], blocks=best[3], k_chunk=0)


def dense_tiles(m: int, n_blocks: int, k: int, in_block: int,
                registers: int = ACC_REGISTERS) -> PackedTiles:
    """A 4-8 row x up-to-4 block tile, and a reduction chunk that keeps the weight panel in L1."""
    rows = next(r for r in (8, 4, 2, 1) if m % r == 0 and r * 2 <= registers)
    blocks = next(b for b in (4, 3, 2, 1) if n_blocks % b == 0 and b * rows <= registers)
    if rows < 4:  # few rows: widen the tile along the columns instead
        blocks = next(b for b in (8, 6, 4, 3, 2, 1) if n_blocks % b == 0 and b * rows <= registers)
    chunk = next((c for c in (256, 128, 64, 32, 16, 8) if k % c == 0 and c % in_block == 0), k)
    return PackedTiles(rows=rows, blocks=blocks, k_chunk=chunk)


def _interleave(sch, pack):
    """A conv's pack (n, cb, y, x, ci) interleaves `in_block` channel planes: its ci loop is
    unrolled and the x loop left scalar, so LLVM vectorizes x as one interleaved store group
    (one wide load per plane, shuffles, wide stores).  Vectorizing ci itself (in_block lanes)
    loads each byte alone: 5x slower on Zen 4.  An input already channel-blocked
    (qcompile.passes.block_activations) is packed pixel by pixel: ci (the block) vectorized."""
    if reads_blocked(sch, pack):
        sch.vectorize(sch.get_loops(pack)[-1])
        return
    sch.unroll(sch.get_loops(pack)[-1])


def _pack_stage(sch, block_name: str):
    """Parallelize the input packing, a loop nest of its own before the kernel."""
    pack = find_block(sch, block_name)
    if pack is None:  # no input packing in this kernel
        return
    loops = sch.get_loops(pack)
    if len(loops) >= 5:  # a conv's: (n, cb, y, x, ci), or (n, cb, y, phase, x, ci)
        sch.parallel(sch.fuse(*loops[:3]))
        _interleave(sch, pack)
        return
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops[:min(3, len(loops) - 1)]))
    sch.vectorize(sch.get_loops(pack)[-1])


def _split(sch, loop, inner: int, search: bool, max_inner: int):
    """Split off an inner loop: `inner` iterations, or (search) a tile size MetaSchedule samples."""
    if search:
        factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max_inner)
        return sch.split(loop, factors)
    return sch.split(loop, [None, inner])


def _choose(sch, default: bool, search: bool) -> bool:
    """A yes/no decision of the schedule: `default`, or (search) one MetaSchedule samples,
    the default twice as likely (recorded in the trace, replayed with it)."""
    if not search:
        return default
    pick = sch.sample_categorical([int(default), int(not default)], [2 / 3, 1 / 3])
    return bool(int(sch.get(pick)))


def _tensorize_tile(sch, block, parallel, epilogue_at, reduction, tile, register_loops, intrin,
                    pack_per_iteration: bool = False, flat_width: int | None = None,
                    lanes: int | None = None, channel_tile: int | None = None):
    """What conv and dense share once their loops are tiled and ordered: the accumulator tile
    goes to "local" scope, the `parallel` loops are fused and run in parallel, the epilogue is
    computed at `epilogue_at` (None: the fused parallel loop), the reduction is split into
    init + update at `reduction`, the `tile` loop is tensorized with `intrin` and the
    `register_loops` (one accumulator each) are unrolled.  The input packing stage is computed
    inside each parallel iteration (`pack_per_iteration`: the rows it needs, while they are
    hot) or before the kernel, as a parallel loop of its own.  `flat_width`: the
    accumulator's pixels are flat (p = y * width + x) and the NCHW epilogue iterates them so
    too, `lanes` at a time.  `channel_tile`: the accumulator's lanes are that many channels
    (a channel-lane conv), and an NCHW output is stored transposed (_store_transposed)."""
    name = sch.get(block).name_hint
    epilogue = inline_epilogue(sch, block)
    sch.set_scope(block, 0, "local")
    outer = sch.fuse(*parallel)
    if epilogue is not None:
        if flat_width is not None:
            for b in epilogue:
                _flatten_pixels(sch, b, flat_width)
        at = outer if epilogue_at is None else epilogue_at
        if channel_tile is not None and _stores_nchw(sch, epilogue[-1], channel_tile):
            schedule_epilogue(sch, epilogue[:-1], at, lanes)
            _store_transposed(sch, epilogue[-1], at, channel_tile)
        else:
            schedule_epilogue(sch, epilogue, at, lanes)
    pack = find_block(sch, "pack_data") if pack_per_iteration else None
    if pack is not None:
        sch.compute_at(pack, outer, preserve_unit_loops=True)
        _interleave(sch, pack)
    sch.parallel(outer)
    sch.decompose_reduction(block, reduction)
    init = sch.get_sblock(f"{name}_init")
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(tile, intrin)
    for loop in register_loops:
        sch.unroll(loop)
    if pack is None:
        _pack_stage(sch, "pack_data")


def schedule_conv(sch: s_tir.Schedule, family, search: bool = False) -> None:
    """Tile, tensorize (with the family's dot-product intrinsic of the packed tile's width)
    and fuse the epilogue of a packed conv2d (grouped or not).

    `search=True` leaves the tile sizes to MetaSchedule (sampled, recorded in the trace)."""
    registers = family.acc_registers
    block = sch.get_sblock("conv2d_packed")
    n, ob, y, x, o, cb, ky, kx, ci = sch.get_loops(block)
    # the tile's width: out_block, or a narrower one a grouped conv's groups are packed to
    intrin = family.dot_intrinsic_for(extent(sch, o))
    tiles = conv_tiles(extent(sch, x), extent(sch, ob), registers)
    obo, obi = _split(sch, ob, tiles.blocks, search, 4)
    xo, xi = _split(sch, x, tiles.rows, search, registers)
    rows = extent(sch, n) * extent(sch, y)
    if _choose(sch, rows >= ROWS_PER_PARALLEL_KERNEL, search and rows > 1):
        # one output row per parallel iteration, all channel blocks: its input rows are
        # packed right there (in L1) instead of in a parallel loop of their own
        sch.reorder(n, y, obo, xo, cb, ky, kx, obi, xi, o, ci)
        parallel, per_row = [n, y], True
    else:  # too few rows to share between the threads: channel blocks too
        sch.reorder(n, obo, y, xo, cb, ky, kx, obi, xi, o, ci)
        parallel, per_row = [n, obo, y], False
    _tensorize_tile(sch, block, parallel=parallel, epilogue_at=xo, reduction=cb,
                    tile=o, register_loops=[obi, xi], intrin=intrin,
                    pack_per_iteration=per_row, channel_tile=extent(sch, o))
    # each tap's offsets as constants (what the pixel-row kernel does): searched, not default
    if _choose(sch, False, search and extent(sch, kx) > 1):
        sch.unroll(kx)


# Channel-lane tiles this wide store an NCHW output transposed (_store_transposed): measured
# on x86's 16-lane tiles only (the narrower grouped and ARM tiles keep the direct store).
TRANSPOSED_STORE_LANES = 16


def _stores_nchw(sch, writer, channel_tile: int) -> bool:
    """True when a channel-lane conv's output writer stores NCHW (not the blocked layout of
    qcompile.passes.block_activations) in whole `channel_tile` blocks of channels."""
    out = sch.get(writer).writes[0].source
    return (channel_tile == TRANSPOSED_STORE_LANES and len(out.shape) == 4
            and int(out.shape[1]) % channel_tile == 0)


def _store_transposed(sch, writer, at, block: int):
    """The NCHW output of a channel-lane tile, in two steps: the epilogue (requantize, clip,
    ...) runs on whole accumulator vectors of `block` channels into a local tile laid out
    [N, C/block, H, W, block], then a copy writes its rows of W to NCHW.  The direct store
    computed each channel's few x positions at once, gathering them lane by lane from the
    accumulators; Inception-v3 (17-wide rows, 4 per tile) 11.4 -> 10.1 ms, GoogLeNet,
    ResNet-50, MobileNetV2, ShuffleNet within +-1.5 % (interleaved A/B, Zen 5)."""
    sch.reverse_compute_at(writer, at, preserve_unit_loops=True)
    copy = sch.cache_write(writer, 0, "local")
    sch.transform_layout(writer, ("write", 0), lambda n, c, y, x: (n, c // block, y, x, c % block))
    *_, c, y, x = sch.get_loops(writer)
    co, ci = sch.split(c, [None, block])
    sch.reorder(co, y, x, ci)
    sch.vectorize(ci)
    sch.reverse_compute_at(copy, at, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(copy)[-1])


def _flatten_pixels(sch, block, width: int):
    """Iterate an NCHW block over flat pixels p = y * width + x (the layout of a pixel-lane
    accumulator), so a tile of p is one rectangle of its iteration space."""
    sch.transform_block_layout(block, lambda n, c, y, x: (n, c, y * width + x))


def _output_width(sch) -> int:
    """W of the NCHW output a pixel-lane conv unpacks its flat accumulator into."""
    return int(sch.get(sch.get_sblock("unpack")).iter_vars[-1].dom.extent)


def schedule_conv_pixels(sch: s_tir.Schedule, family, search: bool = False) -> None:
    """Tile, tensorize (with `family.pixel_intrinsic`) and fuse the epilogue of a pixel-lane
    1x1 conv (qcompile.passes.pack_layout's "conv2d_pixels").

    Each accumulator holds `out_block` neighbouring pixels of one channel, so the fused
    epilogue (requantize, clip, residual add) runs on whole vectors in the output's own NCHW
    order.  `search=True` leaves the tile sizes to MetaSchedule."""
    lanes, registers = family.out_block, family.acc_registers
    block = sch.get_sblock("conv2d_pixels")
    n, o, p, cb, ci = sch.get_loops(block)
    tiles = pixel_tiles(extent(sch, p) // lanes, extent(sch, o), registers)
    pv, pi = sch.split(p, [None, lanes])
    pt, pr = _split(sch, pv, tiles.rows, search, 8)
    ot, orr = _split(sch, o, tiles.blocks, search, 8)
    sch.reorder(n, pt, ot, cb, orr, pr, pi, ci)
    pack = sch.get_sblock("pack_data")
    out_width = _output_width(sch)
    # the pack iterates (n, cb, y, x, ci) again: rows in parallel, x left for LLVM to vectorize
    sch.transform_block_layout(pack, lambda b, c, q, i: (b, c, q // out_width, q % out_width, i))
    _tensorize_tile(sch, block, parallel=[n, pt], epilogue_at=ot, reduction=cb, tile=pi,
                    register_loops=[orr, pr], intrin=family.pixel_intrinsic,
                    flat_width=out_width, lanes=lanes)


def schedule_conv_pixel_rows(sch: s_tir.Schedule, family, search: bool = False) -> None:
    """Tile, tensorize (with `family.pixel_intrinsic`) and fuse the epilogue of a conv whose
    rows of output pixels are the lanes (qcompile.passes.pack_layout's "conv2d_pixel_rows").

    One output row per parallel iteration, tiles of whole vectors x channels; the epilogue
    runs on whole vectors in NCHW order.  `search=True` leaves the tile sizes to MetaSchedule."""
    lanes, registers = family.out_block, family.acc_registers
    block = sch.get_sblock("conv2d_pixel_rows")
    n, o, y, x, cb, ky, kx, ci = sch.get_loops(block)
    tiles = pixel_tiles(extent(sch, x) // lanes, extent(sch, o), registers)
    xv, xi = sch.split(x, [None, lanes])
    xt, xr = _split(sch, xv, tiles.rows, search, 8)
    ot, orr = _split(sch, o, tiles.blocks, search, 8)
    sch.reorder(n, y, xt, ot, cb, ky, kx, orr, xr, xi, ci)
    _tensorize_tile(sch, block, parallel=[n, y], epilogue_at=ot, reduction=cb, tile=xi,
                    register_loops=[orr, xr], intrin=family.pixel_intrinsic, lanes=lanes)
    # each tap's stride phase and offset become constants: ResNet-18's 7x7/2 stem took
    # 0.80 ms per call with kx rolled, 0.41 unrolled (0.65 on the channel-lane kernel)
    sch.unroll(kx)
    if _choose(sch, False, search and extent(sch, ky) > 1):  # the rows' taps too: searched
        sch.unroll(ky)


def schedule_dense(sch: s_tir.Schedule, family, search: bool = False) -> None:
    """Tile, tensorize (with `family.dot_intrinsic`) and fuse the epilogue of a packed dense.

    `search=True` leaves the tile sizes to MetaSchedule (sampled, recorded in the trace)."""
    intrin, out_block, in_block = family.dot_intrinsic, family.out_block, family.in_block
    block = sch.get_sblock("dense_packed")
    *lead, m, n, k = sch.get_loops(block)
    tiles = dense_tiles(extent(sch, m), extent(sch, n) // out_block, extent(sch, k), in_block,
                        family.acc_registers)
    nblk, nt = sch.split(n, [None, out_block])
    kblk, kt = sch.split(k, [None, in_block])
    mo, mi = _split(sch, m, tiles.rows, search, 8)
    no, nb = _split(sch, nblk, tiles.blocks, search, 8)
    ko, kc = _split(sch, kblk, tiles.k_chunk // in_block, search, 256)
    sch.reorder(*lead, no, mo, ko, kc, mi, nb, nt, kt)
    _tensorize_tile(sch, block, parallel=[*lead, no, mo], epilogue_at=None, reduction=ko,
                    tile=nt, register_loops=[mi, nb], intrin=intrin)


SCHEDULES = {"conv2d_packed": schedule_conv, "conv2d_pixels": schedule_conv_pixels,
             "conv2d_pixel_rows": schedule_conv_pixel_rows, "dense_packed": schedule_dense}


def packed_kind(sch: s_tir.Schedule) -> str | None:
    """The SCHEDULES key of the packed reduction the function holds, or None."""
    return next((n for n in SCHEDULES if find_block(sch, n) is not None), None)


def schedule_packed(sch: s_tir.Schedule, family, search: bool = False) -> None:
    """Schedule the function's packed kernel (see packed_kind) with its SCHEDULES entry."""
    SCHEDULES[packed_kind(sch)](sch, family, search)
