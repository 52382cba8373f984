"""Import a TorchScript quantized model (traced or scripted, e.g. from `torch.jit.load`) into
the same Relax Q/DQ form as the fx path.

The inlined graph is interpreted node by node.  Tensors computed from the inputs become Relax
values (through the same converters as fx: frontend/ops.py); everything else is evaluated here
as a Python value: constants, attributes (`prim::GetAttr`, down to the packed weights, which
are unpacked with `quantized::conv2d_unpack` / `linear_unpack`), lists, and the shape checks a
scripted module makes (`aten::size`, `len`, comparisons, `prim::If` on a known condition).
"""

from __future__ import annotations

import operator
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from tvm import relax

from ..errors import QCompileError
from . import float_ops, ops
from .fx_import import Importer
from .values import QValue

# TorchScript's ScalarType codes
_SCALAR_TYPES = {13: torch.quint8, 12: torch.qint8, 6: torch.float32, 4: torch.int64,
                 3: torch.int32, 11: torch.bool}
_FLOAT32 = 6
_CONV_OPS = {"quantized::conv2d": False, "quantized::conv2d_relu": True}
_LINEAR_OPS = {"quantized::linear": False, "quantized::linear_relu": True}
_DYNAMIC_LINEAR_OPS = {"quantized::linear_dynamic": False, "quantized::linear_relu_dynamic": True}
_BINARY = {"quantized::add": torch.ops.quantized.add,
           "quantized::add_relu": torch.ops.quantized.add_relu,
           "quantized::mul": torch.ops.quantized.mul,
           "quantized::mul_relu": torch.ops.quantized.mul_relu}
# tensor ops: the fx converter of the same function (arguments in the schema's order)
_TENSOR_OPS = {
    "aten::quantize_per_tensor": ops.FUNCTIONS[torch.quantize_per_tensor],
    "aten::dequantize": ops.FUNCTIONS[torch.dequantize],
    "aten::max_pool2d": ops.FUNCTIONS[F.max_pool2d],
    "aten::avg_pool2d": ops.FUNCTIONS[F.avg_pool2d],
    "aten::adaptive_avg_pool2d": ops.FUNCTIONS[F.adaptive_avg_pool2d],
    "aten::flatten": ops.FUNCTIONS[torch.flatten],
    "aten::reshape": lambda imp, x, shape: ops.reshape(imp, x, *shape),
    "aten::view": lambda imp, x, shape: ops.reshape(imp, x, *shape),
    "aten::relu": ops.relu,
    "aten::relu_": ops.relu,
    "aten::relu6": ops.FUNCTIONS[F.relu6],
    "aten::hardtanh": ops.FUNCTIONS[F.hardtanh],
    "aten::hardtanh_": ops.FUNCTIONS[F.hardtanh],
    "aten::hardsigmoid": ops.FUNCTIONS[F.hardsigmoid],
    "aten::sigmoid": ops.FUNCTIONS[torch.sigmoid],
    "aten::contiguous": lambda imp, x, *a: x,
    "aten::dropout": lambda imp, x, *a: x,
    "quantized::cat": ops.FUNCTIONS[torch.ops.quantized.cat],
    "quantized::relu6": lambda imp, x, *a: ops.clamp_float(imp, x, 0.0, 6.0, "relu6"),
}
# Python-value ops (shape checks of scripted modules, scalar arithmetic)
_PY_OPS = {
    "aten::len": len, "aten::ne": operator.ne, "aten::eq": operator.eq, "aten::gt": operator.gt,
    "aten::lt": operator.lt, "aten::ge": operator.ge, "aten::le": operator.le,
    "aten::__not__": operator.not_, "aten::__is__": operator.is_,
    "aten::__isnot__": operator.is_not, "aten::Int": int, "aten::Float": float,
    "aten::Bool": bool, "aten::add": operator.add, "aten::sub": operator.sub,
    "aten::mul": operator.mul, "aten::floordiv": operator.floordiv,
    "aten::__getitem__": operator.getitem, "aten::format": lambda fmt, *a: fmt.format(*a),
    "prim::unchecked_cast": lambda x: x, "aten::warn": lambda *a: None,
}


def _to(imp, x, *args):
    """aten::to, any overload: the first argument that is a ScalarType code is the dtype."""
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and a in _SCALAR_TYPES:
            return float_ops.to_dtype(imp, x, _SCALAR_TYPES[a])
    raise imp.error("aten::to without a dtype (a device move?) is not supported")


def _arith(op, name, reverse=False):
    """aten::add / sub (with alpha), mul, div on graph tensors and numbers."""
    convert = float_ops.FLOAT_FUNCTIONS[op]

    def fn(imp, a, b, alpha=1, *rest):
        if isinstance(alpha, str):  # aten::div's rounding_mode
            raise imp.error(f"aten::{name} with rounding_mode={alpha!r} is not supported")
        if alpha != 1:
            b = float_ops.FLOAT_FUNCTIONS[operator.mul](imp, b, alpha)
        return convert(imp, b, a) if reverse else convert(imp, a, b)

    return fn


