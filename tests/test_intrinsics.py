"""Each of our tensor intrinsics runs, gives numpy's answer, and emits its instruction."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
import tvm
from tvm import s_tir, te

import qcompile
from qcompile.schedules import FAMILIES
from qcompile.schedules.x86_intrinsics import AVX2_8x2, VNNI_16x4, VNNI_PIXELS_16x4_LOCAL


def _has_vnni() -> bool:
    return FAMILIES["x86-avx512-vnni"].runs_here()


def _has_avx2() -> bool:
    return FAMILIES["x86-avx2"].runs_here()


def _packed_dense(m: int, k: int, n: int, intrin=VNNI_16x4, ob=16, ib=4):
    """u8 A[m, k] x i8 W packed [n/ob, k/ib, ob, ib] -> i32 C[m, n], the ob x ib tile
    tensorized with `intrin` (default: VNNI 16x4)."""
    a = te.placeholder((m, k), "uint8", name="A")
    w = te.placeholder((n // ob, k // ib, ob, ib), "int8", name="W")
    r = te.reduce_axis((0, k), "r")
    c = te.compute((m, n), lambda i, j: te.sum(
        a[i, r].astype("int32") * w[j // ob, r // ib, j % ob, r % ib].astype("int32"), axis=r),
        name="C")
    sch = s_tir.Schedule(te.create_prim_func([a, w, c]))
    block = sch.get_sblock("C")
    i, j, rr = sch.get_loops(block)
    jo, ji = sch.split(j, [None, ob])
    ro, ri = sch.split(rr, [None, ib])
    sch.reorder(i, jo, ro, ji, ri)
    sch.decompose_reduction(block, ro)
    sch.tensorize(ji, intrin)
    return sch.mod


def _count(asm: str, instruction: str) -> int:
    return len(re.findall(rf"\b{instruction}\b", asm))


@pytest.mark.skipif(not _has_vnni(), reason="this CPU has no AVX-512 VNNI")
def test_vnni_16x4_runs_and_matches_numpy():
    m, k, n = 8, 64, 48
    target = FAMILIES["x86-avx512-vnni"].tvm_target()
    lib = tvm.compile(_packed_dense(m, k, n), target=target)
    assert "vpdpbusd" in lib.mod.inspect_source("asm")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    packed = w.reshape(n // 16, 16, k // 4, 4).transpose(0, 2, 1, 3).copy()
    c = tvm.runtime.tensor(np.zeros((m, n), np.int32))
    lib(tvm.runtime.tensor(a), tvm.runtime.tensor(packed), c)
    np.testing.assert_array_equal(c.numpy(), a.astype(np.int32) @ w.astype(np.int32).T)


@pytest.mark.skipif(not _has_vnni(), reason="this CPU has no AVX-512 VNNI")
def test_vnni_pixel_lanes_run_and_match_numpy():
    """C[o, p] = sum_k W[o, k] X[k, p] with 16 pixels as the lanes: activations packed
    [K/4, P, 4], each output channel's 4 weights broadcast to every lane."""
    k, p, n = 24, 48, 5
    xp = te.placeholder((k // 4, p, 4), "uint8", name="X")
    w = te.placeholder((n, k), "int8", name="W")
    r = te.reduce_axis((0, k), "r")
    c = te.compute((n, p), lambda o, q: te.sum(
        xp[r // 4, q, r % 4].astype("int32") * w[o, r].astype("int32"), axis=r), name="C")
    sch = s_tir.Schedule(te.create_prim_func([xp, w, c]))
    block = sch.get_sblock("C")
    o, q, rr = sch.get_loops(block)
    qo, qi = sch.split(q, [None, 16])
    ro, ri = sch.split(rr, [None, 4])
    sch.reorder(o, qo, ro, qi, ri)
    sch.cache_write(block, 0, "local")  # the intrinsic accumulates in registers
    sch.decompose_reduction(block, ro)
    sch.tensorize(qi, VNNI_PIXELS_16x4_LOCAL)
    lib = tvm.compile(sch.mod, target=FAMILIES["x86-avx512-vnni"].tvm_target())
    assert "vpdpbusd" in lib.mod.inspect_source("asm")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (k, p), dtype=np.uint8)
    wv = rng.integers(-128, 128, (n, k), dtype=np.int8)
    packed = x.reshape(k // 4, 4, p).transpose(0, 2, 1).copy()
    out = tvm.runtime.tensor(np.zeros((n, p), np.int32))
    lib(tvm.runtime.tensor(packed), tvm.runtime.tensor(wv), out)
    np.testing.assert_array_equal(out.numpy(), wv.astype(np.int32) @ x.astype(np.int32))


@pytest.mark.skipif(not _has_avx2(), reason="this CPU has no AVX2")
def test_avx2_8x2_is_exact_on_the_full_u8_i8_range():
    """vpmaddwd on widened operands: exact where vpmaddubsw would saturate its int16 pair sum."""
    m, k, n = 8, 64, 48
    target = FAMILIES["x86-avx2"].tvm_target()
    lib = tvm.compile(_packed_dense(m, k, n, AVX2_8x2, 8, 2), target=target)
    asm = lib.mod.inspect_source("asm")
    assert _count(asm, "vpmaddwd") > 0
    assert _count(asm, "vpmaddubsw") == 0
    assert "zmm" not in asm  # haswell: AVX2 only
    rng = np.random.default_rng(0)
    # every u8 value and every i8 value occurs, in random positions
    a = rng.permutation(np.arange(m * k) % 256).astype(np.uint8).reshape(m, k)
    w = rng.permutation(np.arange(n * k) % 256 - 128).astype(np.int8).reshape(n, k)
    a[0], w[0] = 255, -128   # most negative: each pair is -65280, far below int16's -32768
    a[1], w[1] = 255, 127    # most positive: each pair is 64770, far above int16's 32767
    packed_w = w.reshape(n // 8, 8, k // 2, 2).transpose(0, 2, 1, 3).copy()
    c = tvm.runtime.tensor(np.zeros((m, n), np.int32))
    lib(tvm.runtime.tensor(a), tvm.runtime.tensor(packed_w), c)
    expected = a.astype(np.int32) @ w.astype(np.int32).T
    assert expected[0, 0] == 255 * -128 * k and expected[1, 1] == 255 * 127 * k
    np.testing.assert_array_equal(c.numpy(), expected)


@pytest.mark.skipif(not _has_avx2(), reason="this CPU has no AVX2")
def test_avx2_family_tensorizes_a_small_model_bit_exact():
    """--target x86-avx2: every packed conv / dense is tensorized with the 8x2 intrinsic and the
    model matches PyTorch's fbgemm to the bit."""
    from helpers import inputs_like, quantize_eager, seeded

    body = torch.nn.Sequential(
        seeded(torch.nn.Conv2d(3, 16, 3, padding=1), 1), torch.nn.ReLU(),
        seeded(torch.nn.Conv2d(16, 24, 3, stride=2, padding=1), 2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), seeded(torch.nn.Linear(24, 10), 3))
    xs = inputs_like((1, 3, 32, 32), n=3, scale=2.0)
    model = quantize_eager(body, xs, fuse=[["body.0", "body.1"], ["body.2", "body.3"]])
    compiled = qcompile.compile(model, xs[:1], target="x86-avx2", numerics="fbgemm",
                                tune_logs=False)
    # both convs and the linear tensorized (a failed tensorization falls back to generic code)
    assert compiled.meta["kernels"]["tensorized"] == 3, compiled.meta["kernels"]
    asm = compiled.executable.mod.imports[0].inspect_source("asm")
    assert _count(asm, "vpmaddubsw") == 0 and "zmm" not in asm
    report = qcompile.verify(model, compiled, xs, engine="fbgemm")
    assert report["bit_exact_fraction"] == 1.0, report
    assert report["max_abs_lsb"] == 0, report


def _fbgemm_depthwise_reference(x, w, zx: int, k: int, stride: int, mult: int):
    """fbgemm's depthwise accumulator in numpy: row-major pairs of raw u8 x i8 products,
    each pair clamped to int16, summed in int32, minus zx sum(w) (padding reads zx); and how
    many pair sums the clamp changed."""
    n, c, h, wd = x.shape
    pad = (k - 1) // 2
    xp = np.pad(x.astype(np.int64), [(0, 0), (0, 0), (pad, pad), (pad, pad)], constant_values=zx)
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    taps = [xp[:, :, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
            for ky in range(k) for kx in range(k)]
    acc = np.zeros((n, c * mult, oh, ow), np.int64)
    saturated = 0
    for oc in range(c * mult):
        prods = [t[:, oc // mult] * int(w[oc, i]) for i, t in enumerate(taps)] + [0]
        for p in range(0, k * k, 2):
            pair = prods[p] + prods[p + 1]
            acc[:, oc] += np.clip(pair, -32768, 32767)
            saturated += int((np.abs(pair) > 32767).sum())
        acc[:, oc] -= zx * int(w[oc, :k * k].astype(np.int64).sum())
    return acc, saturated


def _depthwise_operands(seed: int, shape, zx: int, out_channels: int, taps: int):
    """Full-range u8 activations, i8 weights zero-padded to 4k taps and the -zx sum(w) term, as
    arrays and as TE placeholders."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    w = np.zeros((out_channels, -(-taps // 4) * 4), np.int8)
    w[:, :taps] = rng.integers(-128, 128, (out_channels, taps))
    corr = (-zx * w.astype(np.int64).sum(axis=1)).astype(np.int32)
    placeholders = (te.placeholder(shape, "uint8", name="x"),
                    te.placeholder(w.shape, "int8", name="w"),
                    te.placeholder(corr.shape, "int32", name="corr"))
    return (x, w, corr), placeholders


def _assert_quads_and_vectorized_give(func, arrays, expected, instruction: str):
    """`func` (a window kernel) scheduled with the quad intrinsic and with its expression
    vectorized: both compute `expected`; `instruction` is in the first one's code only."""
    from qcompile.schedules.default_cpu import schedule_func

    family = FAMILIES["x86-avx512-vnni"]
    for quads in (True, False):
        scheduled, how = schedule_func(func, dataclasses.replace(family, depthwise_quads=quads))
        assert how == "window"
        lib = tvm.compile(tvm.IRModule({"main": scheduled}), target=family.tvm_target())
        assert (_count(lib.mod.inspect_source("asm"), instruction) > 0) == quads
        out = tvm.runtime.tensor(np.zeros(expected.shape, np.int32))
        lib(*[tvm.runtime.tensor(a) for a in arrays], out)
        np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.skipif(not _has_vnni(), reason="this CPU has no AVX-512 VNNI")
@pytest.mark.parametrize("k,stride,mult", [(3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 1),
                                           (7, 1, 1), (7, 2, 1)])
def test_fbgemm_depthwise_quads_saturate_as_fbgemm(k, stride, mult):
    """schedules.depthwise_quads: fbgemm's depthwise accumulator on the full u8 x i8 range
    (many pairs saturate), every kernel size and stride fbgemm's fast path takes, equal to
    numpy's and to the vectorized expression it replaces; vpmaddubsw is in the code."""
    from qcompile.numerics.depthwise import depthwise_conv_fbgemm

    zx, shape = 37, (1, 16, 19, 23)
    arrays, (xt, wt, ct) = _depthwise_operands(k * 10 + stride, shape, zx, 16 * mult, k * k)
    acc = depthwise_conv_fbgemm(xt, wt, ct, None, zx, k, [stride, stride], [(k - 1) // 2] * 4)
    func = te.create_prim_func([xt, wt, ct, acc]).with_attr("global_symbol", "main")
    expected, saturated = _fbgemm_depthwise_reference(*arrays[:2], zx, k, stride, mult)
    assert saturated > 100  # the inputs reach the quirk: a wrong saturation would show
    _assert_quads_and_vectorized_give(func, arrays, expected, "vpmaddubsw")


@pytest.mark.skipif(not _has_vnni(), reason="this CPU has no AVX-512 VNNI")
@pytest.mark.parametrize("kernel,stride,padding,mult", [
    ((3, 3), 1, (1, 1, 1, 1), 1), ((3, 3), 2, (0, 1, 1, 0), 2), ((3, 5), 1, (1, 2, 1, 2), 1),
    ((5, 5), 2, (2, 2, 2, 2), 1)])
def test_exact_depthwise_quads_run_vpdpbusd_exactly(kernel, stride, padding, mult):
    """schedules.depthwise_quads, exact mode (u8 activations, int8 weights: PT2E, the integer
    and qnnpack contracts): four taps per vpdpbusd give numpy's exact sum, for square and
    oblong kernels, asymmetric padding, channel multiplier 2; the vectorized expression too."""
    from qcompile.numerics.depthwise import depthwise_conv_exact_int8

    kh, kw = kernel
    zx, shape = 200, (1, 16, 17, 21)
    arrays, (xt, wt, ct) = _depthwise_operands(kh * 10 + kw + stride, shape, zx, 16 * mult,
                                               kh * kw)
    acc = depthwise_conv_exact_int8(xt, wt, ct, zx, kernel, [stride, stride], padding)
    func = te.create_prim_func([xt, wt, ct, acc]).with_attr("global_symbol", "main")
    x, w, _ = arrays
    top, left, bottom, right = padding
    xp = np.pad(x.astype(np.int64) - zx, [(0, 0), (0, 0), (top, bottom), (left, right)])
    oh = (shape[2] + top + bottom - kh) // stride + 1
    ow = (shape[3] + left + right - kw) // stride + 1
    expected = np.zeros((1, 16 * mult, oh, ow), np.int64)
    for oc in range(16 * mult):
        for t in range(kh * kw):
            ky, kx = divmod(t, kw)
            window = xp[:, oc // mult, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
            expected[:, oc] += window[:, :oh, :ow] * int(w[oc, t])
    _assert_quads_and_vectorized_give(func, arrays, expected, "vpdpbusd")
