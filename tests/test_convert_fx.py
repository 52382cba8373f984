"""Models quantized with prepare_fx / convert_fx import into the same Q/DQ form, exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import qcompile
from qcompile.engines import quantized_engine

from helpers import inputs_like, seeded


class Net(nn.Module):
    """conv-bn-relu (relu as a function, left unfused by convert_fx), depthwise, add, pool, fc."""

    def __init__(self):
        super().__init__()
        self.conv = seeded(nn.Conv2d(3, 16, 3, padding=1))
        self.bn = nn.BatchNorm2d(16)
        self.dw = seeded(nn.Conv2d(16, 16, 3, padding=1, groups=16), 1)
        self.fc = seeded(nn.Linear(16, 5), 2)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = y + self.dw(y)
        y = torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.fc(y)


@pytest.mark.parametrize("numerics", ["fbgemm", "integer"])
def test_convert_fx_model(numerics):
    xs = inputs_like((1, 3, 12, 12), n=4)
    with quantized_engine("fbgemm"):
        prepared = prepare_fx(Net().eval(), get_default_qconfig_mapping("fbgemm"), (xs[0],))
        for x in xs:
            prepared(x)
        model = convert_fx(prepared)
    compiled = qcompile.compile(model, xs[:1], numerics=numerics)
    report = qcompile.verify(model, compiled, xs)
    assert report["lsb"] is not None
    if numerics == "fbgemm":
        assert report["bit_exact_fraction"] == 1.0, report
    else:
        assert report["max_abs_lsb"] <= 2, report