def _slice(imp, x, dim=0, start=None, end=None, step=1):
    shape = ops.size(imp, x)
    start, end = start or 0, shape[dim] if end is None else min(end, shape[dim])
    return imp.emit(relax.op.strided_slice(x, [dim], [start], [end], [step]))


# float islands (frontend/float_ops.py): the same converters as the fx path, in schema order
_FLOAT_OPS = {
    "aten::layer_norm": lambda imp, x, shape, w, b, eps, *_: float_ops.layer_norm(
        imp, x, shape, w, b, eps),
    "aten::gelu": float_ops.gelu,
    "aten::softmax": float_ops.softmax,
    "aten::matmul": float_ops.matmul,
    "aten::add": _arith(operator.add, "add"),
    "aten::sub": _arith(operator.sub, "sub"),
    "aten::rsub": _arith(operator.sub, "rsub", reverse=True),
    "aten::mul": _arith(operator.mul, "mul"),
    "aten::div": _arith(operator.truediv, "div"),
    "aten::embedding": lambda imp, weight, ids, *_: float_ops.FLOAT_FUNCTIONS[F.embedding](
        imp, ids, weight),
    "aten::transpose": float_ops.transpose,
    "aten::permute": float_ops.permute,
    "aten::unsqueeze": float_ops.unsqueeze,
    "aten::masked_fill": float_ops.masked_fill,
    "aten::scaled_dot_product_attention": float_ops.scaled_dot_product_attention,
    "aten::to": _to,
    "aten::slice": _slice,
    "aten::tanh": lambda imp, x: float_ops.FLOAT_FUNCTIONS[torch.tanh](imp, x),
    "aten::ones_like": lambda imp, x, *_: imp.emit(relax.op.ones_like(x)),
    "aten::zeros_like": lambda imp, x, *_: imp.emit(relax.op.zeros_like(x)),
}
# the same ops on parameters (e.g. a slice of a position table): evaluated by PyTorch here
_CONSTANT_OPS = {
    "aten::slice": lambda x, dim=0, start=None, end=None, step=1: torch.ops.aten.slice(
        x, dim, start, end, step),
    "prim::NumToTensor": lambda x: x,
    "aten::ScalarImplicit": lambda x: x,
}


def _all_nodes(nodes):
    """Every node, including those inside prim::If / prim::Loop blocks."""
    for n in nodes:
        yield n
        for block in n.blocks():
            yield from _all_nodes(block.nodes())


def is_quantized_script(module) -> bool:
    """True if the TorchScript graph quantizes (holds quantize_per_tensor or quantized:: ops,
    also inside branches: a scripted dynamic Linear checks its weights' dtype first)."""
    return any(n.kind().startswith("quantized::") or n.kind() == "aten::quantize_per_tensor"
               for n in _all_nodes(module.inlined_graph.nodes()))


