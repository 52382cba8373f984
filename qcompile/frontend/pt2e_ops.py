"""Converters of the aten ops in a PT2E graph (torchao convert_pt2e, torch.export).

A PT2E graph holds aten float ops between `quantized_decomposed` quantize / dequantize nodes:

    q = quantize_per_tensor(x, s, zp, qmin, qmax, dtype)     -> an 8-bit value (QValue)
    d = dequantize_per_tensor(q, s, zp, ...)                  -> its float view (Dq)
    w = dequantize_per_channel(int8 constant, scales, zps, 0) -> a constant weight (Weight)
    y = conv2d(d, w, bias) ; hardtanh(y) ; add(d2, y) ; ...   -> float Relax values

The converters emit the float ops as they are and a quantize wherever the graph has one, so
`quantize(clip(conv2d(dequantize(x), dequantize(W)) + b))` reaches the passes exactly as the
other frontends write it.  Data movement on a dequantized value (max pool, flatten, reshape)
stays on the 8-bit values.  They read values through the importer (pt2e_import.Pt2eImporter:
as_float, qparams); which aten name reaches which converter is frontend/op_table.py's business.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tvm import relax

from . import float_ops, quantized_ops
from .values import QValue, quantize as quantize_expr, weight_dequantize

R = relax.op


@dataclass
class Dq:
    """The float view (dequantize) of an 8-bit activation."""

    q: QValue


@dataclass
class PendingMaxPool:
    """max_pool2d of a float tensor, waiting for the quantize that follows it: quantize is
    monotone, so quantize(max_pool(v)) == max_pool(quantize(v)), bit for bit, on 8 bits."""

    value: relax.Expr
    args: tuple


@dataclass
class Weight:
    """A dequantized int8 constant (per-tensor or per-channel along axis 0)."""

    expr: relax.Expr
    shape: tuple


def scalar(value):
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


# ---------------------------------------------------------------------------- Q / DQ
def quantize(imp, x, scale, zero_point, qmin, qmax, dtype):
    qp = imp.qparams(scale, zero_point, qmin, qmax, dtype)
    if isinstance(x, Dq) and x.q.qparams == qp:  # requantize to the same qparams: a no-op
        return x.q
    if isinstance(x, PendingMaxPool):
        q = QValue(imp.emit(quantize_expr(x.value, qp)), qp)
        return quantized_ops.max_pool2d(imp, q, *x.args)
    return QValue(imp.emit(quantize_expr(imp.as_float(x, "quantize_per_tensor"), qp)), qp)


def dequantize(imp, q, scale, zero_point, qmin, qmax, dtype, out_dtype=None):
    if isinstance(q, torch.Tensor):  # a per-tensor quantized constant (a weight)
        return _weight(imp, q, scale, zero_point, 0, dtype)
    qp = imp.qparams(scale, zero_point, qmin, qmax, dtype)
    if not isinstance(q, QValue):
        raise imp.error("dequantize_per_tensor of a value that is not quantized")
    if q.qparams != qp:
        raise imp.error(f"dequantize with qparams {qp} of a tensor quantized with {q.qparams}")
    return Dq(q)


def dequantize_channel(imp, w, scales, zero_points, axis, qmin, qmax, dtype, out_dtype=None):
    if not isinstance(w, torch.Tensor):
        raise imp.error("per-channel dequantize of an activation is not supported "
                        "(per-channel quantization of weights only)")
    return _weight(imp, w, scales, zero_points, axis, dtype)


def _weight(imp, w: torch.Tensor, scales, zero_points, axis: int, dtype) -> Weight:
    if dtype != torch.int8 or w.dtype != torch.int8:
        raise imp.error(f"weights of dtype {w.dtype} are not supported (int8 only)")
    if axis != 0:
        raise imp.error(f"per-channel weights quantized along axis {axis} are not supported "
                        "(axis 0, the output channels, only)")
    per_channel = isinstance(scales, torch.Tensor) and scales.numel() > 1
    if per_channel:
        scales = scales.detach().to(torch.float64).numpy()
        zps = (zero_points.detach().numpy() if isinstance(zero_points, torch.Tensor)
               else np.zeros(scales.size))
    else:
        scales, zps = scalar(scales), 0 if zero_points is None else scalar(zero_points)
    return Weight(weight_dequantize(w.detach().numpy(), scales, zps, per_channel),
                  tuple(w.shape))


# ---------------------------------------------------------------------------- conv / linear
def _weight_expr(imp, w, what):
    """The weight of a conv / linear: a dequantized int8 constant (the op is quantized), or
    a float constant the quantizer left alone (a float island)."""
    if isinstance(w, Weight):
        return w.expr
    if isinstance(w, torch.Tensor) and w.is_floating_point():
        return relax.const(w.detach().to(torch.float32).numpy())
    raise imp.error(f"{what} with a weight computed in the graph is not supported (a constant "
                    "weight, int8-quantized or float, only)")


def _bias_const(bias, shape):
    b = bias.detach().to(torch.float32).numpy()
    return relax.const(b.reshape(shape))


def conv2d(imp, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    weight = _weight_expr(imp, w, "conv2d")
    if isinstance(padding, str):
        raise imp.error(f"conv2d padding={padding!r} is not supported (explicit padding only)")
    pair = torch.nn.modules.utils._pair
    y = R.nn.conv2d(imp.as_float(x, "conv2d"), weight, strides=pair(stride),
                    padding=pair(padding), dilation=pair(dilation), groups=int(groups))
    if bias is not None:
        y = R.add(y, _bias_const(bias, (1, -1, 1, 1)))
    return imp.emit(y)


def linear(imp, x, w, bias=None):
    weight = _weight_expr(imp, w, "linear")
    y = R.matmul(imp.as_float(x, "linear"), R.permute_dims(weight, [1, 0]))
    if bias is not None:
        y = R.add(y, _bias_const(bias, (-1,)))
    return imp.emit(y)


# ---------------------------------------------------------------------------- float ops
def relu(imp, x, *_):
    return imp.emit(R.nn.relu(imp.as_float(x, "relu")))


def hardtanh(imp, x, min_val=-1.0, max_val=1.0):
    return imp.emit(R.clip(imp.as_float(x, "hardtanh"), float(min_val), float(max_val)))


def relu6(imp, x, *_):
    return hardtanh(imp, x, 0.0, 6.0)  # aten's relu6 is hardtanh(x, 0, 6)


def clamp(imp, x, min=None, max=None):  # noqa: A002 - aten's argument names
    if min is None or max is None:
        if min is not None and float(min) == 0.0 and max is None:
            return relu(imp, x)
        # one bound (mean pooling's clamp(min=1e-9) of a token count): a float island
        return island(float_ops.clamp)(imp, x, min, max)
    return hardtanh(imp, x, min, max)


def _binary(op, what):
    """a op b of float values; a Python number or a constant tensor on either side, and add
    and sub's alpha (b * alpha), as aten's Tensor and Scalar overloads have them."""

    def convert(imp, a, b, alpha=1):
        return imp.emit(op(imp.as_float(a, what), _times(imp.as_float(b, what), alpha)))

    return convert


def _times(x, alpha):
    """x * alpha (aten's alpha argument), x itself for alpha 1."""
    return x if alpha == 1 else R.multiply(x, relax.const(np.array(alpha, dtype="float32")))


def rsub(imp, a, b, alpha=1):
    """rsub(a, b) = b - a * alpha."""
    return imp.emit(R.subtract(imp.as_float(b, "rsub"), _times(imp.as_float(a, "rsub"), alpha)))


def island(fn):
    """A float-island converter of frontend/float_ops.py on PT2E values: dequantized (8-bit)
    operands are read as their float view first."""

    def convert(imp, *args, **kwargs):
        return fn(imp, *[_island_operand(imp, a, fn.__name__) for a in args], **kwargs)

    return convert


def _island_operand(imp, value, what):
    """A float island's operand: a dequantized value as its (bound) float view."""
    if isinstance(value, (Dq, PendingMaxPool)):
        return imp.emit(imp.as_float(value, what))
    return value


def layer_norm(imp, x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return float_ops.layer_norm(imp, _island_operand(imp, x, "layer_norm"), normalized_shape,
                                weight, bias, eps)


def upsample_nearest2d(imp, x, output_size=None, scale_factors=None):
    """Nearest upsampling copies values: on a dequantized value it moves the 8-bit data."""
    def resize(v):
        return float_ops.interpolate(imp, v, output_size, scale_factors, "nearest")

    if isinstance(x, Dq):
        return Dq(QValue(resize(x.q.expr), x.q.qparams))
    return resize(_island_operand(imp, x, "upsample_nearest2d"))


def upsample_bilinear2d(imp, x, output_size=None, align_corners=False, scale_factors=None):
    return float_ops.interpolate(imp, _island_operand(imp, x, "upsample_bilinear2d"),
                                 output_size, scale_factors, "bilinear", align_corners)


def _unary(fn, what):
    return lambda imp, x: imp.emit(fn(imp.as_float(x, what)))


def adaptive_avg_pool2d(imp, x, output_size):
    if tuple(torch.nn.modules.utils._pair(output_size)) != (1, 1):
        raise imp.error(f"adaptive_avg_pool2d to {output_size} is not supported (1x1 only)")
    return imp.emit(R.nn.adaptive_avg_pool2d(imp.as_float(x, "adaptive_avg_pool2d"), (1, 1)))


def avg_pool2d(imp, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
    if divisor_override is not None:
        raise imp.error("avg_pool2d with divisor_override is not supported")
    pair = torch.nn.modules.utils._pair
    stride = pair(stride if stride not in (None, []) else kernel_size)
    return imp.emit(R.nn.avg_pool2d(imp.as_float(x, "avg_pool2d"), pair(kernel_size), stride,
                                        pair(padding), ceil_mode=ceil_mode,
                                        count_include_pad=count_include_pad))


def mean(imp, x, dims, keepdim=False, dtype=None):
    shape = quantized_ops._shape_of(x.q if isinstance(x, Dq) else x)
    if len(shape) == 4 and sorted(d % 4 for d in dims) == [2, 3]:
        pooled = adaptive_avg_pool2d(imp, x, 1)
        return pooled if keepdim else imp.emit(R.reshape(pooled, shape[:2]))
    return quantized_ops.mean(imp, imp.as_float(x, "mean"), dims, keepdim)


def max_pool2d(imp, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    args = (kernel_size, stride or kernel_size, padding, dilation, ceil_mode)
    if not isinstance(x, Dq):
        return PendingMaxPool(imp.as_float(x, "max_pool2d"), args)
    return Dq(quantized_ops.max_pool2d(imp, x.q, *args))


def max_pool2d_with_indices(imp, *args):
    return (max_pool2d(imp, *args), None)


def _movement(fn):
    """Reshape-like ops: on a dequantized value they move the 8-bit data (each piece of an op
    that returns several, as unbind)."""

    def convert(imp, x, *args):
        if not isinstance(x, Dq):
            return fn(imp, x, *args)
        moved = fn(imp, x.q, *args)
        return tuple(Dq(m) for m in moved) if isinstance(moved, tuple) else Dq(moved)

    return convert


def cat(imp, values, dim=0):
    return imp.emit(R.concat([imp.as_float(v, "cat") for v in values], axis=int(dim)))


def identity(imp, x, *args, **kwargs):
    return x


def check(imp, *args, **kwargs):
    """A run-time check export leaves in the graph (_assert_tensor_metadata): nothing to
    compute, the compiled model's shapes and dtypes are fixed."""
    return None


def to_device(imp, x, device=None, dtype=None, *args, **kwargs):
    """aten.to.device (Tensor.to(device, dtype)): its dtype conversion, the device ignored."""
    return to_copy(imp, x, dtype=dtype)


def to_copy(imp, x, *args, dtype=None, **kwargs):
    """aten._to_copy: a dtype conversion (a copy to another device or layout is x itself)."""
    return x if dtype is None else island(float_ops.to_dtype)(imp, x, dtype=dtype)


add = _binary(R.add, "add")
sub = _binary(R.subtract, "sub")
mul = _binary(R.multiply, "mul")
div = _binary(R.divide, "div")
hardswish = _unary(quantized_ops.hardswish_expr, "hardswish")
hardsigmoid = _unary(quantized_ops.hardsigmoid_expr, "hardsigmoid")
sigmoid = _unary(R.sigmoid, "sigmoid")
flatten = _movement(quantized_ops.flatten)
reshape = _movement(lambda imp, x, shape: quantized_ops.reshape(imp, x, *shape))
transpose = _movement(quantized_ops.transpose)
permute = _movement(quantized_ops.permute)
expand = _movement(quantized_ops.expand)
unflatten = _movement(quantized_ops.unflatten)
unsqueeze = _movement(quantized_ops.unsqueeze)
squeeze = _movement(quantized_ops.squeeze)
select = _movement(quantized_ops.select)
slice_tensor = _movement(quantized_ops.slice_tensor)
unbind = _movement(quantized_ops.unbind)
