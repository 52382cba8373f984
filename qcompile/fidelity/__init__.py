"""Fidelity (qcompile.verify): run PyTorch's engine and the compiled module side by side; report in quantized steps."""

from .report import compare, verify

__all__ = ["compare", "verify"]
