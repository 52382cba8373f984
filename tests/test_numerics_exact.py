"""Single-op models that pin engine-specific numerics, each compiled and required bit for bit.

fbgemm: the depthwise fast path (3x3 / 5x5, stride 1 / 2) on activations above 127 with weights
near +-127, where pairs of raw u8 x i8 products saturate to int16.  qnnpack: relu6 / hardtanh
(whose qnnpack clamp permutes channels-last tensors), add / add_relu (QNNPACK's fixed-point
q8vadd), avg_pool2d and adaptive average pooling (QNNPACK's pooling kernels), conv and linear.
The engine is set while preparing, converting and running PyTorch.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.ao.quantization as tq
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.nn.quantized import FloatFunctional

from qcompile.compiler import compile_model
from qcompile.engines import quantized_engine

from helpers import Wrapped


def quantize(body: nn.Module, calib, eng: str, qconfig=None) -> nn.Module:
    model = Wrapped(body).eval()
    model.qconfig = qconfig or tq.get_default_qconfig(eng)
    with quantized_engine(eng), torch.no_grad():
        tq.prepare(model, inplace=True)
        for x in calib:
            model(x)
        tq.convert(model, inplace=True)
    return model


def assert_bit_exact(model, inputs, eng: str):
    compiled = compile_model(model, inputs[:1], numerics=eng)
    with quantized_engine(eng), torch.no_grad():
        for x in inputs:
            ref = model(x).numpy()
            out = compiled(x)
            assert np.array_equal(ref, out), (
                f"{np.mean(ref != out):.4%} of elements differ under {eng}")


def randn(shape, n=3, scale=1.0, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * scale + shift for _ in range(n)]


# ---------------------------------------------------------------------------- fbgemm depthwise
def _int16_pairs_overflow(model, x) -> bool:
    """Would some pair of raw products in the depthwise conv overflow int16 (the quirk bites)?"""
    conv = model.body
    with quantized_engine("fbgemm"), torch.no_grad():
        qx = model.quant(x)
    xq, zx = qx.int_repr().to(torch.int64), qx.q_zero_point()
    w = conv.weight().int_repr().to(torch.int64)
    k, stride, pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    cols = F.unfold(F.pad(xq.double(), [pad] * 4, value=float(zx)), k, stride=stride).long()
    n, _, positions = cols.shape
    cols = cols.reshape(n, xq.shape[1], k * k, positions)
    cols = cols.repeat_interleave(w.shape[0] // xq.shape[1], dim=1)
    prods = cols * w.reshape(1, w.shape[0], k * k, 1)
    if prods.shape[2] % 2:
        prods = F.pad(prods, [0, 0, 0, 1])
    pairs = prods[:, :, 0::2] + prods[:, :, 1::2]
    return bool((pairs.abs() > 32767).any())


AFFINE_WEIGHTS = tq.QConfig(
    activation=tq.HistogramObserver.with_args(reduce_range=True),
    weight=tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_affine))


@pytest.mark.parametrize("k,stride,channels,mult,affine", [
    (3, 1, 8, 1, False), (3, 2, 16, 1, False), (5, 1, 8, 2, False), (5, 2, 24, 1, False),
    (3, 1, 16, 2, True)], ids=["3x3_s1", "3x3_s2", "5x5_s1_x2", "5x5_s2", "3x3_affine_w"])
def test_fbgemm_depthwise_saturation(k, stride, channels, mult, affine):
    g = torch.Generator().manual_seed(k * 10 + stride + channels)
    conv = nn.Conv2d(channels, channels * mult, k, stride, (k - 1) // 2, groups=channels)
    with torch.no_grad():
        signs = torch.randint(0, 2, conv.weight.shape, generator=g) * 2 - 1
        conv.weight.copy_(signs * (0.9 + 0.1 * torch.rand(conv.weight.shape, generator=g)))
        if affine:  # shift some weights off-center so the weight zero point is not 0
            conv.weight[:, :, 0, 0] = 1.6
    shape = (2, channels, 11, 9)
    calib = [torch.rand(shape, generator=g) * 4 - 0.5 for _ in range(2)]
    # Twice the calibrated range: quantized activations run up to 255.
    xs = [torch.rand(shape, generator=g) * 8 - 0.5 for _ in range(2)]
    model = quantize(conv, calib, "fbgemm", AFFINE_WEIGHTS if affine else None)
    if affine:
        assert model.body.weight().q_zero_point() != 0
    assert _int16_pairs_overflow(model, xs[0]), "inputs do not reach the saturation"
    assert_bit_exact(model, xs, "fbgemm")


# ---------------------------------------------------------------------------- qnnpack
def test_qnnpack_relu6_hardtanh():
    """relu6 on the (contiguous) input, and relu6 / hardtanh after convs (channels-last)."""
    torch.manual_seed(1)
    body = nn.Sequential(nn.ReLU6(), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Hardtanh(-1.0, 2.0),
                         nn.ReLU6())
    xs = randn((2, 3, 10, 7), scale=3.0)
    assert_bit_exact(quantize(body, xs, "qnnpack"), xs, "qnnpack")


class Add(nn.Module):
    def __init__(self, op: str):
        super().__init__()
        self.op = op
        self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 3, padding=1)
        self.f = FloatFunctional()

    def forward(self, x):
        if self.op == "self":
            return self.f.add(x, x)
        return getattr(self.f, self.op)(self.a(x), self.b(x))


@pytest.mark.parametrize("op", ["add", "add_relu", "self"])
def test_qnnpack_add(op):
    torch.manual_seed(2)
    xs = randn((1, 3, 13, 11), scale=2.0)
    model = quantize(Add(op), xs, "qnnpack")
    if op == "self":  # every output sits on a rounding tie: half away from zero, not to even
        model.body.f.scale = 4 * model.quant.scale.item()
        model.body.f.zero_point = 77
    assert_bit_exact(model, xs, "qnnpack")


POOLS = {
    "avg_2x2": nn.AvgPool2d(2),
    "avg_3x3_s2_pad": nn.AvgPool2d(3, 2, 1),
    "avg_3x3_no_pad_count": nn.AvgPool2d(3, 1, 1, count_include_pad=False),
    "avg_ceil": nn.AvgPool2d(3, 2, ceil_mode=True),
    "adaptive": nn.AdaptiveAvgPool2d(1),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_qnnpack_avg_pool(name):
    torch.manual_seed(3)
    body = nn.Sequential(nn.Conv2d(3, 10, 3, padding=1), POOLS[name])
    xs = randn((2, 3, 12, 10), scale=2.0)
    assert_bit_exact(quantize(body, xs, "qnnpack"), xs, "qnnpack")


def test_qnnpack_adaptive_pool_on_input():
    xs = randn((2, 5, 4, 6), scale=2.0, shift=0.5)
    assert_bit_exact(quantize(nn.AdaptiveAvgPool2d(1), xs, "qnnpack"), xs, "qnnpack")


PER_CHANNEL = tq.QConfig(
    activation=tq.HistogramObserver.with_args(reduce_range=False),
    weight=tq.PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                qscheme=torch.per_channel_symmetric))


@pytest.mark.parametrize("per_channel", [False, True], ids=["default_qconfig", "per_channel"])
def test_qnnpack_conv_linear(per_channel):
    torch.manual_seed(4)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, 2, 1, groups=8),
                         nn.Conv2d(8, 6, 1), nn.Flatten(), nn.Linear(6 * 5 * 4, 7))
    xs = randn((2, 3, 10, 7), scale=2.0)
    model = quantize(body, xs, "qnnpack", PER_CHANNEL if per_channel else None)
    assert_bit_exact(model, xs, "qnnpack")
