"""One test per supported op, exact under the fbgemm contract (per-tensor and per-channel).

Shapes are chosen to be awkward: channel counts that are not multiples of 4 or 16, stride 2,
groups, 1x1 and 7x7 kernels, and inputs that push scales and zero points to extremes.
"""

from __future__ import annotations

import pytest
import torch.nn as nn
from torch.ao.nn.quantized import FloatFunctional

from helpers import assert_exact, inputs_like, quantize_eager, seeded

CONVS = {
    "3x3_c5_to_7": dict(cin=5, cout=7, k=3, stride=1, padding=1, groups=1),
    "1x1_c13": dict(cin=13, cout=19, k=1, stride=1, padding=0, groups=1),
    "7x7_stride2": dict(cin=3, cout=10, k=7, stride=2, padding=3, groups=1),
    "stride2_nopad": dict(cin=6, cout=6, k=3, stride=2, padding=0, groups=1),
    "groups3": dict(cin=9, cout=12, k=3, stride=1, padding=1, groups=3),
    # grouped convs packed by 4-, 8- and 16-wide tiles (ResNeXt's, RegNet's)
    "groups4_c4_per_group": dict(cin=16, cout=16, k=3, stride=1, padding=1, groups=4),
    "groups3_c8_per_group_stride2": dict(cin=24, cout=24, k=3, stride=2, padding=1, groups=3),
    "groups2_c16_out_per_group": dict(cin=16, cout=32, k=3, stride=1, padding=1, groups=2),
    "depthwise_c12_stride2": dict(cin=12, cout=12, k=3, stride=2, padding=1, groups=12),
    "depthwise_c7": dict(cin=7, cout=7, k=3, stride=1, padding=1, groups=7),
    "dilation2": dict(cin=4, cout=5, k=3, stride=1, padding=2, groups=1, dilation=2),
    # output widths with no row tile (17, 71: Inception's) are computed padded and cropped
    "width17_padded": dict(cin=8, cout=16, k=3, stride=1, padding=1, groups=1, hw=(5, 17)),
    "width71_stride2_7x1": dict(cin=8, cout=8, k=(7, 1), stride=2, padding=(3, 0), groups=1,
                                hw=(9, 141)),
    "1x7_width17": dict(cin=16, cout=16, k=(1, 7), stride=1, padding=(0, 3), groups=1,
                        hw=(3, 17)),
}

# (input scale factor, shift): ordinary, all-positive (zero point 0), all-negative (zero point
# 255), tiny scale, huge scale
RANGES = {"normal": (1.0, 0.0), "positive": (1.0, 4.0), "negative": (1.0, -4.0),
          "tiny": (1e-3, 0.0), "huge": (200.0, 0.0)}


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv2d(name, per_channel):
    c = CONVS[name]
    conv = seeded(nn.Conv2d(c["cin"], c["cout"], c["k"], c["stride"], c["padding"],
                            dilation=c.get("dilation", 1), groups=c["groups"]), seed=len(name))
    xs = inputs_like((1, c["cin"], *c.get("hw", (11, 13))), n=3)
    assert_exact(quantize_eager(conv, xs, per_channel=per_channel), xs)


@pytest.mark.parametrize("rng", sorted(RANGES))
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_conv2d_relu_ranges(rng, per_channel):
    scale, shift = RANGES[rng]
    body = nn.Sequential(seeded(nn.Conv2d(6, 10, 3, padding=1)), nn.ReLU())
    xs = inputs_like((2, 6, 9, 9), n=3, scale=scale, shift=shift * scale)
    model = quantize_eager(body, xs, per_channel=per_channel, fuse=[["body.0", "body.1"]])
    assert_exact(model, xs)


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "linear_relu"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("shape", [(3, 37), (2, 5, 37)], ids=["2d", "3d"])
def test_linear(shape, per_channel, relu):
    layers = [seeded(nn.Linear(37, 21))] + ([nn.ReLU()] if relu else [])
    xs = inputs_like(shape, n=3)
    model = quantize_eager(nn.Sequential(*layers), xs, per_channel=per_channel,
                           fuse=[["body.0", "body.1"]] if relu else None)
    assert_exact(model, xs)


class Binary(nn.Module):
    def __init__(self, op: str):
        super().__init__()
        self.op = op
        self.a, self.b = seeded(nn.Conv2d(5, 6, 1)), seeded(nn.Conv2d(5, 6, 3, padding=1), 1)
        self.f = FloatFunctional()

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        if self.op == "cat":
            return self.f.cat([a, b], dim=1)
        return getattr(self.f, self.op)(a, b)


@pytest.mark.parametrize("op", ["add", "add_relu", "mul", "cat"])
@pytest.mark.parametrize("spatial", [(7, 9), (64, 72)], ids=["small", "large"])
def test_binary(op, spatial):
    xs = inputs_like((1, 5) + spatial, n=2)
    assert_exact(quantize_eager(Binary(op), xs), xs)


