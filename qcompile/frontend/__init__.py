"""Capture quantized torch models and write them as Relax modules in Q/DQ form.

- capture.py: which importer takes a model; import_model
- importer.py: the importer base; fx_import.py, script_import.py, pt2e_import.py: the three
  capture paths (torch.fx, TorchScript, PT2E graphs)
- op_table.py: the op registry: every op's spellings in fx, TorchScript and aten, its
  converter on each path, what lowers it, whether the fuzzer draws it
- quantized_ops.py, float_ops.py, script_ops.py, pt2e_ops.py: the converters
- values.py: what the importers track per value, and the Q/DQ form's building blocks
"""

from .capture import import_model
from .fx_import import capture, is_quantized_model
from .pt2e_import import is_pt2e_graph
from .values import QParams, QValue

__all__ = ["capture", "import_model", "is_pt2e_graph", "is_quantized_model", "QParams", "QValue"]
