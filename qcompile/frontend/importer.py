"""What every importer shares: one BlockBuilder writing `main`, errors that name the node being
imported, and the model's outputs (which must be float: a DeQuantStub ends a quantized model).

The capture paths subclass it: fx_import.FxImporter (torch.fx graphs), pt2e_import (PT2E
graphs, also fx), script_import (TorchScript).  Their converters are frontend/op_table.py's.
"""

from __future__ import annotations

from tvm import relax

from ..errors import QCompileError
from .values import QValue


class Importer:
    """Emits Relax through one BlockBuilder; subclasses walk a graph and fill `main`."""

    # the kinds of values computed from the model's inputs (a subclass adds its own)
    GRAPH_VALUES: tuple = (relax.Expr, QValue)

    def on_graph(self, value) -> bool:
        """True if the value is (or a list, tuple or dict holds) one of GRAPH_VALUES: anything
        else is known at import time, and an op on it is computed once, by PyTorch."""
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, (list, tuple)):
            return any(self.on_graph(v) for v in value)
        return isinstance(value, self.GRAPH_VALUES)

    def __init__(self, probe: bool = False):
        self.probe = probe
        self.probes: list[tuple[str, QValue]] = []  # (name, value) when probing
        self.dequantized_from: dict[relax.Var, object] = {}  # float var -> its QParams
        self.output_qparams = None  # QParams of the first output, when it is a dequantize
        self.bb = relax.BlockBuilder()

    def emit(self, expr: relax.Expr) -> relax.Var:
        """Bind an expression in the current dataflow block."""
        return self.bb.emit(expr)

    def where(self) -> str:
        """Where in the model the importer is, for error messages ("" when nowhere)."""
        return ""

    def error(self, message: str, hint: str = "") -> QCompileError:
        """An error that names the graph node being imported."""
        where = self.where()
        return QCompileError(f"{message}{' at ' + where if where else ''}{hint}")

    def _output(self, value):
        if isinstance(value, dict):  # a traced ModelOutput: its tensors, in order
            value = list(value.values())
        values = value if isinstance(value, (tuple, list)) else [value]
        self.output_qparams = self.dequantized_from.get(values[0])
        for v in values:
            if isinstance(v, QValue):
                raise QCompileError("the model returns a quantized tensor: end it with a "
                                    "DeQuantStub (eager) so that outputs are float")
        if len(values) == 1:
            return values[0]
        return relax.Tuple(list(values))
