"""Dense kernels on AMX tiles (schedules.amx, family x86-amx): which kernels qualify, exact
sums on the whole u8 x i8 range, the permission request that lets a fresh process run them,
and a quantized FFN stack bit-exact with PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import tvm
from tvm import s_tir, te

import qcompile
from qcompile.passes.pack_layout import pack_dense_weight
from qcompile.zoo.bert import FFNBlock
from qcompile.schedules import FAMILIES, amx

from helpers import inputs_like, quantize_eager

AMX = FAMILIES["x86-amx"]
needs_amx = pytest.mark.skipif(not AMX.runs_here(), reason="this CPU has no AMX-INT8")


def _dense_relu_shift(lead: tuple, m: int, k: int, n: int) -> tvm.tirx.PrimFunc:
    """u8 x[lead, m, k] . i8 packed weights -> int32 sums, then an epilogue (relu, >> 8,
    clipped to u8), named as pack_layout names the packed dense."""
    x = te.placeholder((*lead, m, k), "uint8", name="x")
    w = te.placeholder((n // 16, k // 4, 16, 4), "int8", name="w")
    r = te.reduce_axis((0, k), "r")
    acc = te.compute((*lead, m, n), lambda *i: te.sum(
        x[(*i[:-1], r)].astype("int32")
        * w[i[-1] // 16, r // 4, i[-1] % 16, r % 4].astype("int32"), axis=r), name="dense_packed")
    out = te.compute((*lead, m, n), lambda *i: te.min(te.max(acc[i] >> 8, 0), 255).astype("uint8"),
                     name="epilogue")
    return te.create_prim_func([x, w, out])


def _expected(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    acc = x.astype(np.int64) @ w.astype(np.int64).T
    return np.clip(acc >> 8, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape,fits", [
    (((1,), 128, 768, 3072), True),    # BERT-base's FFN, 128 tokens
    (((), 32, 64, 32), True),
    (((1,), 1, 512, 1024), False),     # one row (a CNN's classifier): VNNI
    (((), 32, 96, 32), False),         # K not a multiple of 64
    (((), 48, 64, 32), False),         # M not a multiple of 32
])
def test_which_dense_kernels_run_on_amx(shape, fits):
    assert amx.fits(s_tir.Schedule(_dense_relu_shift(*shape))) is fits


def _build(func, request_permission=True):
    sch = s_tir.Schedule(func)
    amx.schedule_dense_amx(sch)
    scheduled = sch.mod["main"]
    if request_permission:
        scheduled = amx.with_permission_request(scheduled)
    return tvm.compile(tvm.IRModule({"main": scheduled}), target=AMX.tvm_target())


@needs_amx
@pytest.mark.parametrize("lead,m,k,n", [((), 32, 64, 32), ((1,), 96, 192, 64)])
def test_amx_dense_is_exact_on_the_full_range(lead, m, k, n):
    lib = _build(_dense_relu_shift(lead, m, k, n))
    asm = lib.mod.inspect_source("asm")
    assert "tdpbusd" in asm and "ldtilecfg" in asm
    rng = np.random.default_rng(0)
    cases = [(np.full((m, k), 255, np.uint8), np.full((n, k), -128, np.int8)),
             (np.full((m, k), 255, np.uint8), np.full((n, k), 127, np.int8)),
             (rng.integers(0, 256, (m, k), dtype=np.uint8),
              rng.integers(-128, 128, (n, k), dtype=np.int8))]
    for x, w in cases:
        out = tvm.runtime.tensor(np.zeros((*lead, m, n), np.uint8))
        packed = tvm.runtime.tensor(pack_dense_weight(w, 16, 4))
        lib(tvm.runtime.tensor(x.reshape(*lead, m, k)), packed, out)
        np.testing.assert_array_equal(out.numpy().reshape(m, n), _expected(x, w))


_RUN_IN_FRESH_PROCESS = """
import sys, numpy as np, tvm
lib = tvm.runtime.load_module(sys.argv[1])
rng = np.random.default_rng(1)
x = rng.integers(0, 256, (32, 64), dtype=np.uint8)
w = rng.integers(-128, 128, (32, 64), dtype=np.int8)
packed = w.reshape(2, 16, 16, 4).transpose(0, 2, 1, 3).copy()
out = tvm.runtime.tensor(np.zeros((32, 32), np.uint8))
lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(packed), out)
acc = x.astype(np.int64) @ w.astype(np.int64).T
assert np.array_equal(out.numpy(), np.clip(acc >> 8, 0, 255).astype(np.uint8))
print("ok")
"""


@needs_amx
def test_an_amx_library_runs_in_a_process_that_never_asked_for_amx(tmp_path):
    """Linux faults the first tile instruction of a process that did not request AMX state:
    the kernel asks on entry, so a bare TVM loader runs it (and without the request, dies)."""
    results = {}
    for request in (True, False):
        path = str(tmp_path / f"dense_{request}.so")
        _build(_dense_relu_shift((), 32, 64, 32), request_permission=request).export_library(path)
        results[request] = subprocess.run(
            [sys.executable, "-c", _RUN_IN_FRESH_PROCESS, path], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": ""}, timeout=300)
    assert results[True].returncode == 0 and "ok" in results[True].stdout, results[True].stderr
    assert results[False].returncode != 0  # SIGILL: what the request is for


@needs_amx
def test_quantized_ffn_stack_on_amx_is_bit_exact_with_pytorch():
    torch.manual_seed(0)
    body = torch.nn.Sequential(FFNBlock(128, 256), FFNBlock(128, 256)).eval()
    xs = inputs_like((1, 64, 128), n=3)
    model = quantize_eager(body, xs, fuse=[[f"body.{i}.fc1", f"body.{i}.relu"] for i in range(2)])
    compiled = qcompile.compile(model, xs[:1], target="x86-amx")
    assert compiled.meta["kernels"]["amx"] >= 2, compiled.meta["kernels"]
    report = qcompile.verify(model, compiled, xs)
    assert report["bit_exact_fraction"] == 1.0, report
