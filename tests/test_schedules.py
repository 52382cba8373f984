"""The default schedules: packed weights, tensorized conv/dense, the depthwise kernel.

Tensorization that fails falls back to correct generic code, so these tests check both that
the fast path was taken (the compile report, the assembly) and that it is bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn

import qcompile
from qcompile.passes.pack_layout import pack_conv_weight, pack_dense_weight
from qcompile.schedules import resolve_family

from helpers import assert_builds_agree, inputs_like, quantize_eager, seeded

VNNI = resolve_family("x86-avx512-vnni")


def test_packed_weights_hold_each_tile_contiguously():
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (20, 7), dtype=np.int8)           # N=20, K=7: both padded
    p = pack_dense_weight(w, 16, 4)
    assert p.shape == (2, 2, 16, 4)
    for n in range(20):
        for k in range(7):
            assert p[n // 16, k // 4, n % 16, k % 4] == w[n, k]
    assert not p[1, :, 4:].any() and not p[:, 1, :, 3].any()     # padding is zero weight
    wc = rng.integers(-128, 128, (10, 3, 3, 3), dtype=np.int8)
    pc = pack_conv_weight(wc, 16, 4)
    assert pc.shape == (1, 1, 3, 3, 16, 4)
    np.testing.assert_array_equal(pc[0, 0, :, :, :10, :3].transpose(2, 3, 0, 1), wc)
    assert not pc[0, 0, :, :, 10:].any() and not pc[..., 3].any()


@pytest.mark.skipif(not VNNI.runs_here(), reason="needs AVX-512 VNNI")
def test_convs_and_linear_are_tensorized_and_exact():
    body = nn.Sequential(
        seeded(nn.Conv2d(3, 10, 3, stride=2, padding=1), 1), nn.ReLU(),   # odd channels
        seeded(nn.Conv2d(10, 24, 1), 2), nn.ReLU(),                       # 1x1
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), seeded(nn.Linear(24, 7), 3))
    xs = inputs_like((1, 3, 20, 20), n=3, scale=2.0)
    model = quantize_eager(body, xs, fuse=[["body.0", "body.1"], ["body.2", "body.3"]])
    compiled = qcompile.compile(model, xs[:1], target=VNNI.name, tune_logs=False)
    assert compiled.meta["kernels"]["tensorized"] == 3, compiled.meta["kernels"]
    assert "vpdpbusd" in compiled.executable.mod.imports[0].inspect_source("asm")
    report = qcompile.verify(model, compiled, xs)
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


def test_fbgemm_depthwise_kernels_get_their_schedule_and_stay_exact():
    body = nn.Sequential(
        seeded(nn.Conv2d(16, 16, 3, padding=1, groups=16), 1), nn.ReLU(),
        seeded(nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), 2), nn.ReLU(),
        seeded(nn.Conv2d(16, 32, 5, padding=2, groups=16), 3))           # channel multiplier 2
    xs = inputs_like((1, 16, 19, 21), n=3, scale=3.0)
    model = quantize_eager(body, xs, fuse=[["body.0", "body.1"], ["body.2", "body.3"]])
    compiled = qcompile.compile(model, xs[:1], tune_logs=False)
    assert compiled.meta["kernels"]["window"] == 3, compiled.meta["kernels"]
    report = qcompile.verify(model, compiled, xs)
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


@pytest.mark.parametrize("numerics", ["fbgemm", "qnnpack"])
def test_other_depthwise_convs_get_the_exact_window_kernel(numerics):
    """Depthwise convs fbgemm's fast path does not take (12 channels, no padding, a 3x5
    kernel, strides 2x1), and every depthwise conv under the other contracts, become the exact
    window kernel (not TVM's generically scheduled grouped conv2d) and stay bit-exact."""
    body = nn.Sequential(
        seeded(nn.Conv2d(12, 12, 3, groups=12), 1), nn.ReLU(),                   # no padding
        seeded(nn.Conv2d(12, 24, (3, 5), stride=(2, 1), padding=(1, 2), groups=12), 2),
        seeded(nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24), 3))
    xs = inputs_like((1, 12, 19, 23), n=3, scale=3.0, shift=-1.0)
    model = quantize_eager(body, xs, engine=numerics, fuse=[["body.0", "body.1"]])
    compiled = qcompile.compile(model, xs[:1], numerics=numerics, tune_logs=False)
    assert compiled.meta["kernels"]["window"] == 3, compiled.meta["kernels"]
    report = qcompile.verify(model, compiled, xs)
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


