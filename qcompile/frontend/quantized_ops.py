"""Converters of PyTorch's quantized ops (eager / FX modules and functions; TorchScript and PT2E
reuse some): torch op -> Relax in Q/DQ form.

Every quantized op is written the way a dequantize -> float op -> quantize reading of it would
be, so the passes see one form whatever the capture path was.  Data movement (reshape, flatten,
max pool) stays on the 8-bit values, where it is exact.  Which torch spelling reaches which
converter is frontend/op_table.py's business.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
from tvm import relax

from . import float_ops
from .values import (QParams, QValue, choose_qparams, dequantize, quantize, scalar,
                     weight_dequantize)

R = relax.op


def _qparams_of(module_or_tensor) -> QParams:
    m = module_or_tensor
    return QParams(float(m.scale), int(m.zero_point))


def _need_q(imp, value, what: str) -> QValue:
    if not isinstance(value, QValue):
        raise imp.error(f"{what} expects a quantized tensor but got a float one "
                        "(is a QuantStub missing before it?)")
    return value


def _need_float(imp, value, what: str):
    if isinstance(value, QValue):
        raise imp.error(f"{what} is a float op applied to a quantized tensor: quantize this "
                        "module too (give it a qconfig) or put a DeQuantStub before it")
    return value


def _out_dtype(qtensor_dtype) -> str:
    return {torch.quint8: "uint8", torch.qint8: "int8"}.get(qtensor_dtype, None)


# ---------------------------------------------------------------------------- boundaries
def quantize_stub(imp, module, x):
    """QuantStub after convert: float -> 8 bit with the module's qparams."""
    _need_float(imp, x, "Quantize")
    dtype = _out_dtype(module.dtype)
    if dtype != "uint8":
        raise imp.error(f"Quantize to {module.dtype} is not supported (quint8 only)")
    qp = QParams(float(module.scale), int(module.zero_point), dtype)
    return QValue(imp.emit(quantize(x, qp)), qp)


def quantize_per_tensor(imp, x, scale, zero_point, dtype):
    """torch.quantize_per_tensor as convert_fx writes it (scale/zero point may be tensors)."""
    qp = QParams(float(scale), int(zero_point), _out_dtype(dtype))
    if qp.dtype != "uint8":
        raise imp.error(f"quantize_per_tensor to {dtype} is not supported (quint8 only)")
    return QValue(imp.emit(quantize(_need_float(imp, x, "quantize_per_tensor"), qp)), qp)


def dequantize_value(imp, x, *_):
    if not isinstance(x, QValue):
        return x
    out = imp.emit(dequantize(x))
    imp.dequantized_from[out] = x.qparams  # so the output's LSB is known to verify
    return out


# ---------------------------------------------------------------------------- conv / linear
def _weight(imp, w: torch.Tensor):
    """A quantized weight as an int8 constant and its (per-tensor or per-channel) dequantize."""
    per_channel = w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    if per_channel:
        if w.q_per_channel_axis() != 0:
            raise imp.error("per-channel weights quantized along an axis other than 0")
        scales = w.q_per_channel_scales().to(torch.float64).numpy()
        zps = w.q_per_channel_zero_points().numpy()
    else:
        scales, zps = w.q_scale(), w.q_zero_point()
    if w.dtype != torch.qint8:
        raise imp.error(f"weights of dtype {w.dtype} are not supported (qint8 only)")
    return weight_dequantize(w.int_repr().numpy(), scales, zps, per_channel)


def _finish(imp, module, y, relu: bool) -> QValue:
    """Bias already added; apply the fused relu and quantize to the module's output qparams."""
    if relu:
        y = R.nn.relu(y)
    qp = _qparams_of(module)
    return QValue(imp.emit(quantize(y, qp)), qp)


def _bias(module):
    b = module.bias()
    return None if b is None else b.detach().to(torch.float32).numpy()


def conv2d(imp, module, x, relu: bool = False):
    """Quantized Conv2d / ConvReLU2d."""
    x = _need_q(imp, x, type(module).__name__)
    if module.padding_mode != "zeros":
        raise imp.error(f"conv padding_mode={module.padding_mode!r} is not supported (zeros only)")
    w = _weight(imp, module.weight())
    y = R.nn.conv2d(dequantize(x), w, strides=module.stride, padding=module.padding,
                    dilation=module.dilation, groups=module.groups)
    b = _bias(module)
    if b is not None:
        y = R.add(y, relax.const(b.reshape(1, -1, 1, 1)))
    return _finish(imp, module, y, relu)


