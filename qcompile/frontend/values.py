"""What the importer tracks for each torch value while it writes Relax."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax


@dataclass(frozen=True)
class QParams:
    """Per-tensor quantization parameters of an activation (quint8 / qint8)."""

    scale: float
    zero_point: int
    dtype: str = "uint8"


@dataclass
class QValue:
    """A quantized activation: an 8-bit Relax expression and its qparams."""

    expr: relax.Expr
    qparams: QParams


def scalar(value, dtype: str) -> relax.Constant:
    """A 0-d constant of the given dtype."""
    return relax.const(np.array(value, dtype=dtype), dtype)


def scale_expr(value) -> relax.Expr:
    """A scale as the Q/DQ form holds it: the double PyTorch keeps, cast to float32.

    Relax's quantize/dequantize take float32 scales; some engines use the double (qnnpack's bias
    scale), so the double stays visible to the passes as the cast's operand."""
    return relax.op.astype(relax.const(np.asarray(value, dtype="float64"), "float64"), "float32")


def weight_dequantize(data: np.ndarray, scales, zero_points, per_channel: bool) -> relax.Expr:
    """The Q/DQ form's dequantize of an int8 weight constant: per output channel (axis 0,
    arrays of scales and zero points) or per tensor (one of each)."""
    if per_channel:
        scale_c = scale_expr(np.asarray(scales, dtype="float64"))
        zp_c = relax.const(np.asarray(zero_points).astype("int32"))
    else:
        scale_c = scale_expr(float(scales))
        zp_c = scalar(int(zero_points), "int32")
    return relax.op.dequantize(relax.const(np.asarray(data).astype("int8")), scale_c, zp_c,
                               axis=0)


def dequantize(value: QValue) -> relax.Expr:
    """The Q/DQ form's dequantize of an activation."""
    qp = value.qparams
    return relax.op.dequantize(value.expr, scale_expr(qp.scale),
                               scalar(qp.zero_point, "int32"), axis=0)


def quantize(expr: relax.Expr, qparams: QParams) -> relax.Expr:
    """The Q/DQ form's quantize to an activation's qparams."""
    return relax.op.quantize(expr, scale_expr(qparams.scale),
                             scalar(qparams.zero_point, "int32"), axis=0,
                             out_dtype=qparams.dtype)


# Dynamic quantization: an activation's qparams chosen at run time from the tensor itself.
CHOOSE_QPARAMS = "qcompile.choose_qparams"
RUNTIME_QPARAMS = relax.TupleType([relax.TensorType([], "float32"), relax.TensorType([], "int32")])


def choose_qparams(x: relax.Expr, reduce_range: bool, label: str) -> relax.Expr:
    """The Q/DQ form's run-time qparams of float `x`: a (scale, zero point) pair of 0-d tensors.

    A marker call (`call_pure_packed` of CHOOSE_QPARAMS, never run as a packed function): how
    the range and rounding are chosen is the numerics contract's business, so the passes lower
    it (qcompile.passes.lower_dynamic).  It records what the model asked for -- `reduce_range`
    -- and `label`, the op it belongs to, for error messages."""
    return relax.op.call_pure_packed(CHOOSE_QPARAMS, x, relax.prim_value(bool(reduce_range)),
                                     tvm.ir.StringImm(label), ty_args=RUNTIME_QPARAMS)
