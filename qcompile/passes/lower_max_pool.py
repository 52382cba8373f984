"""Pass: 8-bit max_pool2d becomes our vectorizable kernel (numerics.pooling.max_pool2d).

Relax legalizes max_pool2d to a padded copy plus a window max whose stride-2 reads are
gathers; ours reads de-interleaved planes (see numerics.windows.padded_planes).  Max is exact, so
this changes speed only.  NCHW, no dilation (ceil_mode too: GoogLeNet's and Inception's);
anything else is left to Relax.
"""

from __future__ import annotations

import tvm

from ..numerics import pooling
from ..numerics.windows import padding4, pooled_size
from .machinery import run_rewrite


def _rewrite(ctx, call):
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.max_pool2d":
        return None
    attrs = call.attrs
    x = call.args[0]
    if (x.ty.dtype not in ("uint8", "int8") or str(attrs.layout) != "NCHW"
            or str(attrs.out_layout) != "NCHW"
            or any(int(d) != 1 for d in attrs.dilation)):
        return None
    kernel = [int(k) for k in attrs.pool_size]
    strides = [int(s) for s in attrs.strides]
    padding = [int(p) for p in attrs.padding]
    h, w = (int(d) for d in list(x.ty.shape)[2:])
    pt, pl, pb, pr = padding4(padding)
    ours = [pooled_size(h, kernel[0], strides[0], pt, pb, bool(attrs.ceil_mode)),
            pooled_size(w, kernel[1], strides[1], pl, pr, bool(attrs.ceil_mode))]
    if [int(d) for d in list(call.ty.shape)[2:]] != ours:
        return None  # Relax sized it otherwise (not PyTorch's ceil rule): leave it to Relax
    return ctx.call_te(pooling.max_pool2d, ctx.new(x), kernel, strides, padding,
                       bool(attrs.ceil_mode), primfunc_name_hint="max_pool2d")


def lower_max_pool(mod: tvm.IRModule) -> tvm.IRModule:
    """Rewrite every 8-bit NCHW max_pool2d into pooling.max_pool2d."""
    return run_rewrite(mod, _rewrite)