def linear(imp, module, x, relu: bool = False):
    """Quantized Linear / LinearReLU on inputs of any rank (the last dim is the features)."""
    x = _need_q(imp, x, type(module).__name__)
    w = _weight(imp, module.weight())
    y = R.matmul(dequantize(x), R.permute_dims(w, [1, 0]))
    b = _bias(module)
    if b is not None:
        y = R.add(y, relax.const(b))
    return _finish(imp, module, y, relu)


def _op_label(imp, module) -> str:
    """How messages name a module's op: its class and, from fx, its path in the model."""
    kind = module._get_name() if hasattr(module, "_get_name") else type(module).__name__
    node = getattr(imp, "node", None)
    if node is not None and node.op == "call_module":
        return f"{kind} '{node.target}'"
    return kind


def dynamic_linear(imp, module, x, relu: bool = False, reduce_range: bool | None = None,
                   label: str | None = None):
    """Dynamically quantized Linear / LinearReLU (quantize_dynamic): float in, float out.

    The input's qparams are chosen from the input itself, at run time:
        s, z = choose_qparams(x)                                 (values.choose_qparams)
        y = matmul(dequantize(quantize(x, s, z), s, z), permute_dims(dequantize(W, sw, zw)))
        [y = add(y, bias)]  [y = relu(y)]
    `reduce_range` defaults to what the module passes PyTorch's op (True since version 4)."""
    label = label or _op_label(imp, module)
    if isinstance(x, QValue):
        raise imp.error(f"{label} takes a float input but got a quantized one")
    packed = getattr(module, "_packed_params", None)
    dtype = packed.dtype if packed is not None else module.dtype
    if dtype != torch.qint8:
        raise imp.error(f"{label}: dynamic quantization with {dtype} weights is not supported "
                        "(qint8 only: quantize_dynamic(..., dtype=torch.qint8))")
    if len(x.ty.shape) < 2:
        raise imp.error(f"{label}: an input of rank {len(x.ty.shape)}; PyTorch's dynamic linear "
                        "takes rank 2 or more")
    weight = module.weight()
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) \
            and weight.q_per_channel_axis() != 0:
        raise imp.error(f"{label}: weights quantized per channel along axis "
                        f"{weight.q_per_channel_axis()} are not supported (axis 0 only)")
    if reduce_range is None:
        reduce_range = isinstance(module, nniqd.LinearReLU) or (module.version or 0) >= 4
    w = _weight(imp, weight)
    qp = imp.emit(choose_qparams(x, reduce_range, label))
    s, z = relax.TupleGetItem(qp, 0), relax.TupleGetItem(qp, 1)
    xq = R.quantize(x, s, z, axis=-1, out_dtype="uint8")
    y = R.matmul(R.dequantize(xq, s, z, axis=-1), R.permute_dims(w, [1, 0]))
    b = _bias(module)
    if b is not None:
        y = R.add(y, relax.const(b))
    if relu:
        y = R.nn.relu(y)
    return imp.emit(y)


# ---------------------------------------------------------------------------- binary ops
def _binary(op, relu: bool):
    def convert(imp, a, b, scale, zero_point):
        a, b = _need_q(imp, a, op.__name__), _need_q(imp, b, op.__name__)
        y = op(dequantize(a), dequantize(b))
        if relu:
            y = R.nn.relu(y)
        qp = QParams(float(scale), int(zero_point))
        return QValue(imp.emit(quantize(y, qp)), qp)

    return convert


def qcat(imp, values, dim=0, scale=None, zero_point=None):
    """torch.ops.quantized.cat (FloatFunctional.cat)."""
    values = [_need_q(imp, v, "cat") for v in values]
    qp = QParams(float(scale), int(zero_point))
    y = R.concat([dequantize(v) for v in values], axis=dim)
    return QValue(imp.emit(quantize(y, qp)), qp)


