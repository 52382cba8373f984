"""The Relax fusion pipeline turns each conv + bias + requantize + clip into one PrimFunc."""

from __future__ import annotations

import re

import torch.nn as nn
import tvm

from qcompile import frontend, passes
from qcompile.build.compiler import fuse
from schedules import resolve_target

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
        integer = passes.lower(frontend.import_model(model, [(1, 3, 10, 10)]), contract, 2)
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
