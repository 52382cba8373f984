"""Clear errors for input qcompile cannot take."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import qcompile
from qcompile import QCompileError

from helpers import inputs_like, quantize_eager, seeded


def test_float_model_asks_to_quantize_first():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with pytest.raises(QCompileError, match="float model.*Quantize it first"):
        qcompile.compile(model, [torch.randn(1, 3, 8, 8)])


class WithFloatOp(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.conv = seeded(nn.Conv2d(3, 4, 3))
        self.op = op

    def forward(self, x):
        return self.op(self.conv(x))


def test_unsupported_op_names_op_and_node():
    xs = inputs_like((1, 3, 8, 8))
    model = quantize_eager(WithFloatOp(torch.nn.functional.elu), xs)
    with pytest.raises(QCompileError) as err:
        qcompile.compile(model, xs[:1])
    message = str(err.value)
    assert "elu" in message and "node" in message and "Supported:" in message


def test_float_island_op_on_a_quantized_tensor_asks_for_a_dequant_stub():
    """GELU is supported as a float island, but here it reads the conv's 8-bit output."""
    xs = inputs_like((1, 3, 8, 8))
    model = quantize_eager(WithFloatOp(torch.nn.functional.gelu), xs)
    with pytest.raises(QCompileError, match=r"gelu is a float op applied to a quantized tensor: "
                                            r"put a DeQuantStub before it .* at node 'gelu'"):
        qcompile.compile(model, xs[:1])


def test_unknown_numerics():
    xs = inputs_like((1, 3, 8, 8))
    model = quantize_eager(seeded(nn.Conv2d(3, 4, 3)), xs)
    with pytest.raises(QCompileError, match="unknown numerics"):
        qcompile.compile(model, xs[:1], numerics="float16")


def test_wrong_input_shape_and_dtype_at_run_time():
    xs = inputs_like((1, 3, 8, 8))
    compiled = qcompile.compile(quantize_eager(seeded(nn.Conv2d(3, 4, 3)), xs), xs[:1])
    with pytest.raises(QCompileError, match="expected float32 of shape"):
        compiled(np.zeros((1, 3, 9, 8), np.float32))
    with pytest.raises(QCompileError, match="expected float32"):
        compiled(np.zeros((1, 3, 8, 8), np.float64))