UNARY = {
    "relu": nn.ReLU(), "relu6": nn.ReLU6(), "hardtanh": nn.Hardtanh(-0.5, 1.5),
    "hardswish": nn.Hardswish(), "sigmoid": nn.Sigmoid(), "hardsigmoid": nn.Hardsigmoid(),
    "max_pool_3x3_s2": nn.MaxPool2d(3, 2, 1), "max_pool_2x2": nn.MaxPool2d(2),
    # ceil_mode (GoogLeNet's, Inception's): windows past the input's end on 15 x 17
    "max_pool_2x2_ceil": nn.MaxPool2d(2, ceil_mode=True),
    "max_pool_3x3_s2_p1_ceil": nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    "max_pool_3x3_s3_ceil": nn.MaxPool2d(3, 3, ceil_mode=True),
    "avg_pool_3x3_s2": nn.AvgPool2d(3, 2, 1), "avg_pool_2x2": nn.AvgPool2d(2),
    "avg_pool_no_pad_count": nn.AvgPool2d(3, 1, 1, count_include_pad=False),
    "avg_pool_2x2_ceil": nn.AvgPool2d(2, ceil_mode=True),
    "avg_pool_3x3_s2_p1_ceil_no_pad_count": nn.AvgPool2d(3, 2, 1, ceil_mode=True,
                                                         count_include_pad=False),
    "adaptive_avg_pool": nn.AdaptiveAvgPool2d(1), "flatten": nn.Flatten(),
}


@pytest.mark.parametrize("channels", [5, 24], ids=["c5", "c24"])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, channels):
    body = nn.Sequential(seeded(nn.Conv2d(3, channels, 3, padding=1)), UNARY[name])
    xs = inputs_like((1, 3, 15, 17), n=3, scale=2.0)
    assert_exact(quantize_eager(body, xs), xs)


def test_quantize_dequantize_only():
    xs = inputs_like((2, 3, 5, 7), n=3, scale=3.0, shift=1.0)
    assert_exact(quantize_eager(nn.Identity(), xs), xs)


@pytest.mark.parametrize("case", ["conv", "add", "mul", "cat", "hardswish", "avg_pool",
                                  "adaptive_avg_pool"])
def test_integer_contract_within_one_step(case):
    """The integer contract may differ from fbgemm only by the rounding of exact values."""
    import qcompile

    bodies = {
        "conv": lambda: nn.Sequential(seeded(nn.Conv2d(5, 9, 3, stride=2, padding=1))),
        "add": lambda: Binary("add"), "mul": lambda: Binary("mul"), "cat": lambda: Binary("cat"),
        "hardswish": lambda: nn.Sequential(seeded(nn.Conv2d(5, 6, 1)), nn.Hardswish()),
        "avg_pool": lambda: nn.Sequential(seeded(nn.Conv2d(5, 6, 1)),
                                          nn.AvgPool2d(3, 2, 1, count_include_pad=False)),
        "adaptive_avg_pool": lambda: nn.Sequential(seeded(nn.Conv2d(5, 6, 1)),
                                                   nn.AdaptiveAvgPool2d(1)),
    }
    xs = inputs_like((1, 5, 13, 11), n=3, scale=2.0)
    model = quantize_eager(bodies[case](), xs)
    compiled = qcompile.compile(model, xs[:1], numerics="integer")
    report = qcompile.verify(model, compiled, xs, engine="fbgemm")
    assert report["max_abs_lsb"] <= 1, report
    assert report["bit_exact_fraction"] > 0.95, report


class _ChannelShuffle(nn.Module):
    """ShuffleNet's block: split the channels in two (chunk), a conv on one half, cat, then the
    channel shuffle (view, transpose, contiguous, view: size arithmetic in the traced graph)."""

    def __init__(self, channels=12):
        super().__init__()
        self.conv = seeded(nn.Conv2d(channels // 2, channels // 2, 3, padding=1), seed=3)
        self.cat = FloatFunctional()

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        x = self.cat.cat([x1, self.conv(x2)], dim=1)
        batch, channels, height, width = x.size()
        x = x.view(batch, 2, channels // 2, height, width)
        x = x.transpose(1, 2).contiguous()
        return x.view(batch, -1, height, width)


@pytest.mark.parametrize("numerics,engine", [("fbgemm", "fbgemm"), ("qnnpack", "qnnpack")])
def test_channel_shuffle(numerics, engine):
    xs = inputs_like((1, 12, 7, 9), n=3)
    model = quantize_eager(_ChannelShuffle(), xs, engine=engine)
    assert_exact(model, xs, numerics=numerics, engine=engine)


class _Mean(nn.Module):
    """x.mean((2, 3)) of a conv output (channels-last in PyTorch) and of the quantized input
    (contiguous), keepdim and not.  Over 2 or 4 elements, means land on .5 often: the float
    sum PyTorch rounds there decides them, not an integer sum (what adaptive pooling does)."""

    def __init__(self):
        super().__init__()
        self.conv = seeded(nn.Conv2d(8, 60, 1), seed=4)
        self.add = FloatFunctional()

    def forward(self, x):
        a = self.conv(x).mean([2, 3])
        b = x.mean([-1, -2], keepdim=True)
        return self.add.cat([a, b.flatten(1)], dim=1)


@pytest.mark.parametrize("numerics,engine", [("fbgemm", "fbgemm"), ("qnnpack", "qnnpack")])
@pytest.mark.parametrize("hw", [(7, 7), (3, 5), (2, 1), (2, 2)])
def test_quantized_mean(hw, numerics, engine):
    xs = inputs_like((1, 8, *hw), n=4)
    model = quantize_eager(_Mean(), xs, engine=engine)
    assert_exact(model, xs, numerics=numerics, engine=engine)
