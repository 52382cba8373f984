"""Capture a quantized torch model with torch.fx and write it as a Relax module in Q/DQ form."""

from __future__ import annotations

import operator

import torch
import torch.fx
import tvm
from tvm import relax

from ..errors import QCompileError
from . import op_table
from .importer import Importer
from .values import QValue


def is_quantized_model(model: torch.nn.Module) -> bool:
    """True if the model holds quantized modules (the output of convert / convert_fx)."""
    for m in model.modules():
        name = type(m).__module__
        if name.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")):
            return True
    return False


QUANTIZE_FIRST = ("Quantize it first, e.g. torch.ao.quantization.prepare -> calibrate -> "
                  "convert (eager) or prepare_fx -> calibrate -> convert_fx, with the 'fbgemm' "
                  "or 'qnnpack' qconfig.")


class FxTraceError(QCompileError):
    """torch.fx could not trace a quantized model (import_model then tries torch.jit.trace)."""


def capture(model: torch.nn.Module) -> torch.fx.GraphModule:
    """Symbolically trace the model (fx GraphModules from convert_fx are taken as they are)."""
    if not is_quantized_model(model):
        raise QCompileError(
            f"{type(model).__name__} is a float model: qcompile compiles quantized models. "
            + QUANTIZE_FIRST)
    if isinstance(model, torch.fx.GraphModule):
        return model
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - any trace failure is reported the same way
        raise FxTraceError(
            f"torch.fx could not trace {type(model).__name__}: {err}. Models with data-dependent "
            "Python control flow cannot be captured by fx yet.") from err


class FxImporter(Importer):
    """Walks an fx graph node by node; each node's converter comes from the op table."""

    def __init__(self, gm: torch.fx.GraphModule, probe: bool = False):
        super().__init__(probe)
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.env: dict[torch.fx.Node, object] = {}
        self.node: torch.fx.Node | None = None

    def where(self) -> str:
        node = self.node
        return f"node '{node.name}' ({node.format_node()})" if node is not None else ""

    def _resolve(self, arg):
        return torch.fx.node.map_arg(arg, lambda n: self.env[n])

    def _convert_node(self, node: torch.fx.Node):
        args, kwargs = self._resolve(node.args), self._resolve(node.kwargs)
        if node.op == "get_attr":
            return operator.attrgetter(node.target)(self.gm)
        if node.op == "call_module":
            module = self.modules[node.target]
            convert = op_table.fx_module_converter(module)
            if convert is None:
                raise self.error(self._unsupported(f"module {type(module).__module__}."
                                                   f"{type(module).__name__}"))
            return convert(self, module, *args, **kwargs)
        if node.op == "call_function":
            if node.target is operator.getitem and not isinstance(args[0], (QValue, relax.Expr)):
                return args[0][args[1]]
            convert = op_table.FX_FUNCTIONS.get(node.target)
            if convert is None:
                raise self.error(self._unsupported(f"function {_name(node.target)}"))
            return convert(self, *args, **kwargs)
        if node.op == "call_method":
            convert = op_table.FX_METHODS.get(node.target)
            if convert is None:
                raise self.error(self._unsupported(f"method Tensor.{node.target}"))
            return convert(self, *args, **kwargs)
        raise self.error(f"unexpected fx node kind {node.op}")

    def probe_name(self, node: torch.fx.Node) -> str | None:
        """The name a probe of this node's 8-bit output goes by (quantized modules), or None."""
        if node.op == "call_module" and isinstance(self.env[node], QValue):
            return node.target
        return None

    @staticmethod
    def _unsupported(what: str) -> str:
        return f"unsupported op: {what}. Supported: {op_table.describe_fx()}"

    def run(self, input_shapes: list[tuple[int, ...]], input_dtypes=None) -> tvm.IRModule:
        """Import the graph; every placeholder becomes a parameter of `main` (float32 unless
        `input_dtypes` says otherwise: token ids are int64)."""
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(input_shapes):
            raise QCompileError(f"the model takes {len(placeholders)} inputs "
                                f"({', '.join(n.name for n in placeholders)}) but "
                                f"{len(input_shapes)} example inputs were given")
        dtypes = input_dtypes or ["float32"] * len(input_shapes)
        params = [relax.Var(n.name, relax.TensorType(list(s), d))
                  for n, s, d in zip(placeholders, input_shapes, dtypes)]
        with self.bb.function("main", params):
            with self.bb.dataflow():
                for var, node in zip(params, placeholders):
                    self.env[node] = var
                output = None
                for node in self.gm.graph.nodes:
                    self.node = node
                    if node.op == "placeholder":
                        continue
                    if node.op == "output":
                        output = self._output(self._resolve(node.args[0]))
                        if self.probe:
                            outs = list(output.fields) if isinstance(output, relax.Tuple) else [
                                output]
                            output = relax.Tuple(outs + [v.expr for _, v in self.probes])
                        break
                    self.env[node] = self._convert_node(node)
                    name = self.probe_name(node) if self.probe else None
                    if name is not None:
                        self.probes.append((name, self.env[node]))
                self.node = None
                out = self.bb.emit_output(output)
            self.bb.emit_func_output(out)
        return self.bb.get()


def _name(target) -> str:
    return getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
