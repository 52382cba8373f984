"""Import a PT2E-quantized model (torchao `prepare_pt2e` / `convert_pt2e`, then optionally
`torch.export`) into the same Relax Q/DQ form as the eager and fx paths.

A PT2E graph holds aten float ops between `quantized_decomposed` quantize / dequantize nodes:

    q = quantize_per_tensor(x, s, zp, qmin, qmax, dtype)     -> an 8-bit value (QValue)
    d = dequantize_per_tensor(q, s, zp, ...)                  -> its float view (Dq)
    w = dequantize_per_channel(int8 constant, scales, zps, 0) -> a constant weight (Weight)
    y = conv2d(d, w, bias) ; hardtanh(y) ; add(d2, y) ; ...   -> float Relax values

The converters below emit the float ops as they are and a quantize wherever the graph has one,
so `quantize(clip(conv2d(dequantize(x), dequantize(W)) + b))` reaches the passes exactly as the
other frontends write it.  int8 activations (XNNPACKQuantizer) become uint8 with the zero point
shifted by 128: q + 128 with zp + 128 dequantizes and quantizes to the same values, bit for bit.
Data movement on a dequantized value (max pool, flatten, reshape) stays on the 8-bit values.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
from tvm import relax

from . import ops
from .fx_import import Importer
from .values import QParams, QValue, dequantize, quantize, weight_dequantize

R = relax.op
_QD = "quantized_decomposed"
_Q = f"{_QD}.quantize_per_tensor"
_DQ = f"{_QD}.dequantize_per_tensor"
_RANGES = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


def is_pt2e_graph(model) -> bool:
    """True for a GraphModule (or ExportedProgram) holding quantized_decomposed Q/DQ ops."""
    if isinstance(model, torch.export.ExportedProgram):
        model = model.graph_module
    if not isinstance(model, torch.fx.GraphModule):
        return False
    return any(n.op == "call_function" and getattr(n.target, "namespace", "") == _QD
               for n in model.graph.nodes)


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


class Pt2eImporter(Importer):
    """Walks a PT2E graph (see the module docstring) and emits Relax through one BlockBuilder."""

    def __init__(self, model, probe: bool = False):
        if isinstance(model, torch.export.ExportedProgram):
            model = model.module()
        super().__init__(model, probe)

    def probe_name(self, node: torch.fx.Node) -> str | None:
        """Probes are the graph's quantize nodes, by node name (see reference_probes)."""
        is_quantize = node.op == "call_function" and _op_name(node.target).startswith(_Q)
        return node.name if is_quantize and isinstance(self.env[node], QValue) else None

    # -- values ------------------------------------------------------------------------
    def as_float(self, value, what: str):
        """A float Relax expression for a value (a Dq inline, so patterns see the dequantize)."""
        if isinstance(value, Dq):
            return dequantize(value.q)
        if isinstance(value, PendingMaxPool):  # not quantized after all: a float island
            kernel, stride, padding, dilation, ceil_mode = value.args
            pair = torch.nn.modules.utils._pair
            return self.emit(R.nn.max_pool2d(value.value, pair(kernel), pair(stride),
                                             pair(padding), pair(dilation), ceil_mode=ceil_mode))
        if isinstance(value, QValue):
            raise self.error(f"{what} got an 8-bit tensor without its dequantize")
        if isinstance(value, relax.Expr):
            return value
        raise self.error(f"{what} expects a tensor computed from the inputs, got {type(value)}")

    def float_op(self, expr) -> relax.Var:
        return self.emit(expr)

    def _qparams(self, scale, zero_point, qmin, qmax, dtype) -> QParams:
        scale, zero_point = _scalar(scale), int(_scalar(zero_point))
        if dtype not in _RANGES:
            raise self.error(f"activations of dtype {dtype} are not supported (uint8, int8)")
        if (qmin, qmax) != _RANGES[dtype]:
            raise self.error(f"a quantize to [{qmin}, {qmax}] in {dtype} is not supported "
                             f"(the full range {list(_RANGES[dtype])} only)")
        shift = 128 if dtype == torch.int8 else 0
        return QParams(float(scale), zero_point + shift, "uint8")

    # -- the graph walk ------------------------------------------------------------------
    def _convert_node(self, node: torch.fx.Node):
        args, kwargs = self._resolve(node.args), self._resolve(node.kwargs)
        if node.op == "get_attr":
            return super()._convert_node(node)
        if node.op == "call_module":  # export's input guards (_guards_fn) compute nothing
            if node.target.startswith("_guards"):
                return None
            raise self.error(f"unexpected submodule call {node.target} in a PT2E graph")
        if node.op != "call_function":
            raise self.error(f"unexpected fx node kind {node.op}")
        if node.target is operator.getitem:
            return args[0][args[1]]
        name = _op_name(node.target)
        handler = _HANDLERS.get(name)
        if handler is None:
            raise self.error(f"unsupported PT2E op {name}. Supported: "
                             + ", ".join(sorted(_HANDLERS)))
        return handler(self, *args, **kwargs)

    def _output(self, value):
        values = value if isinstance(value, (tuple, list)) else [value]
        values = [ops.dequantize_value(self, v.q) if isinstance(v, Dq) else v for v in values]
        return super()._output(values if len(values) > 1 else values[0])


