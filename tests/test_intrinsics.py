"""Each of our tensor intrinsics runs, gives numpy's answer, and emits its instruction."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import s_tir, te

from schedules.x86_intrinsics import VNNI_16x4


def _has_vnni() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx512vnni" in flags


def _packed_dense(m: int, k: int, n: int):
    """u8 A[m, k] x i8 W packed [n/16, k/4, 16, 4] -> i32 C[m, n], tensorized with VNNI."""
    a = te.placeholder((m, k), "uint8", name="A")
    w = te.placeholder((n // 16, k // 4, 16, 4), "int8", name="W")
    r = te.reduce_axis((0, k), "r")
    c = te.compute((m, n), lambda i, j: te.sum(
        a[i, r].astype("int32") * w[j // 16, r // 4, j % 16, r % 4].astype("int32"), axis=r),
        name="C")
    sch = s_tir.Schedule(te.create_prim_func([a, w, c]))
    block = sch.get_sblock("C")
    i, j, rr = sch.get_loops(block)
    jo, ji = sch.split(j, [None, 16])
    ro, ri = sch.split(rr, [None, 4])
    sch.reorder(i, jo, ro, ji, ri)
    sch.decompose_reduction(block, ro)
    sch.tensorize(ji, VNNI_16x4)
    return sch.mod


@pytest.mark.skipif(not _has_vnni(), reason="this CPU has no AVX-512 VNNI")
def test_vnni_16x4_runs_and_matches_numpy():
    m, k, n = 8, 64, 48
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})
    lib = tvm.compile(_packed_dense(m, k, n), target=target)
    assert "vpdpbusd" in lib.mod.inspect_source("asm")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    packed = w.reshape(n // 16, 16, k // 4, 4).transpose(0, 2, 1, 3).copy()
    c = tvm.runtime.tensor(np.zeros((m, n), np.int32))
    lib(tvm.runtime.tensor(a), tvm.runtime.tensor(packed), c)
    np.testing.assert_array_equal(c.numpy(), a.astype(np.int32) @ w.astype(np.int32).T)
