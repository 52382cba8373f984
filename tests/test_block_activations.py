"""qcompile.passes.block_activations: conv-to-conv activations in [N, C/16, H, W, 16]."""

from __future__ import annotations

import pytest
import torch.nn as nn

import qcompile
from qcompile.schedules import resolve_family

from helpers import assert_builds_agree, inputs_like, quantize_eager, seeded

VNNI = resolve_family("x86-avx512-vnni")
pytestmark = pytest.mark.skipif(not VNNI.runs_here(), reason="needs AVX-512 VNNI")


class _ConvChain(nn.Module):
    """Channel-lane convs (20-pixel rows: no pixel-lane kernel) handing 16-channel activations
    to each other: y1 feeds a conv's pack and another conv's residual add, y3 a stride-2 1x1,
    whose output is the model's (dequantized: stays NCHW)."""

    def __init__(self):
        super().__init__()
        self.c1, self.r1 = seeded(nn.Conv2d(3, 16, 3, padding=1), 1), nn.ReLU()
        self.c2, self.r2 = seeded(nn.Conv2d(16, 16, 3, padding=1), 2), nn.ReLU()
        self.c3 = seeded(nn.Conv2d(16, 16, 3, padding=1), 3)
        self.add = nn.quantized.FloatFunctional()
        self.c4 = seeded(nn.Conv2d(16, 32, 1, stride=2), 4)

    def forward(self, x):
        y1 = self.r1(self.c1(x))
        y3 = self.add.add(self.c3(self.r2(self.c2(y1))), y1)
        return self.c4(y3)


_FUSE = [["body.c1", "body.r1"], ["body.c2", "body.r2"]]
_INPUT = (1, 3, 20, 20)


def _model(engine="fbgemm", n=3):
    xs = inputs_like(_INPUT, n=n, scale=2.0)
    return quantize_eager(_ConvChain(), xs, engine=engine, fuse=_FUSE), xs


def test_conv_to_conv_activations_are_blocked_and_nothing_else():
    import tvm

    from qcompile.compiler.driver import fuse, integer_module
    from qcompile.numerics import get_contract

    model, xs = _model()
    integer, _, _ = integer_module(model, [xs[0].numpy()], get_contract("fbgemm"), 2, VNNI)
    fused = fuse(integer, VNNI.tvm_target(), VNNI)
    convs = sorted(gv.name_hint for gv, f in fused.functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc) and "conv2d_packed" in gv.name_hint)
    # c1: output blocked; c2: input and output; c3: input, residual (its argument 4) and
    # output; c4: input only (its output is the model's)
    assert sorted(name.rsplit("_blk", 1)[1] for name in convs) == ["0", "04o", "0o", "o"], convs
    blocked = fused["main"].script().count("R.Tensor((1, 1, 20, 20, 16), dtype=\"uint8\")")
    assert blocked >= 3, fused["main"].script()
    # without the family (or for a family without a block) nothing changes
    plain = fuse(integer, VNNI.tvm_target())
    assert "_blk" not in plain.script()


@pytest.mark.parametrize("numerics", ["fbgemm", "qnnpack"])
def test_blocked_activations_stay_exact(numerics):
    model, xs = _model(numerics)
    compiled = qcompile.compile(model, xs[:1], numerics=numerics, target=VNNI.name,
                                tune_logs=False)
    assert compiled.meta["kernels"]["tensorized"] == 4, compiled.meta["kernels"]
    report = qcompile.verify(model, compiled, xs, engine=numerics)
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


def test_blocked_and_nchw_activations_agree_to_the_bit(monkeypatch):
    """The integer contract has no PyTorch twin: the blocked build must give what the NCHW
    build gives (only the memory order differs)."""
    model, xs = _model(n=2)
    assert_builds_agree(model, xs, monkeypatch, VNNI, activation_block=None)
