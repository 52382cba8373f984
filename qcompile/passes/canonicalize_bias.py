"""Pass (b): the float bias becomes an int32 constant added to the accumulator.

    add(multiply(astype(acc, f32), multiply(sx, sw)), bias)
      ==>  multiply(astype(add(acc, bias_q), f32), multiply(sx, sw))

with `bias_q = round(bias / (sx * sw[c]))` at zero point 0, rounded the way the contract says
(its `int32_bias` rule).  A contract without one (fbgemm, pt2e: the bias is added in float after
scaling) keeps the bias float, and this pass does nothing.
"""

from __future__ import annotations

import warnings

import numpy as np
import tvm
from tvm import relax

from ..numerics.contracts import Contract
from .machinery import const_value, run_rewrite
from .patterns import ACC, BIAS, BIASED, SW, SX

R = relax.op


def _warn_if_saturated(bias, sx, sw, contract: str):
    exact = np.abs(bias.astype(np.float64) / (np.float64(sx) * np.broadcast_to(sw, bias.shape)))
    if np.any(exact >= 2**31):
        channels = np.flatnonzero(exact >= 2**31)
        warnings.warn(f"{contract} numerics: the int32 bias of {len(channels)} output channel(s) "
                      f"(first: {channels[0]}) saturates at scale s_in*s_w "
                      f"(s_in={sx:.3g}, min s_w={float(np.min(sw)):.3g}); those outputs will "
                      "differ from a float bias's. Check the weights of that layer "
                      "(`qcompile explain`).", stacklevel=2)


def canonicalize_bias(mod: tvm.IRModule, contract: Contract) -> tvm.IRModule:
    """Fold each conv/linear float bias into an int32 add, by the contract's rule (if any)."""
    if contract.int32_bias is None:
        return mod

    def rewrite(ctx, call):
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.add":
            return None
        m = ctx.match(BIASED, call)
        if m is None or m[ACC].ty.dtype != "int32":
            return None
        sx = float(const_value(m[SX], ctx))
        sw = np.atleast_1d(const_value(m[SW], ctx))
        bias = const_value(m[BIAS])
        channels = bias.size
        bias_q = contract.int32_bias(bias.reshape(-1), sx, np.broadcast_to(sw, (channels,)))
        acc = ctx.new(m[ACC])
        _warn_if_saturated(bias.reshape(-1), sx, sw, contract.name)
        bias_q = bias_q.reshape(bias.shape)
        with_bias = ctx.emit(R.add(acc, relax.const(bias_q.astype("int32"))))
        return R.multiply(R.astype(with_bias, "float32"),
                          R.multiply(ctx.new(m[SX]), ctx.new(m[SW])))

    return run_rewrite(mod, rewrite)
