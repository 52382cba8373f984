"""The numerics contracts and the arithmetic their kernels do.

- contracts.py: the registry: each contract's reference, promise, bias and requantize rules and
  the kernel of every op (the one place a contract is described)
- constants.py: compile-time numpy constants (bias in int32, Q31 multipliers, QNNPACK's add)
- requantize.py: the conv/linear epilogue (requantize rules and kernel; PT2E's float epilogue)
- quantize.py, elementwise.py, pooling.py, depthwise.py: the kernels, by op family
- windows.py: padded planes the window kernels share; tables.py: 256-entry unary tables
- dynamic.py: dynamic quantization's run-time qparams; tir_ops.py: float/integer building blocks
Passes ask the contract and call these; nothing else spells a rounding mode.
"""

from .contracts import (CONTRACTS, EAGER, PT2E, Contract, contracts_for, default_contract,
                        get_contract, register)

__all__ = ["CONTRACTS", "EAGER", "PT2E", "Contract", "contracts_for", "default_contract",
           "get_contract", "register"]
