"""Import a TorchScript quantized model (traced or scripted, e.g. from `torch.jit.load`) into
the same Relax Q/DQ form as the fx path.

The inlined graph is interpreted node by node.  Tensors computed from the inputs become Relax
values, through the op table's TorchScript converters (frontend/op_table.py; the packed
weights of quantized convs and linears are unpacked by script_ops); everything else is
evaluated here as a Python value: constants, attributes (`prim::GetAttr`), lists, and the shape
checks a scripted module makes (`aten::size`, `len`, comparisons, `prim::If` on a known
condition).
"""

from __future__ import annotations

import operator

import torch
from tvm import relax

from ..errors import QCompileError
from . import op_table, quantized_ops
from .importer import Importer

_FLOAT32 = 6  # TorchScript's ScalarType code of float32


def _with_alpha(op, a, b, alpha):
    """aten::add / aten::sub of Python numbers or constant tensors: PyTorch's own op on tensors
    (its rounding of a + alpha * b), Python arithmetic on numbers."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return op(a, b, alpha=alpha)
    return a + alpha * b if op is torch.add else a - alpha * b
# Python-value ops (shape checks of scripted modules, scalar arithmetic)
_PY_OPS = {
    "aten::len": len, "aten::ne": operator.ne, "aten::eq": operator.eq, "aten::gt": operator.gt,
    "aten::lt": operator.lt, "aten::ge": operator.ge, "aten::le": operator.le,
    "aten::__not__": operator.not_, "aten::__is__": operator.is_,
    "aten::__isnot__": operator.is_not, "aten::Int": int, "aten::Float": float,
    "aten::Bool": bool, "aten::add": lambda a, b, alpha=1: _with_alpha(torch.add, a, b, alpha),
    "aten::sub": lambda a, b, alpha=1: _with_alpha(torch.sub, a, b, alpha),
    "aten::mul": operator.mul, "aten::floordiv": operator.floordiv,
    "aten::__getitem__": operator.getitem, "aten::format": lambda fmt, *a: fmt.format(*a),
    "prim::unchecked_cast": lambda x: x, "aten::warn": lambda *a: None,
}
# non-aten ops on values known at import time
_CONSTANT_OPS = {"prim::NumToTensor": lambda x: x, "aten::ScalarImplicit": lambda x: x}


def _fold(node, args):
    """An aten op on values known at import time (parameters, buffers, shapes: a slice of a
    position table, a buffer expanded and gathered), computed once by PyTorch's own op."""
    schema = torch._C.parse_schema(node.schema())
    positional = [a for a, s in zip(args, schema.arguments) if not s.kwarg_only]
    keywords = {s.name: a for a, s in zip(args, schema.arguments) if s.kwarg_only}
    return getattr(torch.ops.aten, node.kind()[len("aten::"):])(*positional, **keywords)


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
        super().__init__()
        self.module = module
        self.graph = module.inlined_graph
        self.values: dict = {}
        self.ts_node = None

    def where(self) -> str:
        """The TorchScript node being imported (and its source line)."""
        node = self.ts_node
        if node is None:
            return ""
        source = node.sourceRange().split("\n")[0].strip() if node.sourceRange() else ""
        outs = ", ".join(f"%{o.debugName()}" for o in node.outputs())
        return f"node {outs} = {node.kind()}" + (f" ({source})" if source else "")

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
        if kind == "prim::DictConstruct":  # (key, value, key, value, ...)
            return dict(zip(args[::2], args[1::2]))
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
        if kind == "prim::dtype" and isinstance(args[0], relax.Expr):
            return _FLOAT32 if args[0].ty.dtype == "float32" else args[0].ty.dtype
        on_graph = self.on_graph(args)
        if kind in _PY_OPS and not on_graph:
            try:
                return _PY_OPS[kind](*args)
            except (TypeError, ValueError, IndexError, ZeroDivisionError) as err:
                raise self.error(f"TorchScript op {kind} on Python values "
                                 f"{[type(a).__name__ for a in args]} failed: {err}") from None
        if kind in _CONSTANT_OPS and not on_graph:
            return _CONSTANT_OPS[kind](*args)
        if kind.startswith("aten::") and not on_graph:
            try:
                return _fold(node, args)
            except (RuntimeError, TypeError, AttributeError) as err:
                raise self.error(f"{kind} on values known at import time failed in PyTorch: "
                                 f"{err}") from None
        convert = op_table.TORCHSCRIPT.get(kind)
        if convert is not None:
            return convert(self, *args)
        raise self.error(f"unsupported TorchScript op {kind}",
                         ". Supported: " + ", ".join(sorted(op_table.TORCHSCRIPT)))

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
        shape = quantized_ops.size(self, args[0])
        if kind == "aten::dim":
            return len(shape)
        return list(shape) if len(args) == 1 else shape[args[1]]