def _op_name(target) -> str:
    """'quantized_decomposed.quantize_per_tensor.default', 'aten.conv2d.default', ..."""
    return str(target)


def _scalar(value):
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


# ---------------------------------------------------------------------------- Q / DQ
def _quantize(imp, x, scale, zero_point, qmin, qmax, dtype):
    qp = imp._qparams(scale, zero_point, qmin, qmax, dtype)
    if isinstance(x, Dq) and x.q.qparams == qp:  # requantize to the same qparams: a no-op
        return x.q
    if isinstance(x, PendingMaxPool):
        q = QValue(imp.emit(quantize(x.value, qp)), qp)
        return ops.max_pool2d(imp, q, *x.args)
    return QValue(imp.emit(quantize(imp.as_float(x, "quantize_per_tensor"), qp)), qp)


def _dequantize(imp, q, scale, zero_point, qmin, qmax, dtype, out_dtype=None):
    if isinstance(q, torch.Tensor):  # a per-tensor quantized constant (a weight)
        return _weight(imp, q, scale, zero_point, 0, dtype)
    qp = imp._qparams(scale, zero_point, qmin, qmax, dtype)
    if not isinstance(q, QValue):
        raise imp.error("dequantize_per_tensor of a value that is not quantized")
    if q.qparams != qp:
        raise imp.error(f"dequantize with qparams {qp} of a tensor quantized with {q.qparams}")
    return Dq(q)


def _dequantize_channel(imp, w, scales, zero_points, axis, qmin, qmax, dtype, out_dtype=None):
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
        scales, zps = _scalar(scales), 0 if zero_points is None else _scalar(zero_points)
    return Weight(weight_dequantize(w.detach().numpy(), scales, zps, per_channel),
                  tuple(w.shape))


# ---------------------------------------------------------------------------- conv / linear
def _need_weight(imp, w, what):
    if not isinstance(w, Weight):
        raise imp.error(f"{what} with a float weight: the weight must be quantized (int8) for "
                        "qcompile; annotate this op in your quantizer")
    return w


def _bias_const(bias, shape):
    b = bias.detach().to(torch.float32).numpy()
    return relax.const(b.reshape(shape))