class _ConvAdd(nn.Module):
    """conv + residual add, whose sum feeds another conv: the add ends the first kernel."""

    def __init__(self):
        super().__init__()
        self.conv = seeded(nn.Conv2d(8, 8, 1), 4)
        self.add = nn.quantized.FloatFunctional()
        self.after = seeded(nn.Conv2d(8, 4, 1), 5)

    def forward(self, x):
        return self.after(self.add.add(self.conv(x), x))


@pytest.mark.parametrize("width,kernel", [(15, "conv2d_packed"), (16, "conv2d_pixels")])
def test_an_add_ending_a_conv_kernel_is_computed_per_tile(width, kernel):
    """qnnpack's add is computed into a buffer of its own (not inlined: see
    schedules.common.MATERIALIZED); when it is the kernel's last block it must still run per
    register tile, inside the parallel loop: it once ran serially over the whole output after
    the conv, and MobileNetV2 under qnnpack took 4.8 ms instead of 4.0.  Both conv kernels:
    6 x 15 pixels take the channel-lane one, 6 x 16 (whole vectors) the pixel-lane one."""
    import tvm
    from tvm import s_tir

    from qcompile.compiler.driver import fuse, integer_module
    from qcompile.numerics import get_contract
    from qcompile.schedules.default_cpu import schedule_func

    xs = inputs_like((1, 8, 6, width), n=2, scale=2.0)
    model = quantize_eager(_ConvAdd(), xs, engine="qnnpack")
    integer, _, _ = integer_module(model, [xs[0].numpy()], get_contract("qnnpack"), 2, VNNI)
    fused = fuse(integer, VNNI.tvm_target())
    kernels = [f for gv, f in fused.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and "qadd_qnnpack" in gv.name_hint
               and kernel in gv.name_hint]
    assert len(kernels) == 1, [gv.name_hint for gv, _ in fused.functions_items()]
    scheduled, how = schedule_func(kernels[0], VNNI)
    assert how == "tensorized"
    sch = s_tir.Schedule(scheduled)
    outer = sch.get(sch.get_loops(sch.get_sblock("qadd_qnnpack"))[0])
    assert outer.kind == tvm.tirx.ForKind.PARALLEL, scheduled.script()
    report = qcompile.verify(model, qcompile.compile(model, xs[:1], numerics="qnnpack",
                                                     tune_logs=False), xs, engine="qnnpack")
    assert report["bit_exact_fraction"] == 1.0, report


class _PixelLaneConvs(nn.Module):
    """Convs the pixel-lane kernels take, with channel counts no multiple of 16: a 7x7
    stride-2 stem padded with the zero point and a 3x3 (rows of 16 output pixels:
    "conv2d_pixel_rows"), 1x1s over 16 x 16 pixels ("conv2d_pixels"), one ended by a residual
    add; and a stride-2 1x1 with 8-pixel rows, which stays on the channel-lane kernel."""

    def __init__(self):
        super().__init__()
        self.stem, self.relu0 = seeded(nn.Conv2d(3, 10, 7, stride=2, padding=3), 1), nn.ReLU()
        self.expand, self.relu1 = seeded(nn.Conv2d(10, 24, 1), 2), nn.ReLU()
        self.project = seeded(nn.Conv2d(24, 10, 1), 3)
        self.add = nn.quantized.FloatFunctional()
        self.mid = seeded(nn.Conv2d(10, 12, 3, padding=1), 4)
        self.tail = seeded(nn.Conv2d(12, 7, 1, stride=2), 5)

    def forward(self, x):
        y = self.relu0(self.stem(x))
        y = self.add.add(self.project(self.relu1(self.expand(y))), y)
        return self.tail(self.mid(y))


_PIXEL_FUSE = [["body.stem", "body.relu0"], ["body.expand", "body.relu1"]]
_PIXEL_INPUT = (1, 3, 32, 32)


@pytest.mark.skipif(not VNNI.runs_here(), reason="needs AVX-512 VNNI")
@pytest.mark.parametrize("numerics", ["fbgemm", "qnnpack"])
def test_pixel_lane_convs_are_taken_and_stay_exact(numerics):
    from qcompile.compiler.driver import integer_module
    from qcompile.numerics import get_contract

    xs = inputs_like(_PIXEL_INPUT, n=3, scale=2.0)
    model = quantize_eager(_PixelLaneConvs(), xs, engine=numerics, fuse=_PIXEL_FUSE)
    integer, _, _ = integer_module(model, [xs[0].numpy()], get_contract(numerics), 2, VNNI)
    names = [gv.name_hint for gv, _ in integer.functions_items()]
    counts = {k: sum(n.startswith(k) for n in names)
              for k in ("conv2d_pixels", "conv2d_pixel_rows", "conv2d_packed")}
    assert counts == {"conv2d_pixels": 2, "conv2d_pixel_rows": 2, "conv2d_packed": 1}, names
    compiled = qcompile.compile(model, xs[:1], numerics=numerics, target=VNNI.name,
                                tune_logs=False)
    assert compiled.meta["kernels"]["tensorized"] == 5, compiled.meta["kernels"]
    report = qcompile.verify(model, compiled, xs, engine=numerics)
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