class ScriptImporter(Importer):
    """Interprets a TorchScript module's inlined graph into Relax (see the module docstring)."""

    def __init__(self, module: torch.jit.ScriptModule):
        super().__init__(None)
        self.module = module
        self.graph = module.inlined_graph
        self.values: dict = {}
        self.ts_node = None

    def error(self, message: str, hint: str = "") -> QCompileError:
        """An error naming the TorchScript node being imported (and its source line)."""
        node = self.ts_node
        if node is None:
            return QCompileError(message + hint)
        where = node.sourceRange().split("\n")[0].strip() if node.sourceRange() else ""
        outs = ", ".join(f"%{o.debugName()}" for o in node.outputs())
        return QCompileError(f"{message} at node {outs} = {node.kind()}"
                             + (f" ({where})" if where else "") + hint)

    def run(self, input_shapes, input_dtypes=None):
        inputs = list(self.graph.inputs())[1:]  # inputs()[0] is the module itself
        if len(inputs) != len(input_shapes):
            raise QCompileError(f"the model takes {len(inputs)} inputs but {len(input_shapes)} "
                                "example inputs were given")
        dtypes = input_dtypes or ["float32"] * len(input_shapes)
        params = [relax.Var(v.debugName().split(".")[0] or f"x{i}",
                            relax.TensorType(list(s), d))
                  for i, (v, s, d) in enumerate(zip(inputs, input_shapes, dtypes))]
        self.values[next(self.graph.inputs())] = self.module
        self.values.update(zip(inputs, params))
        with self.bb.function("main", params):
            with self.bb.dataflow():
                self._block(self.graph.nodes())
                self.ts_node = None
                result = self.values[next(self.graph.outputs())]
                out = self.bb.emit_output(self._output(result))
            self.bb.emit_func_output(out)
        return self.bb.get()

    def _block(self, nodes):
        for node in nodes:
            self.ts_node = node
            outputs = list(node.outputs())
            result = self._node(node, [self.values[v] for v in node.inputs()])
            if len(outputs) == 1:
                self.values[outputs[0]] = result
            elif outputs:
                self.values.update(zip(outputs, result))

    def _node(self, node, args):
        kind = node.kind()
        if kind == "prim::Constant":
            return node.output().toIValue()
        if kind == "prim::GetAttr":
            return getattr(args[0], node.s("name"))
        if kind in ("prim::ListConstruct", "prim::TupleConstruct"):
            return list(args) if kind == "prim::ListConstruct" else tuple(args)
        if kind in ("prim::ListUnpack", "prim::TupleUnpack"):
            return list(args[0])
        if kind == "prim::TupleIndex":
            return args[0][args[1]]
        if kind == "prim::If":
            return self._if(node, args[0])
        if kind == "prim::RaiseException":
            raise self.error(f"the model raises here for these input shapes: {args[0]}")
        if kind == "prim::Uninitialized":
            return None
        if kind in ("aten::size", "aten::dim"):
            return self._shape_op(kind, args)
        if kind in _CONV_OPS:
            return ops.conv2d(self, self._conv_module(*args[1:]), args[0], relu=_CONV_OPS[kind])
        if kind in _LINEAR_OPS:
            return ops.linear(self, self._linear_module(*args[1:]), args[0],
                              relu=_LINEAR_OPS[kind])
        if kind in _DYNAMIC_LINEAR_OPS:
            return self._dynamic_linear(kind, *args)
        if kind == "prim::dtype" and isinstance(args[0], relax.Expr):
            return _FLOAT32 if args[0].ty.dtype == "float32" else args[0].ty.dtype
        if kind in _BINARY:
            return ops.FUNCTIONS[_BINARY[kind]](self, *args)
        if kind == "quantized::hardswish":
            module = SimpleNamespace(scale=args[1], zero_point=args[2])
            return ops.MODULES[torch.ao.nn.quantized.Hardswish](self, module, args[0])
        if kind in _TENSOR_OPS:
            if kind == "aten::quantize_per_tensor":
                args = [*args[:3], _SCALAR_TYPES.get(args[3], args[3])]
            return _TENSOR_OPS[kind](self, *args)
        on_graph = any(isinstance(a, (QValue, relax.Expr)) for a in args)
        if kind in _PY_OPS and not on_graph:
            return _PY_OPS[kind](*args)
        if kind in _FLOAT_OPS and on_graph:
            return _FLOAT_OPS[kind](self, *args)
        if kind in _CONSTANT_OPS and not on_graph:  # on parameters: computed here, once
            return _CONSTANT_OPS[kind](*args)
        raise self.error(f"unsupported TorchScript op {kind}", ". Supported: " + ", ".join(
            sorted({*_CONV_OPS, *_LINEAR_OPS, *_DYNAMIC_LINEAR_OPS, *_BINARY, *_TENSOR_OPS,
                    *_FLOAT_OPS, "quantized::hardswish"})))

    def _if(self, node, cond):
        if not isinstance(cond, bool):
            raise self.error("a branch on a value computed from the input data cannot be "
                             "compiled (only shape checks are); trace the model instead")
        block = list(node.blocks())[0 if cond else 1]
        node_here = self.ts_node
        self._block(block.nodes())
        self.ts_node = node_here
        results = [self.values[v] for v in block.outputs()]
        return results[0] if len(results) == 1 else results

    def _shape_op(self, kind, args):
        shape = ops.size(self, args[0])
        if kind == "aten::dim":
            return len(shape)
        return list(shape) if len(args) == 1 else shape[args[1]]

    def _conv_module(self, packed, scale, zero_point):
        """What ops.conv2d reads from an nnq.Conv2d, from the packed parameters."""
        q = torch.ops.quantized
        if bool(q.conv2d_transpose(packed)):
            raise self.error("quantized transposed convolutions are not supported")
        weight, bias = q.conv2d_unpack(packed)
        return SimpleNamespace(
            padding_mode="zeros", weight=lambda: weight, bias=lambda: bias,
            stride=tuple(q.conv2d_stride(packed)), padding=tuple(q.conv2d_padding(packed)),
            dilation=tuple(q.conv2d_dilation(packed)), groups=int(q.conv2d_groups(packed)),
            scale=scale, zero_point=zero_point)

    def _dynamic_linear(self, kind, x, packed, reduce_range=False):
        """quantized::linear_dynamic / linear_relu_dynamic (quantize_dynamic's int8 Linear)."""
        weight, bias = torch.ops.quantized.linear_unpack(packed)
        module = SimpleNamespace(weight=lambda: weight, bias=lambda: bias, dtype=torch.qint8)
        label = f"{kind} %{self.ts_node.output().debugName()}"
        return ops.dynamic_linear(self, module, x, relu=_DYNAMIC_LINEAR_OPS[kind],
                                  reduce_range=bool(reduce_range), label=label)

    def _linear_module(self, packed, scale, zero_point):
        weight, bias = torch.ops.quantized.linear_unpack(packed)
        return SimpleNamespace(weight=lambda: weight, bias=lambda: bias, scale=scale,
                               zero_point=zero_point)
