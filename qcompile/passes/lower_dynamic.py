"""Pass: dynamically quantized linears (run-time activation qparams) become integer kernels.

    s, z = choose_qparams(x)                 (the frontend's marker, values.choose_qparams)
    relu?(matmul(dequantize(quantize(x, s, z), s, z), permute_dims(dequantize(W, sw, zw))) [+ b])
      ==>  s, z = choose_qparams kernel(x)                      (the contract's [qmin, qmax])
           q    = quantize kernel(x, s, z)                      uint8
           acc  = matmul(q, W^T, out_dtype=int32)               u8 x i8, a dense pack_layout packs
           out  = output kernel(acc, s, z, ...)                 float32: acc - z sum(W[n]),
                                                                scaled, bias, relu
(with weight zero points other than 0 the int32 matmul takes q - z and W - zw instead).  A
separate float ReLU applied to a dynamic linear's output is folded into it: PyTorch's relu and
the fused LinearReLU compute the same max.  Numerics: numerics.dynamic, with the contract's
DynamicLinear rule; a contract without one (integer: choosing a scale at run time takes float
arithmetic) refuses the model and names the contracts that take it.
Runs first in `lower`: the static passes never see a dynamic linear.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from ..errors import QCompileError
from ..frontend.values import CHOOSE_QPARAMS
from ..numerics import dynamic
from ..numerics.contracts import Contract, contracts_for
from .machinery import const_value, run_rewrite

R = relax.op

S, Z, S2, Z2 = wildcard(), wildcard(), wildcard(), wildcard()
W, SW, ZW, BIAS = is_const(), wildcard(), is_const(), is_const()
QX = is_op("relax.quantize")(wildcard(), S, Z)
DQX = is_op("relax.dequantize")(QX, S2, Z2)
MATMUL = is_op("relax.matmul")(DQX, is_op("relax.permute_dims")(is_op("relax.dequantize")(W, SW,
                                                                                         ZW)))
LINEAR = is_op("relax.add")(MATMUL, BIAS) | MATMUL
DYNAMIC = is_op("relax.nn.relu")(LINEAR) | LINEAR


def _qparams_call(ctx, m):
    """The choose_qparams marker that `s` and `z` of the match come from, or None."""
    scale, zero_point = ctx.value_of(m[S]), ctx.value_of(m[Z])
    if not (isinstance(scale, relax.TupleGetItem) and isinstance(zero_point, relax.TupleGetItem)
            and scale.index == 0 and zero_point.index == 1
            and scale.tuple_value.same_as(zero_point.tuple_value)
            and scale.same_as(ctx.value_of(m[S2])) and zero_point.same_as(ctx.value_of(m[Z2]))):
        return None
    call = ctx.value_of(scale.tuple_value)
    if (isinstance(call, relax.Call) and call.op.name == "relax.call_pure_packed"
            and isinstance(call.args[0], relax.ExternFunc)
            and call.args[0].global_symbol == CHOOSE_QPARAMS):
        return call
    return None


def refuse(label: str, contract: Contract) -> QCompileError:
    """The error for a dynamically quantized op under a contract without a DynamicLinear rule."""
    takers = [c for c in contracts_for(contract.models) if c.dynamic is not None]
    options = " or ".join(f"numerics='{c.name}' ({c.reference.description})" for c in takers)
    why = contract.no_dynamic or f"the {contract.name!r} numerics contract does not cover it"
    return QCompileError(f"{label} is dynamically quantized: {why}. Compile it with {options}, "
                         "or quantize the model statically (prepare / calibrate / convert)")


def _rewrite(ctx, call, contract: Contract, quantized: dict):
    if not isinstance(call.op, tvm.ir.Op) or call.op.name not in (
            "relax.nn.relu", "relax.add", "relax.matmul"):
        return None
    m = ctx.match(DYNAMIC, call)
    if m is None:
        return None
    marker = _qparams_call(ctx, m)
    if marker is None:
        return None  # a static linear: the quantize has constant qparams
    reduce_range, label = bool(marker.args[2].value), str(marker.args[3].value)
    if contract.dynamic is None:
        raise refuse(label, contract)
    qmin, qmax = contract.dynamic.activation_range(reduce_range)
    # the quantize's own argument (a variable): a matched wildcard may stand for its value
    x = ctx.new(m[QX].args[0])
    key = (x, qmin, qmax)
    if key not in quantized:  # linears reading one tensor (Q, K, V) quantize it once
        qparams = ctx.emit(ctx.call_te(dynamic.choose_qparams, x, qmin, qmax,
                                       primfunc_name_hint="choose_qparams"))
        scale = ctx.emit(relax.TupleGetItem(qparams, 0))
        zero_point = ctx.emit(relax.TupleGetItem(qparams, 1))
        quantized[key] = (scale, zero_point, ctx.emit(ctx.call_te(
            dynamic.quantize, x, scale, zero_point, primfunc_name_hint="quantize_dynamic")))
    scale, zero_point, q = quantized[key]
    w = const_value(m[W])
    arrays = dynamic.weight_arrays(w, const_value(m[SW], ctx), const_value(m[ZW]))
    if arrays["symmetric"]:  # u8 x i8 with the zero point's correction in the output kernel
        acc = R.matmul(q, relax.const(np.ascontiguousarray(w.T).astype("int8")),
                       out_dtype="int32")
        weight_sum = arrays["sum"]
    else:
        shifted = (w.astype(np.int32) - arrays["zero_point"].reshape(-1, 1).astype(np.int32))
        acc = R.matmul(R.subtract(R.astype(q, "int32"), zero_point),
                       relax.const(np.ascontiguousarray(shifted.T).astype("int32")),
                       out_dtype="int32")
        weight_sum = None
    bias = const_value(m[BIAS]).astype(np.float32).reshape(-1) if BIAS in m else None
    relu = call.op.name == "relax.nn.relu"
    fused_bias = contract.dynamic.fused_bias
    optional = [a for a in (bias, weight_sum) if a is not None]

    def output(acc_t, s_t, z_t, sw_t, *rest):
        rest = list(rest)
        b_t = rest.pop(0) if bias is not None else None
        ws_t = rest.pop(0) if weight_sum is not None else None
        return dynamic.linear_output(acc_t, s_t, z_t, sw_t, b_t, ws_t, fused_bias, relu)

    return ctx.call_te(output, ctx.emit(acc), scale, zero_point, relax.const(arrays["scale"]),
                       *[relax.const(a) for a in optional],
                       primfunc_name_hint="dynamic_linear_output")


def lower_dynamic(mod: tvm.IRModule, contract: Contract) -> tvm.IRModule:
    """Lower every dynamically quantized linear (with its bias and ReLU) for `contract`.

    Each of the region's last three ops (matmul, bias add, relu) is tried; the largest match is
    the one that stays live, the smaller ones are removed as dead code.  Linears reading the same
    tensor share its qparams and quantized copy: PyTorch chooses them for each linear, from
    the same values, so they are the same (BERT's Q, K and V: two of three choose_qparams and
    quantize kernels a layer saved)."""
    quantized = {}  # (input var, qmin, qmax) -> (scale, zero point, quantized input)
    return run_rewrite(mod, lambda ctx, call: _rewrite(ctx, call, contract, quantized))