@pytest.mark.skipif(not VNNI.runs_here(), reason="needs AVX-512 VNNI")
@pytest.mark.parametrize("cin,kernel", [(256, "conv2d_pixels"), (272, "conv2d_packed")])
def test_a_1x1_too_wide_for_a_pixel_tile_takes_channel_lanes(cin, kernel):
    """A pixel-lane 1x1's tile reads 8 pixel vectors of every input channel: past 256
    channels (32 KB, pack_layout.PIXEL_TILE_BYTES) it would stream from L2, so the conv takes
    the channel-lane kernel (ResNeXt's 512->512 at 28x28: 0.55 -> 0.29 ms)."""
    from qcompile.compiler.driver import integer_module
    from qcompile.numerics import get_contract

    xs = inputs_like((1, cin, 4, 8), n=2, scale=2.0)
    model = quantize_eager(seeded(nn.Conv2d(cin, 16, 1)), xs)
    integer, _, _ = integer_module(model, [xs[0].numpy()], get_contract("fbgemm"), 2, VNNI)
    names = [gv.name_hint for gv, _ in integer.functions_items()]
    assert [n for n in names if n.startswith("conv2d_")] == [kernel], names
    report = qcompile.verify(model, qcompile.compile(model, xs[:1], target=VNNI.name,
                                                     tune_logs=False), xs)
    assert report["bit_exact_fraction"] == 1.0, report


@pytest.mark.skipif(not VNNI.runs_here(), reason="needs AVX-512 VNNI")
def test_pixel_and_channel_lane_kernels_agree_to_the_bit(monkeypatch):
    """The integer contract has no PyTorch twin to compare with: the pixel-lane kernels must
    give what the channel-lane kernel gives for the same convs."""
    xs = inputs_like(_PIXEL_INPUT, n=2, scale=2.0)
    model = quantize_eager(_PixelLaneConvs(), xs, fuse=_PIXEL_FUSE)
    with_pixels, without = assert_builds_agree(model, xs, monkeypatch, VNNI,
                                               pixel_intrinsic=None)
    assert "conv2d_pixels" in with_pixels.integer_module.script()
    assert "conv2d_pixels" not in without.integer_module.script()


@pytest.mark.skipif(not VNNI.runs_here(), reason="needs AVX-512 VNNI")
def test_pixel_lane_tiles_are_a_tuning_space():
    """MetaSchedule samples the pixel-lane kernels' tiles (schedules.packed, search=True)."""
    import tvm
    from tvm import s_tir

    from qcompile.compiler.driver import fuse, integer_module
    from qcompile.numerics import get_contract
    from qcompile.schedules import packed

    xs = inputs_like(_PIXEL_INPUT, n=1, scale=2.0)
    model = quantize_eager(_PixelLaneConvs(), xs, fuse=_PIXEL_FUSE)
    integer, _, _ = integer_module(model, [xs[0].numpy()], get_contract("fbgemm"), 2, VNNI)
    fused = fuse(integer, VNNI.tvm_target())
    for kind in ("conv2d_pixels", "conv2d_pixel_rows"):
        func = next(f for gv, f in fused.functions_items()
                    if isinstance(f, tvm.tirx.PrimFunc) and kind + "_" in gv.name_hint)
        sch = s_tir.Schedule(func, seed=3)
        packed.schedule_packed(sch, VNNI, search=True)
        assert sum(inst.kind.name == "SamplePerfectTile" for inst in sch.trace.insts) == 2
        func = sch.mod["main"].with_attr("global_symbol", "main")
        assert "vpdpbusd" in tvm.compile(tvm.IRModule({"main": func}), target=VNNI.tvm_target()
                                         ).mod.inspect_source("asm")


def _serial_blocks(func, family):
    """(block, elements) of the scheduled `func`'s top-level blocks under no parallel loop."""
    import tvm
    from tvm import s_tir

    from qcompile.schedules.default_cpu import schedule_func

    sch = s_tir.Schedule(schedule_func(func, family)[0])
    serial = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = [sch.get(loop) for loop in sch.get_loops(block)]
        if loops and all(loop.kind != tvm.tirx.ForKind.PARALLEL for loop in loops):
            serial.append((sch.get(block).name_hint,
                           int(np.prod([int(loop.extent) for loop in loops]))))
    return serial


