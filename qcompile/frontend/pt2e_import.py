"""Import a PT2E-quantized model (torchao `prepare_pt2e` / `convert_pt2e`, then optionally
`torch.export`) into the same Relax Q/DQ form as the eager and fx paths.

The graph's aten and `quantized_decomposed` ops go through the op table's converters
(frontend/pt2e_ops.py, whose docstring describes the values they pass around).  int8 activations
(XNNPACKQuantizer) become uint8 with the zero point shifted by 128: q + 128 with zp + 128
dequantizes and quantizes to the same values, bit for bit.
"""

from __future__ import annotations

import operator

import torch
import torch.fx
from tvm import relax

from . import float_ops, op_table, quantized_ops
from .fx_import import FxImporter
from .pt2e_ops import Dq, PendingMaxPool, Weight, scalar
from .values import QParams, QValue, dequantize

R = relax.op
_QD = "quantized_decomposed"
_Q = f"{_QD}.quantize_per_tensor"
_RANGES = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


def is_pt2e_graph(model) -> bool:
    """True for a GraphModule (or ExportedProgram) holding quantized_decomposed Q/DQ ops."""
    if isinstance(model, torch.export.ExportedProgram):
        model = model.graph_module
    if not isinstance(model, torch.fx.GraphModule):
        return False
    return any(n.op == "call_function" and getattr(n.target, "namespace", "") == _QD
               for n in model.graph.nodes)


def activation_dtype(model) -> str | None:
    """The dtype the first quantize_per_tensor of a PT2E graph quantizes to ("uint8" under
    X86InductorQuantizer, "int8" under XNNPACKQuantizer), or None."""
    if isinstance(model, torch.export.ExportedProgram):
        model = model.graph_module
    for n in model.graph.nodes:
        if n.op == "call_function" and getattr(n.target, "namespace", "") == _QD \
                and "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target):
            dtype = n.args[5] if len(n.args) > 5 else n.kwargs.get("dtype")
            return str(dtype).replace("torch.", "") if dtype is not None else None
    return None


class Pt2eImporter(FxImporter):
    """Walks a PT2E graph (see the module docstring) and emits Relax through one BlockBuilder."""

    # dequantized values, pending max pools and quantized weights are graph values too
    GRAPH_VALUES = (relax.Expr, QValue, Dq, PendingMaxPool, Weight)

    def __init__(self, model, probe: bool = False):
        if isinstance(model, torch.export.ExportedProgram):
            model = model.module()
        super().__init__(model, probe)

    def probe_name(self, node: torch.fx.Node) -> str | None:
        """Probes are the graph's quantize nodes, by node name (see reference_probes)."""
        is_quantize = node.op == "call_function" and _op_name(node.target).startswith(_Q)
        return node.name if is_quantize and isinstance(self.env[node], QValue) else None

    # -- values (what the converters read through) ----------------------------------------
    def as_float(self, value, what: str):
        """A float Relax expression for a value (a Dq inline, so patterns see the dequantize)."""
        if isinstance(value, Dq):
            return dequantize(value.q)
        if isinstance(value, PendingMaxPool):  # not quantized after all: a float island
            kernel, stride, padding, dilation, ceil_mode = value.args
            pair = torch.nn.modules.utils._pair
            return self.emit(R.nn.max_pool2d(value.value, pair(kernel), pair(stride),
                                             pair(padding), pair(dilation), ceil_mode=ceil_mode))
        if isinstance(value, Weight):  # a quantized constant used as data (a position table)
            return value.expr
        if isinstance(value, QValue):
            raise self.error(f"{what} got an 8-bit tensor without its dequantize")
        return float_ops.float_value(self, value, what)  # a Relax value, a constant, a number

    def qparams(self, scale, zero_point, qmin, qmax, dtype) -> QParams:
        """A quantize's qparams as the Q/DQ form holds them (int8 shifted to uint8)."""
        scale, zero_point = scalar(scale), int(scalar(zero_point))
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
        if name.startswith("aten.") and not self.on_graph([args, kwargs]):
            # on values known at import time (a buffer expanded and gathered, an arange):
            # computed once, by PyTorch's own op
            return node.target(*args, **kwargs)
        convert = op_table.ATEN.get(name)
        if convert is None:
            raise self.error(f"unsupported PT2E op {name}. Supported: "
                             + ", ".join(sorted(op_table.ATEN)))
        return convert(self, *args, **kwargs)

    def _output(self, value):
        values = value if isinstance(value, (tuple, list)) else [value]
        values = [quantized_ops.dequantize_value(self, v.q) if isinstance(v, Dq) else v
                  for v in values]
        return super()._output(values if len(values) > 1 else values[0])


def _op_name(target) -> str:
    """'quantized_decomposed.quantize_per_tensor.default', 'aten.conv2d.default', ..."""
    return str(target)


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
