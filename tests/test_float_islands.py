"""numerics.float_islands (GELU, SiLU as vectorizable kernels) against PyTorch's own float
kernels: close, not bit-exact (their exp is exp_poly, not Sleef's; PyTorch's GELU kernel is
not the erf formula composed from torch.erf either: both are within ~1e-6 of the true GELU,
ours the closer one, but equal for only ~40% of inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import te

from qcompile.numerics import float_islands
from qcompile.numerics.tir_ops import exp_poly


def _run(fn, values: np.ndarray) -> np.ndarray:
    x = te.placeholder(values.shape, "float32", name="x")
    lib = tvm.compile(te.create_prim_func([x, fn(x)]), target="llvm")
    out = tvm.runtime.empty(values.shape, "float32", tvm.cpu())
    lib(tvm.runtime.tensor(values), out)
    return out.numpy()


def _values() -> np.ndarray:
    rng = np.random.default_rng(0)
    edges = [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 100.0, -100.0, 1e30, -1e30]
    return np.concatenate([edges, rng.normal(0, 3, 65526)]).astype(np.float32)


def test_exp_poly_is_within_two_ulp():
    values = np.random.default_rng(1).uniform(-87, 87, 1 << 16).astype(np.float32)
    ours = _run(lambda x: te.compute(x.shape, lambda i: exp_poly(x[i])), values)
    exact = np.exp(values.astype(np.float64))
    assert (np.abs(ours - exact) / exact).max() < 2 * 2.0**-23


@pytest.mark.parametrize("name, absolute, equal", [("gelu", 2e-6, 0.3), ("silu", 1e-11, 0.5)])
def test_formulas_follow_pytorch(name, absolute, equal):
    values = _values()
    ours = _run(getattr(float_islands, name), values)
    theirs = getattr(torch.nn.functional, name)(torch.from_numpy(values)).numpy()
    assert np.isfinite(ours).all()
    assert (np.abs(ours - theirs) <= absolute + 1e-6 * np.abs(theirs)).all()
    assert (ours == theirs).mean() > equal