@pytest.mark.parametrize("name,numerics", [("mobilenet_v2", "fbgemm"), ("mobilenet_v2", "qnnpack"),
                                           ("mobilenet_v3_small", "integer"),
                                           ("resnet18", "qnnpack")])
def test_no_kernel_of_a_zoo_model_runs_serially(name, numerics):
    """Every block of every kernel with 1024 or more iterations runs under a parallel loop: a
    schedule that gives up part-way leaves correct but serial code nothing else reports."""
    import tvm

    from qcompile import zoo
    from qcompile.compiler.driver import fuse, integer_module
    from qcompile.numerics import get_contract

    entry = zoo.get(name, engine="qnnpack" if numerics == "qnnpack" else "fbgemm",
                    image_size=32)
    integer, _, _ = integer_module(entry.quantized, [entry.example_inputs(1)[0].numpy()],
                                   get_contract(numerics), 2, VNNI)
    serial = {gv.name_hint: blocks for gv, func in fuse(integer, VNNI.tvm_target()).functions_items()
              if isinstance(func, tvm.tirx.PrimFunc)
              and (blocks := [b for b in _serial_blocks(func, VNNI) if b[1] >= 1024])}
    assert not serial, serial


@pytest.mark.skipif(not VNNI.runs_here(), reason="needs AVX-512 VNNI")
@pytest.mark.parametrize("cin,cout,groups", [(16, 16, 4), (24, 24, 3), (32, 64, 4)])
def test_grouped_convs_are_tensorized_by_the_tile_their_groups_fill(cin, cout, groups):
    """ResNeXt's grouped convs (4 to 64 channels per group) run on the packed kernel, tiled
    16, 8 or 4 outputs wide (zmm, ymm, xmm vpdpbusd), bit-exact."""
    body = nn.Sequential(seeded(nn.Conv2d(cin, cout, 3, padding=1, groups=groups), seed=cin),
                         nn.ReLU())
    xs = inputs_like((1, cin, 9, 7), n=3)
    model = quantize_eager(body, xs, fuse=[["body.0", "body.1"]])
    compiled = qcompile.compile(model, xs[:1], target=VNNI.name, tune_logs=False)
    assert compiled.meta["kernels"]["generic"] == 1, compiled.meta  # the input's quantize
    assert any("conv2d_packed" in name for name in compiled.meta["kernel_schedules"])
    report = qcompile.verify(model, compiled, xs)
    assert report["bit_exact_fraction"] == 1.0, report


@pytest.mark.parametrize("rows, cols", [(197, 197), (197, 64), (8, 48)])
def test_float_matmuls_of_odd_sizes_are_padded_to_vectors_and_stay_the_same(rows, cols):
    """Attention over 197 tokens: the generic schedule pads such a reduction to whole vectors
    and row blocks (pad_einsum) instead of leaving it scalar; the floats do not change (the
    same products summed in the same order)."""
    import tvm
    from tvm import te

    from qcompile.schedules import default_cpu

    a = te.placeholder((3, rows, 64), "float32", name="a")
    b = te.placeholder((3, 64, cols), "float32", name="b")
    k = te.reduce_axis((0, 64), "k")
    mm = te.compute((3, rows, cols), lambda h, i, j: te.sum(a[h, i, k] * b[h, k, j], axis=k),
                    name="mm")
    func = te.create_prim_func([a, b, mm])
    scheduled = default_cpu._schedule_generic(func)
    script = scheduled.script()
    assert ("a_pad" in script) == (cols % 16 != 0 or rows % 4 != 0), script[:2000]
    rng = np.random.default_rng(0)
    an = rng.standard_normal((3, rows, 64)).astype("float32")
    bn = rng.standard_normal((3, 64, cols)).astype("float32")
    outs = []
    for f in (func, scheduled):
        out = tvm.runtime.empty((3, rows, cols), "float32")
        tvm.compile(f, target="llvm")(tvm.runtime.tensor(an), tvm.runtime.tensor(bn), out)
        outs.append(out.numpy())
    assert np.array_equal(outs[0], outs[1])


def _run_both(func, scheduled, arrays, out_shape):
    import tvm

    outs = []
    for f in (func, scheduled):
        out = tvm.runtime.empty(out_shape, "float32")
        tvm.compile(f, target="llvm")(*(tvm.runtime.tensor(a) for a in arrays), out)
        outs.append(out.numpy())
    return outs