# ---------------------------------------------------------------------------- unary ops
def _same_qparams(imp, x, float_fn, what):
    x = _need_q(imp, x, what)
    return QValue(imp.emit(quantize(float_fn(dequantize(x)), x.qparams)), x.qparams)


def relu(imp, x, *args, **kwargs):
    if not isinstance(x, QValue):
        return imp.emit(R.nn.relu(x))
    return _same_qparams(imp, x, R.nn.relu, "relu")


def clamp_float(imp, x, lo, hi, what="hardtanh"):
    return _same_qparams(imp, x, lambda d: R.clip(d, float(lo), float(hi)), what)


def hardswish_expr(d):
    """x * clip(x + 3, 0, 6) / 6, the float reading of hardswish."""
    three = scalar(3.0, "float32")
    return R.divide(R.multiply(d, R.clip(R.add(d, three), 0.0, 6.0)), scalar(6.0, "float32"))


def hardsigmoid_expr(d):
    """clip(x + 3, 0, 6) / 6."""
    return R.divide(R.clip(R.add(d, scalar(3.0, "float32")), 0.0, 6.0), scalar(6.0, "float32"))


def _fixed_output(imp, x, float_fn, qp: QParams, what):
    x = _need_q(imp, x, what)
    return QValue(imp.emit(quantize(float_fn(dequantize(x)), qp)), qp)


# PyTorch gives quantized sigmoid and hardsigmoid fixed output qparams on quint8.
FIXED_SIGMOID_QPARAMS = QParams(1.0 / 256.0, 0)


