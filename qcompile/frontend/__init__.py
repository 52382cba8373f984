"""Capture quantized torch models and write them as Relax modules in Q/DQ form."""

from .fx_import import capture, import_model, is_quantized_model
from .values import QParams, QValue

__all__ = ["capture", "import_model", "is_quantized_model", "QParams", "QValue"]
