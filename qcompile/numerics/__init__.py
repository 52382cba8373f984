"""The three numerics contracts -- fbgemm, qnnpack, integer -- each written once.

`constants` computes, at compile time, what a contract derives from scales and biases;
`kernels` holds the tensor expressions that do the run-time arithmetic; `tables` builds the
256-entry tables of unary ops.  Passes ask these modules; nothing else spells a rounding mode.
"""

from .constants import CONTRACTS, Requantize, check_contract, quantize_bound, requantize

__all__ = ["CONTRACTS", "Requantize", "check_contract", "quantize_bound", "requantize"]
