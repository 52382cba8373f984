"""Small quantized models built in the tests, and the exactness check they all use."""

from __future__ import annotations

import numpy as np
import torch
import torch.ao.quantization as tq
import torch.nn as nn

import qcompile
from qcompile.engines import quantized_engine

PER_TENSOR = tq.QConfig(
    activation=tq.MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True),
    weight=tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))


class Wrapped(nn.Module):
    """QuantStub -> body -> DeQuantStub, so any float body becomes a quantized model."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.quant, self.body, self.dequant = tq.QuantStub(), body, tq.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


def quantize_eager(body: nn.Module, calib: list[torch.Tensor], engine="fbgemm",
                   per_channel=True, fuse=None) -> nn.Module:
    """Eager static quantization of Wrapped(body) on `engine`, calibrated on `calib`."""
    model = Wrapped(body).eval()
    if fuse:
        tq.fuse_modules(model, fuse, inplace=True)
    model.qconfig = tq.get_default_qconfig(engine) if per_channel else PER_TENSOR
    with quantized_engine(engine):
        tq.prepare(model, inplace=True)
        with torch.no_grad():
            for x in calib:
                model(x)
        tq.convert(model, inplace=True)
    return model


def assert_exact(model, inputs, numerics="fbgemm", engine="fbgemm", probe=False):
    """Compile, run on every input, and require PyTorch's output to the bit."""
    compiled = qcompile.compile(model, inputs[:1], numerics=numerics)
    report = qcompile.verify(model, compiled, inputs, engine=engine)
    assert report["bit_exact_fraction"] == 1.0, report
    return report


def inputs_like(shape, n=3, scale=1.0, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * scale + shift for _ in range(n)]


def seeded(module: nn.Module, seed=0) -> nn.Module:
    """Re-initialise a module's parameters from a seed (uniform, so weights use the full range)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 2 - 1)
    return module


def as_numpy(x):
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)


def assert_builds_agree(model, inputs, monkeypatch, family, numerics="integer", **changes):
    """Compile for `family` as it is and with the fields `changes` replaced (a kernel kind or a
    layout switched off), require equal outputs on every input; return (as_is, changed)."""
    import dataclasses

    import qcompile.schedules.targets

    as_is = qcompile.compile(model, inputs[:1], numerics=numerics, target=family.name,
                             tune_logs=False)
    monkeypatch.setitem(qcompile.schedules.targets.FAMILIES, family.name,
                        dataclasses.replace(family, **changes))
    changed = qcompile.compile(model, inputs[:1], numerics=numerics, target=family.name,
                               tune_logs=False)
    for x in inputs:
        np.testing.assert_array_equal(np.asarray(as_is(x)), np.asarray(changed(x)))
    return as_is, changed
