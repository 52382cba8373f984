"""Capture a quantized torch model with torch.fx and write it as a Relax module in Q/DQ form."""

from __future__ import annotations

import operator

import torch
import torch.fx
import tvm
from tvm import relax

from ..errors import QCompileError
from .ops import FUNCTIONS, METHODS, describe_supported, lookup_module_handler
from .values import QValue


def is_quantized_model(model: torch.nn.Module) -> bool:
    """True if the model holds quantized modules (the output of convert / convert_fx)."""
    for m in model.modules():
        name = type(m).__module__
        if name.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")):
            return True
    return False


_QUANTIZE_FIRST = ("Quantize it first, e.g. torch.ao.quantization.prepare -> calibrate -> "
                   "convert (eager) or prepare_fx -> calibrate -> convert_fx, with the 'fbgemm' "
                   "or 'qnnpack' qconfig.")


class FxTraceError(QCompileError):
    """torch.fx could not trace a quantized model (import_model then tries torch.jit.trace)."""


def capture(model: torch.nn.Module) -> torch.fx.GraphModule:
    """Symbolically trace the model (fx GraphModules from convert_fx are taken as they are)."""
    if not is_quantized_model(model):
        raise QCompileError(
            f"{type(model).__name__} is a float model: qcompile compiles quantized models. "
            + _QUANTIZE_FIRST)
    if isinstance(model, torch.fx.GraphModule):
        return model
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - any trace failure is reported the same way
        raise FxTraceError(
            f"torch.fx could not trace {type(model).__name__}: {err}. Models with data-dependent "
            "Python control flow cannot be captured by fx yet.") from err


class Importer:
    """Walks an fx graph node by node and emits Relax through one BlockBuilder."""

    def __init__(self, gm: torch.fx.GraphModule, probe: bool = False):
        self.gm = gm
        self.probe = probe
        self.probes: list[tuple[str, QValue]] = []  # (module name, value) when probing
        self.dequantized_from: dict[relax.Var, object] = {}  # float var -> its QParams
        self.output_qparams = None  # QParams of the first output, when it is a dequantize
        self.modules = dict(gm.named_modules()) if gm is not None else {}
        self.bb = relax.BlockBuilder()
        self.env: dict[torch.fx.Node, object] = {}
        self.node: torch.fx.Node | None = None

    def emit(self, expr: relax.Expr) -> relax.Var:
        """Bind an expression in the current dataflow block."""
        return self.bb.emit(expr)

    def error(self, message: str) -> QCompileError:
        """An error that names the graph node being imported."""
        node = self.node
        where = f" at node '{node.name}' ({node.format_node()})" if node is not None else ""
        return QCompileError(f"{message}{where}")

    def _resolve(self, arg):
        return torch.fx.node.map_arg(arg, lambda n: self.env[n])

    def _convert_node(self, node: torch.fx.Node):
        args, kwargs = self._resolve(node.args), self._resolve(node.kwargs)
        if node.op == "get_attr":
            value = self.gm
            for part in node.target.split("."):
                value = getattr(value, part)
            return value
        if node.op == "call_module":
            module = self.modules[node.target]
            handler = lookup_module_handler(module)
            if handler is None:
                raise self.error(self._unsupported(f"module {type(module).__module__}."
                                                   f"{type(module).__name__}"))
            return handler(self, module, *args, **kwargs)
        if node.op == "call_function":
            if node.target is operator.getitem and not isinstance(args[0], (QValue, relax.Expr)):
                return args[0][args[1]]
            handler = FUNCTIONS.get(node.target)
            if handler is None:
                raise self.error(self._unsupported(f"function {_name(node.target)}"))
            return handler(self, *args, **kwargs)
        if node.op == "call_method":
            handler = METHODS.get(node.target)
            if handler is None:
                raise self.error(self._unsupported(f"method Tensor.{node.target}"))
            return handler(self, *args, **kwargs)
        raise self.error(f"unexpected fx node kind {node.op}")

    def probe_name(self, node: torch.fx.Node) -> str | None:
        """The name a probe of this node's 8-bit output goes by (quantized modules), or None."""
        if node.op == "call_module" and isinstance(self.env[node], QValue):
            return node.target
        return None

    @staticmethod
    def _unsupported(what: str) -> str:
        return f"unsupported op: {what}. Supported: {describe_supported()}"

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

    def _output(self, value):
        values = value if isinstance(value, (tuple, list)) else [value]
        self.output_qparams = self.dequantized_from.get(values[0])
        for v in values:
            if isinstance(v, QValue):
                raise QCompileError("the model returns a quantized tensor: end it with a "
                                    "DeQuantStub (eager) so that outputs are float")
        if len(values) == 1:
            return values[0]
        return relax.Tuple(list(values))



def _name(target) -> str:
    return getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)


def _importer(model, input_shapes, probe: bool, input_dtypes=None,
              example_inputs=None) -> Importer:
    """The importer for the model: fx for nn.Modules fx can trace, TorchScript for ScriptModules
    (torch.jit.load), PT2E graphs (convert_pt2e, torch.export) and, through torch.jit.trace on
    the example inputs (zeros of `input_shapes` without them), for quantized modules fx cannot
    trace."""
    from .pt2e_import import Pt2eImporter, is_pt2e_graph
    from .script_import import ScriptImporter, is_quantized_script

    if is_pt2e_graph(model):
        return Pt2eImporter(model, probe)
    if isinstance(model, torch.jit.ScriptModule):
        if not is_quantized_script(model):
            name = getattr(model, "original_name", "the TorchScript model")
            raise QCompileError(f"{name} is a float model: qcompile compiles quantized models. "
                                + _QUANTIZE_FIRST)
        return ScriptImporter(model)
    try:
        return Importer(capture(model), probe)
    except FxTraceError:
        pass
    try:
        with torch.no_grad():
            if example_inputs is None:
                dtypes = input_dtypes or ["float32"] * len(input_shapes)
                example_inputs = [torch.zeros(s, dtype=getattr(torch, d))
                                  for s, d in zip(input_shapes, dtypes)]
            # the trace follows the branches these inputs take: Python control flow on tensor
            # values is fixed to what the example inputs did
            traced = torch.jit.trace(model, tuple(torch.as_tensor(x) for x in example_inputs))
    except Exception as err:  # noqa: BLE001 - neither capture works: say both
        raise QCompileError(f"neither torch.fx nor torch.jit.trace could capture "
                            f"{type(model).__name__}: {err}") from err
    return ScriptImporter(traced)


def import_model(model: torch.nn.Module, input_shapes: list[tuple[int, ...]],
                 probe: bool = False, input_dtypes=None, example_inputs=None):
    """Quantized torch model -> Relax IRModule in Q/DQ form (float outputs; float32 inputs
    unless `input_dtypes` names others, e.g. int64 token ids).

    With `probe`, `main` also returns the 8-bit output of every quantized module, after the
    model's own outputs; returns (module, probe names) then (TorchScript models: no probes).
    """
    importer = _importer(model, input_shapes, probe, input_dtypes, example_inputs)
    mod = importer.run(input_shapes, input_dtypes)
    qp = importer.output_qparams
    if qp is not None:  # the output's quantized step, for reports in LSBs
        mod = mod.with_attr("qcompile.output_qparams", [qp.scale, qp.zero_point])
    if probe:
        return mod, [name for name, _ in importer.probes]
    return mod
