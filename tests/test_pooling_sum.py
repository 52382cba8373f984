"""PyTorch's float sum order for the PT2E global average pool (numerics.pooling.decomposed_mean),
compiled for the host and compared bit for bit with torch's own mean of the dequantized map.

A pooled value only moves a quantized output when it crosses a rounding boundary, so a model
test barely sees the order of the sum; this one compares the float32 means themselves.  It fails
for maps of 512 or more elements with the order of shorter rows (no cascade)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import te

from qcompile.numerics.pooling import decomposed_mean

SCALE, ZERO_POINT = 0.0371, 131


@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (1, 7), (3, 3), (7, 7), (5, 13), (14, 14), (23, 23), (28, 28),
                                  (56, 56), (61, 67), (112, 112), (160, 160), (400, 400)])
def test_mean_matches_torch_bit_for_bit(h, w):
    channels = 16
    rng = np.random.default_rng(h * 1000 + w)
    q = rng.integers(0, 256, size=(1, channels, h, w), dtype=np.uint8)
    x = te.placeholder(q.shape, "uint8", name="x")
    mean = decomposed_mean(x, (SCALE, ZERO_POINT))
    lib = tvm.compile(te.create_prim_func([x, mean]), target="llvm")
    out = tvm.runtime.empty((1, channels), "float32", tvm.cpu())
    lib(tvm.runtime.tensor(q), out)
    dequantized = (torch.from_numpy(q.astype(np.int32) - ZERO_POINT).float()
                   * torch.tensor(SCALE, dtype=torch.float32))
    expected = dequantized.mean(dim=(-2, -1)).numpy()
    assert np.array_equal(out.numpy().view(np.uint32), expected.view(np.uint32)), (
        np.count_nonzero(out.numpy() != expected))
