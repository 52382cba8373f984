"""What the importer tracks for each torch value while it writes Relax."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