@pytest.mark.parametrize("tokens", [128, 197])
def test_attention_scores_take_scale_and_mask_per_tile_without_intermediates(tokens):
    """QK^T, its scale and the mask select, fused by Relax into one function of three blocks:
    the generic schedule computes the scale and the select on each accumulator tile (no
    whole-size intermediate buffer; BERT-base batch 8 had two of 6 MB) and the floats do not
    change; with 197 tokens the padded reduction (pad_einsum) keeps its crop to a buffer of
    its own (inlined into the write-back, the crop would be lost)."""
    from tvm import te, tirx

    from qcompile.schedules import default_cpu

    q = te.placeholder((2, tokens, 64), "float32", name="q")
    kt = te.placeholder((2, 64, tokens), "float32", name="kt")
    mask = te.placeholder((tokens,), "bool", name="mask")
    r = te.reduce_axis((0, 64), "r")
    mm = te.compute((2, tokens, tokens), lambda h, i, j: te.sum(q[h, i, r] * kt[h, r, j], axis=r),
                    name="mm")
    scaled = te.compute(mm.shape, lambda h, i, j: mm[h, i, j] * np.float32(0.125), name="scaled")
    out = te.compute(mm.shape, lambda h, i, j: tirx.Select(
        mask[j], scaled[h, i, j], tirx.const(-3.0e38, "float32")), name="masked")
    func = te.create_prim_func([q, kt, mask, out])
    scheduled = default_cpu._schedule_generic(func)
    script = scheduled.script()
    intermediates = [line for line in script.splitlines() if "sblock_alloc_buffer" in line
                     and 'scope="local"' not in line and "_pad" not in line]
    assert len(intermediates) == (tokens % 16 != 0), script[:3000]  # 197: the padded sum's crop
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2, tokens, 64)).astype("float32"),
              rng.standard_normal((2, 64, tokens)).astype("float32"),
              rng.integers(0, 2, tokens).astype(bool)]
    before, after = _run_both(func, scheduled, arrays, (2, tokens, tokens))
    assert np.array_equal(before, after)


def test_head_transposes_are_one_pass_and_keys_are_tiled():
    """Splitting hidden states into heads (reshape then transpose) becomes one pass over the
    data; the keys' transpose to (head, dim, token), read along one axis and written along
    another, is computed in 16 x 16 tiles."""
    from tvm import te, topi

    from qcompile.schedules import default_cpu

    x = te.placeholder((2, 32, 128), "float32", name="x")
    heads = topi.reshape(x, (2, 32, 2, 64))
    for perm, tiled in (((0, 2, 1, 3), False), ((0, 2, 3, 1), True)):
        out = topi.transpose(heads, perm)
        func = te.create_prim_func([x, out])
        scheduled = default_cpu._schedule_generic(func)
        script = scheduled.script()
        assert "sblock_alloc_buffer" not in script, script[:3000]
        assert ("T.unroll(" in script) == tiled, script[:3000]
        arrays = [np.random.default_rng(1).standard_normal((2, 32, 128)).astype("float32")]
        before, after = _run_both(func, scheduled, arrays, tuple(int(d) for d in out.shape))
        assert np.array_equal(before, after)


@pytest.mark.parametrize("kernel", ["softmax", "layer_norm"])
def test_row_kernels_are_computed_row_by_row_and_stay_the_same(kernel):
    """softmax and LayerNorm compute each row start to end (schedules.rows: the row's
    intermediates stay in L1) with the same floats as the block-by-block generic schedule."""
    import tvm
    from tvm import te, topi

    from qcompile.numerics import float_islands
    from qcompile.schedules import default_cpu

    shape = (2, 8, 128) if kernel == "softmax" else (2, 8, 768)
    x = te.placeholder(shape, "float32", name="x")
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype("float32") * 4]
    if kernel == "softmax":
        func = te.create_prim_func([x, float_islands.softmax(x, -1)])
    else:
        g = te.placeholder((768,), "float32", name="g")
        b = te.placeholder((768,), "float32", name="b")
        func = te.create_prim_func([x, g, b, topi.nn.layer_norm(x, g, b, axis=[2], epsilon=1e-12)])
        arrays += [rng.standard_normal(768).astype("float32") for _ in range(2)]
    rows, how = default_cpu.schedule_func(func, None)
    script = rows.script()
    assert how == "generic" and script.count("T.parallel(") == 1, script[:3000]
    assert "_rf" in script and "T.vectorized(" in script, script[:3000]
    outs = []
    for f in (default_cpu._schedule_generic(func), rows):
        out = tvm.runtime.empty(shape, "float32")
        tvm.compile(f, target="llvm")(*(tvm.runtime.tensor(a) for a in arrays), out)
        outs.append(out.numpy())
    assert np.array_equal(outs[0], outs[1])