def max_pool2d(imp, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    x = _need_q(imp, x, "max_pool2d")
    if return_indices:
        raise imp.error("max_pool2d with return_indices=True is not supported")
    pair = torch.nn.modules.utils._pair
    stride = pair(stride if stride not in (None, []) else kernel_size)
    y = R.nn.max_pool2d(x.expr, pair(kernel_size), stride, pair(padding), pair(dilation),
                        ceil_mode=ceil_mode)
    return QValue(imp.emit(y), x.qparams)


def avg_pool2d(imp, x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    x = _need_q(imp, x, "avg_pool2d")
    if divisor_override is not None:
        raise imp.error("avg_pool2d with divisor_override is not supported")
    pair = torch.nn.modules.utils._pair
    stride = pair(stride if stride not in (None, []) else kernel_size)
    y = R.nn.avg_pool2d(dequantize(x), pair(kernel_size), stride, pair(padding),
                        ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    return QValue(imp.emit(quantize(y, x.qparams)), x.qparams)


def adaptive_avg_pool2d(imp, x, output_size):
    x = _need_q(imp, x, "adaptive_avg_pool2d")
    size = torch.nn.modules.utils._pair(output_size)
    if tuple(size) != (1, 1):
        raise imp.error(f"adaptive_avg_pool2d to {size} is not supported (output size 1 only)")
    y = R.nn.adaptive_avg_pool2d(dequantize(x), (1, 1))
    return QValue(imp.emit(quantize(y, x.qparams)), x.qparams)


# ---------------------------------------------------------------------------- data movement
def _shape_of(value):
    if isinstance(value, torch.Tensor):  # a constant (a model's buffer)
        return list(value.shape)
    expr = value.expr if isinstance(value, QValue) else value
    return [int(d) for d in expr.ty.shape]


def _movement(value, fn):
    """fn applied to the tensor: an 8-bit one keeps its qparams (data movement is exact)."""
    if isinstance(value, QValue):
        return QValue(fn(value.expr), value.qparams)
    return fn(value)


def _tensor(imp, x, what: str):
    """A quantized value as it is; anything else as a float Relax expression."""
    return x if isinstance(x, QValue) else float_ops.float_value(imp, x, what)


def transpose(imp, x, dim0, dim1):
    """x.transpose(dim0, dim1), of 8-bit or float data."""
    x = _tensor(imp, x, "transpose")
    axes = list(range(len(_shape_of(x))))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return _movement(x, lambda v: imp.emit(R.permute_dims(v, axes)))


def permute(imp, x, *dims):
    """x.permute(*dims), of 8-bit or float data."""
    dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else dims
    x = _tensor(imp, x, "permute")
    return _movement(x, lambda v: imp.emit(R.permute_dims(v, [int(d) for d in dims])))


def chunk(imp, x, chunks, dim=0):
    """x.chunk(chunks, dim): slices of ceil(size / chunks) along dim (the last may be shorter,
    and there may be fewer than `chunks`, as in PyTorch), of 8-bit or float data."""
    x = _tensor(imp, x, "chunk")
    shape = _shape_of(x)
    axis = dim % len(shape)
    step = -(-shape[axis] // int(chunks))

    def piece(begin):
        end = min(begin + step, shape[axis])
        return _movement(x, lambda v: imp.emit(R.strided_slice(v, [axis], [begin], [end])))

    return tuple(piece(begin) for begin in range(0, shape[axis], step))


def expand(imp, x, *sizes, implicit=False):
    """x.expand(*sizes) (-1 keeps a size), of 8-bit or float data."""
    if sizes and isinstance(sizes[0], (list, tuple)):  # a list, or TorchScript's (list, implicit)
        sizes = sizes[0]
    x = _tensor(imp, x, "expand")
    shape = _shape_of(x)
    lead = len(sizes) - len(shape)
    target = [shape[i - lead] if int(d) == -1 else int(d) for i, d in enumerate(sizes)]
    return _movement(x, lambda v: imp.emit(R.broadcast_to(v, target)))


def unflatten(imp, x, dim, sizes):
    """x.unflatten(dim, sizes) (one size may be -1), of 8-bit or float data."""
    shape = _shape_of(_tensor(imp, x, "unflatten"))
    axis = int(dim) % len(shape)
    sizes = [int(d) for d in sizes]
    if -1 in sizes:
        known = int(np.prod([d for d in sizes if d != -1]))
        sizes[sizes.index(-1)] = shape[axis] // known
    return reshape(imp, x, *(shape[:axis] + sizes + shape[axis + 1:]))


def unsqueeze(imp, x, dim):
    """x.unsqueeze(dim), of 8-bit or float data."""
    x = _tensor(imp, x, "unsqueeze")
    axis = int(dim) % (len(_shape_of(x)) + 1)
    return _movement(x, lambda v: imp.emit(R.expand_dims(v, [axis])))


def squeeze(imp, x, dim=None):
    """x.squeeze(dim) (a dim of size other than 1 stays, as in PyTorch), of 8-bit or float
    data."""
    x = _tensor(imp, x, "squeeze")
    shape = _shape_of(x)
    dims = range(len(shape)) if dim is None else dim if isinstance(dim, (list, tuple)) else [dim]
    axes = sorted({int(d) % len(shape) for d in dims if shape[int(d)] == 1})
    if not axes:
        return x
    return _movement(x, lambda v: imp.emit(R.squeeze(v, axes)))


def slice_tensor(imp, x, dim=0, start=None, end=None, step=1):
    """x[..., start:end:step, ...] along dim, of 8-bit or float data."""
    x = _tensor(imp, x, "slice")
    size = _shape_of(x)[int(dim)]
    begin, stop, stride = slice(start, end, step).indices(size)
    return _movement(x, lambda v: imp.emit(R.strided_slice(v, [int(dim)], [begin], [stop],
                                                           [stride])))


def select(imp, x, dim, index):
    """x.select(dim, index): one slice along dim, that dim removed, of 8-bit or float data."""
    x = _tensor(imp, x, "select")
    axis = int(dim) % len(_shape_of(x))
    index = int(index) % _shape_of(x)[axis]
    piece = slice_tensor(imp, x, axis, index, index + 1)
    return _movement(piece, lambda v: imp.emit(R.squeeze(v, [axis])))


def unbind(imp, x, dim=0):
    """x.unbind(dim): every slice along dim, of 8-bit or float data."""
    x = _tensor(imp, x, "unbind")
    return tuple(select(imp, x, dim, i) for i in range(_shape_of(x)[int(dim)]))


def mean(imp, x, dim=None, keepdim=False, dtype=None):
    """x.mean(dims).  Quantized: the mean over H and W of an (N, C, H, W) tensor, which keeps
    its qparams (PyTorch's quantized mean); float: a float island.  The dims stay as spelled
    (2, 3 or -1, -2...): PyTorch's qnnpack engine picks its kernel by them."""
    if not isinstance(x, QValue):
        f = float_ops.float_value(imp, x, "mean")
        axes = None if dim is None else [int(d) for d in (dim if isinstance(dim, (list, tuple))
                                                          else [dim])]
        return imp.emit(R.mean(f, axis=axes, keepdims=bool(keepdim)))
    shape = _shape_of(x)
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    if (len(shape) != 4 or dim is None or sorted(int(d) % 4 for d in dims) != [2, 3]
            or dtype is not None):
        raise imp.error(f"mean of a quantized tensor over dims {dim} of shape {shape} is not "
                        "supported (the global spatial mean, dims (2, 3) of N, C, H, W, only)")
    mean_hw = R.mean(dequantize(x), axis=[int(d) for d in dims], keepdims=True)
    pooled = QValue(imp.emit(quantize(mean_hw, x.qparams)), x.qparams)
    return pooled if keepdim else flatten(imp, pooled, 1)


def flatten(imp, x, start_dim=0, end_dim=-1):
    shape = _shape_of(x)
    nd = len(shape)
    s, e = start_dim % nd, end_dim % nd
    new = shape[:s] + [int(np.prod(shape[s:e + 1]))] + shape[e + 1:]
    return _movement(x, lambda v: imp.emit(R.reshape(v, new)))


def reshape(imp, x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
        shape = shape[0]
    return _movement(x, lambda v: imp.emit(R.reshape(v, [int(d) for d in shape])))


def size(imp, x, dim=None):
    shape = _shape_of(x)
    return tuple(shape) if dim is None else shape[dim]


def identity(imp, module, x, *args, **kwargs):
    return x


def passthrough(imp, x, *args, **kwargs):
    """Tensor.contiguous() and the like: the value itself."""
    return x


# ---------------------------------------------------------------------------- calls, modules
add = _binary(R.add, relu=False)
add_relu = _binary(R.add, relu=True)
mul = _binary(R.multiply, relu=False)
mul_relu = _binary(R.multiply, relu=True)


def relu6(imp, x, inplace=False):
    return clamp_float(imp, x, 0.0, 6.0, "relu6")


def hardtanh(imp, x, min_val=-1.0, max_val=1.0, inplace=False):
    return clamp_float(imp, x, min_val, max_val, "hardtanh")


def hardsigmoid(imp, x, inplace=False):
    return _fixed_output(imp, x, hardsigmoid_expr, FIXED_SIGMOID_QPARAMS, "hardsigmoid")


def sigmoid(imp, x):
    return _fixed_output(imp, x, R.sigmoid, FIXED_SIGMOID_QPARAMS, "sigmoid")


def dequantize_module(imp, module, x):
    return dequantize_value(imp, x)


def conv2d_relu_module(imp, module, x):
    return conv2d(imp, module, x, relu=True)


def linear_relu_module(imp, module, x):
    return linear(imp, module, x, relu=True)


def dynamic_linear_relu_module(imp, module, x):
    return dynamic_linear(imp, module, x, relu=True)


def relu_module(imp, module, x):
    return relu(imp, x)


def relu6_module(imp, module, x):
    return clamp_float(imp, x, 0.0, 6.0, "ReLU6")


def hardtanh_module(imp, module, x):
    return clamp_float(imp, x, module.min_val, module.max_val, "Hardtanh")


def hardswish_module(imp, module, x):
    """quantized Hardswish: the module's own output qparams."""
    return _fixed_output(imp, x, hardswish_expr, _qparams_of(module), "Hardswish")


def hardsigmoid_module(imp, module, x):
    return _fixed_output(imp, x, hardsigmoid_expr, FIXED_SIGMOID_QPARAMS, "Hardsigmoid")


def sigmoid_module(imp, module, x):
    return _fixed_output(imp, x, R.sigmoid, FIXED_SIGMOID_QPARAMS, "Sigmoid")


def max_pool2d_module(imp, m, x):
    return max_pool2d(imp, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                      m.return_indices)


def avg_pool2d_module(imp, m, x):
    return avg_pool2d(imp, x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                      m.count_include_pad, m.divisor_override)


def adaptive_avg_pool2d_module(imp, m, x):
    return adaptive_avg_pool2d(imp, x, m.output_size)


def flatten_module(imp, m, x):
    return flatten(imp, x, m.start_dim, m.end_dim)
