"""compile(), export and load: from a quantized torch model to a runnable TVM library."""

from .driver import CompiledModel, compile_model, load

__all__ = ["CompiledModel", "compile_model", "load"]