def _conv2d(imp, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    w = _need_weight(imp, w, "conv2d")
    if isinstance(padding, str):
        raise imp.error(f"conv2d padding={padding!r} is not supported (explicit padding only)")
    pair = torch.nn.modules.utils._pair
    y = R.nn.conv2d(imp.as_float(x, "conv2d"), w.expr, strides=pair(stride),
                    padding=pair(padding), dilation=pair(dilation), groups=int(groups))
    if bias is not None:
        y = R.add(y, _bias_const(bias, (1, -1, 1, 1)))
    return imp.float_op(y)


def _linear(imp, x, w, bias=None):
    w = _need_weight(imp, w, "linear")
    y = R.matmul(imp.as_float(x, "linear"), R.permute_dims(w.expr, [1, 0]))
    if bias is not None:
        y = R.add(y, _bias_const(bias, (-1,)))
    return imp.float_op(y)


# ---------------------------------------------------------------------------- float ops
def _relu(imp, x, *_):
    return imp.float_op(R.nn.relu(imp.as_float(x, "relu")))


def _hardtanh(imp, x, min_val=-1.0, max_val=1.0):
    return imp.float_op(R.clip(imp.as_float(x, "hardtanh"), float(min_val), float(max_val)))


def _relu6(imp, x, *_):
    return _hardtanh(imp, x, 0.0, 6.0)  # aten's relu6 is hardtanh(x, 0, 6)


def _clamp(imp, x, min=None, max=None):  # noqa: A002 - aten's argument names
    if min is None or max is None:
        if min is not None and float(min) == 0.0 and max is None:
            return _relu(imp, x)
        raise imp.error("clamp with one open bound is not supported (relu or hardtanh only)")
    return _hardtanh(imp, x, min, max)


def _binary(op, what):
    def convert(imp, a, b, alpha=1):
        if alpha != 1:
            raise imp.error(f"{what} with alpha={alpha} is not supported")
        return imp.float_op(op(imp.as_float(a, what), imp.as_float(b, what)))

    return convert


def _unary(fn, what):
    return lambda imp, x: imp.float_op(fn(imp.as_float(x, what)))


def _adaptive_avg_pool2d(imp, x, output_size):
    if tuple(torch.nn.modules.utils._pair(output_size)) != (1, 1):
        raise imp.error(f"adaptive_avg_pool2d to {output_size} is not supported (1x1 only)")
    return imp.float_op(R.nn.adaptive_avg_pool2d(imp.as_float(x, "adaptive_avg_pool2d"), (1, 1)))


def _avg_pool2d(imp, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
    if divisor_override is not None:
        raise imp.error("avg_pool2d with divisor_override is not supported")
    pair = torch.nn.modules.utils._pair
    stride = pair(stride if stride not in (None, []) else kernel_size)
    return imp.float_op(R.nn.avg_pool2d(imp.as_float(x, "avg_pool2d"), pair(kernel_size), stride,
                                        pair(padding), ceil_mode=ceil_mode,
                                        count_include_pad=count_include_pad))


def _mean(imp, x, dims, keepdim=False, dtype=None):
    shape = ops._shape_of(x.q if isinstance(x, Dq) else x)
    if len(shape) == 4 and sorted(d % 4 for d in dims) == [2, 3]:
        pooled = _adaptive_avg_pool2d(imp, x, 1)
        return pooled if keepdim else imp.float_op(R.reshape(pooled, shape[:2]))
    raise imp.error(f"mean over dims {list(dims)} is not supported (global 2-d pooling only)")


def _max_pool2d(imp, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    args = (kernel_size, stride or kernel_size, padding, dilation, ceil_mode)
    if not isinstance(x, Dq):
        return PendingMaxPool(imp.as_float(x, "max_pool2d"), args)
    return Dq(ops.max_pool2d(imp, x.q, *args))


def _max_pool2d_with_indices(imp, *args):
    return (_max_pool2d(imp, *args), None)


def _movement(fn):
    """Reshape-like ops: on a dequantized value they move the 8-bit data."""

    def convert(imp, x, *args):
        if isinstance(x, Dq):
            return Dq(fn(imp, x.q, *args))
        return fn(imp, x, *args)

    return convert


def _cat(imp, values, dim=0):
    return imp.float_op(R.concat([imp.as_float(v, "cat") for v in values], axis=int(dim)))


def _identity(imp, x, *args, **kwargs):
    return x


_HANDLERS = {
    f"{_Q}.default": _quantize, f"{_Q}.tensor": _quantize,
    f"{_DQ}.default": _dequantize, f"{_DQ}.tensor": _dequantize,
    f"{_QD}.dequantize_per_channel.default": _dequantize_channel,
    "aten.conv2d.default": _conv2d,
    "aten.linear.default": _linear,
    "aten.relu.default": _relu, "aten.relu_.default": _relu,
    "aten.hardtanh.default": _hardtanh, "aten.hardtanh_.default": _hardtanh,
    "aten.relu6.default": _relu6, "aten.relu6_.default": _relu6,  # F.relu6 exports as relu6
    "aten.clamp.default": _clamp,
    "aten.add.Tensor": _binary(R.add, "add"), "aten.add_.Tensor": _binary(R.add, "add"),
    "aten.mul.Tensor": _binary(R.multiply, "mul"),
    "aten.hardswish.default": _unary(ops.hardswish_expr, "hardswish"),
    "aten.hardswish_.default": _unary(ops.hardswish_expr, "hardswish"),
    "aten.hardsigmoid.default": _unary(ops.hardsigmoid_expr, "hardsigmoid"),
    "aten.sigmoid.default": _unary(R.sigmoid, "sigmoid"),
    "aten.adaptive_avg_pool2d.default": _adaptive_avg_pool2d,
    "aten.mean.dim": _mean,
    "aten.avg_pool2d.default": _avg_pool2d,
    "aten.max_pool2d.default": _max_pool2d,
    "aten.max_pool2d_with_indices.default": _max_pool2d_with_indices,
    "aten.flatten.using_ints": _movement(ops.flatten),
    "aten.view.default": _movement(lambda imp, x, shape: ops.reshape(imp, x, *shape)),
    "aten.reshape.default": _movement(lambda imp, x, shape: ops.reshape(imp, x, *shape)),
    "aten.cat.default": _cat,
    "aten.dropout.default": _identity, "aten.clone.default": _identity,
    "aten.contiguous.default": _identity,
}


def reference_probes(model, inputs, names):
    """Run the PT2E graph in PyTorch; return (its output, {quantize node name: its 8-bit output
    as uint8, int8 shifted by 128 as the importer shifts it})."""
    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    wanted, seen = set(names), {}

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            if n.name in wanted:
                v = value.detach()
                seen[n.name] = ((v.to(torch.int32) + 128).to(torch.uint8) if v.dtype == torch.int8
                                else v).numpy().copy()
            return value

    return _Recorder(model).run(*inputs), seen
