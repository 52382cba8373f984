"""The Relax fusion pipeline turns each conv + bias + requantize + clip into one PrimFunc."""

from __future__ import annotations

import re

import torch.nn as nn
import tvm

from qcompile import frontend, passes
from qcompile.numerics import get_contract
from qcompile.compiler.driver import fuse
from qcompile.schedules import resolve_target

from helpers import inputs_like, quantize_eager, seeded


def _block_names(func) -> set[str]:
    """Names of the blocks in a PrimFunc, read from its TVMScript."""
    return set(re.findall(r'sblock\("([^"]+)"', func.script()))


def test_one_primfunc_per_conv_epilogue():
    body = nn.Sequential(seeded(nn.Conv2d(3, 8, 3, padding=1)), nn.ReLU(),
                         seeded(nn.Conv2d(8, 8, 3, padding=1), 1), nn.ReLU6())
    xs = inputs_like((1, 3, 10, 10))
    model = quantize_eager(body, xs, fuse=[["body.0", "body.1"]])
    for contract in ("fbgemm", "qnnpack", "integer"):
        imported = frontend.import_model(model, [(1, 3, 10, 10)])
        integer = passes.lower(imported, get_contract(contract), 2)
        fused = fuse(integer, resolve_target("x86"))
        funcs = {gv.name_hint: _block_names(f) for gv, f in fused.functions_items()
                 if isinstance(f, tvm.tirx.PrimFunc)}
        with_conv = [n for n, blocks in funcs.items() if any("conv2d" in b for b in blocks)]
        assert len(with_conv) == 2, funcs
        for name in with_conv:
            assert any("requantize" in b for b in funcs[name]), (contract, name, funcs[name])
        # nothing requantizes outside the conv kernels (the ReLU6 clip was folded in too) --
        # except under qnnpack, whose clamp permutes channels-last data (PyTorch's behaviour,
        # reproduced in lower_qdq_ops), so the ReLU6 there stays a kernel of its own
        alone = [n for n, blocks in funcs.items() if n not in with_conv and any(
            "requantize" in b or ("qclip" in b and contract != "qnnpack") for b in blocks)]
        assert not alone, (contract, alone)


class _PoolResidual(nn.Module):
    """A max pool read by a conv and by the residual add after it (ResNet's stem and block)."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv = seeded(nn.Conv2d(4, 4, 3, padding=1))
        self.add = nn.quantized.FloatFunctional()

    def forward(self, x):
        y = self.pool(x)
        return self.add.add(self.conv(y), y)


def _calls(func) -> list[str]:
    names = []
    tvm.relax.analysis.post_order_visit(
        func.body, lambda e: names.append(e.args[0].name_hint) if isinstance(e, tvm.relax.Call)
        and getattr(e.op, "name", "") == "relax.call_tir" else None)
    return names


def test_a_value_used_twice_is_computed_once():
    # The passes match through bindings and used to rebuild a matched operand at each use:
    # ResNet-18 ran its max pool twice and each residual's input add twice (0.3 ms of 6.1).
    model = quantize_eager(_PoolResidual(), inputs_like((1, 4, 12, 12)))
    for contract in ("fbgemm", "qnnpack", "integer"):
        imported = frontend.import_model(model, [(1, 4, 12, 12)])
        integer = passes.lower(imported, get_contract(contract), 2)
        calls = _calls(integer["main"])
        assert sum(n.startswith("max_pool") for n in calls) == 1, (contract, calls)
