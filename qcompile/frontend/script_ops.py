"""Converters of TorchScript's spellings (schema argument order, packed parameters): the
quantized conv/linear ops unpack their weights into what the fx converters read, and the aten
ops with extra arguments (alpha, ScalarType codes, shape lists) are adapted to the shared
converters (quantized_ops, float_ops)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from tvm import relax

from . import float_ops, quantized_ops

# TorchScript's ScalarType codes (the quantized dtypes while PyTorch still has them: the PT2E
# path imports this module too, and must not need them)
SCALAR_TYPES = {code: getattr(torch, name) for code, name in (
    (13, "quint8"), (12, "qint8"), (6, "float32"), (4, "int64"), (3, "int32"), (11, "bool"))
    if hasattr(torch, name)}


def _conv_module(imp, packed, scale, zero_point):
    """What quantized_ops.conv2d reads from an nnq.Conv2d, from the packed parameters."""
    q = torch.ops.quantized
    if bool(q.conv2d_transpose(packed)):
        raise imp.error("quantized transposed convolutions are not supported")
    weight, bias = q.conv2d_unpack(packed)
    return SimpleNamespace(
        padding_mode="zeros", weight=lambda: weight, bias=lambda: bias,
        stride=tuple(q.conv2d_stride(packed)), padding=tuple(q.conv2d_padding(packed)),
        dilation=tuple(q.conv2d_dilation(packed)), groups=int(q.conv2d_groups(packed)),
        scale=scale, zero_point=zero_point)


def _linear_module(packed, scale=None, zero_point=None):
    weight, bias = torch.ops.quantized.linear_unpack(packed)
    return SimpleNamespace(weight=lambda: weight, bias=lambda: bias, scale=scale,
                           zero_point=zero_point, dtype=torch.qint8)


def conv2d(relu: bool):
    """quantized::conv2d / conv2d_relu (x, packed params, scale, zero point)."""
    return lambda imp, x, packed, scale, zp: quantized_ops.conv2d(
        imp, _conv_module(imp, packed, scale, zp), x, relu=relu)


def linear(relu: bool):
    """quantized::linear / linear_relu (x, packed params, scale, zero point)."""
    return lambda imp, x, packed, scale, zp: quantized_ops.linear(
        imp, _linear_module(packed, scale, zp), x, relu=relu)


def dynamic_linear(relu: bool):
    """quantized::linear_dynamic / linear_relu_dynamic (quantize_dynamic's int8 Linear)."""

    def convert(imp, x, packed, reduce_range=False):
        label = f"{imp.ts_node.kind()} %{imp.ts_node.output().debugName()}"
        return quantized_ops.dynamic_linear(imp, _linear_module(packed), x, relu=relu,
                                            reduce_range=bool(reduce_range), label=label)

    return convert


def quantize_per_tensor(imp, x, scale, zero_point, dtype):
    """aten::quantize_per_tensor, its dtype a ScalarType code."""
    return quantized_ops.quantize_per_tensor(imp, x, scale, zero_point,
                                             SCALAR_TYPES.get(dtype, dtype))


def hardswish(imp, x, scale, zero_point):
    """quantized::hardswish (x, output scale, output zero point)."""
    return quantized_ops.hardswish_module(imp, SimpleNamespace(scale=scale,
                                                               zero_point=zero_point), x)


def reshape(imp, x, shape):
    """aten::reshape / aten::view (x, shape list)."""
    return quantized_ops.reshape(imp, x, *shape)


def passthrough(imp, x, *args):
    """aten::contiguous, aten::dropout (in eval): the value itself."""
    return x


def to(imp, x, *args):
    """aten::to, any overload: the first argument that is a ScalarType code is the dtype."""
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and a in SCALAR_TYPES:
            return float_ops.to_dtype(imp, x, SCALAR_TYPES[a])
    raise imp.error("aten::to without a dtype (a device move?) is not supported")


def arith(convert, name: str, reverse: bool = False):
    """aten::add / sub (with alpha), rsub, mul, div on graph tensors and numbers."""

    def fn(imp, a, b, alpha=1, *rest):
        if isinstance(alpha, str):  # aten::div's rounding_mode
            raise imp.error(f"aten::{name} with rounding_mode={alpha!r} is not supported")
        if alpha != 1:
            b = float_ops.mul(imp, b, alpha)
        return convert(imp, b, a) if reverse else convert(imp, a, b)

    return fn


def layer_norm(imp, x, shape, weight, bias, eps, *_):
    return float_ops.layer_norm(imp, x, shape, weight, bias, eps)


def embedding(imp, weight, ids, *_):
    """aten::embedding (weight, ids, ...): the weight comes first."""
    return float_ops.embedding(imp, ids, weight)


def ones_like(imp, x, *_):
    return imp.emit(relax.op.ones_like(x))


def zeros_like(imp, x, *_):
    return imp.emit(relax.op.zeros_like(x))
