"""Relax passes from the Q/DQ form to integer kernels, one pass a file.

Order matters and is fixed by `lower`:
  lower_dynamic -> qdq_to_integer -> canonicalize_bias -> fuse_requantize (a contract without a
  requantize rule: fuse_epilogue_pt2e) -> lower_qdq_ops -> lower_boundaries -> lower_max_pool
  -> lower_float_islands -> check_lowered -> FoldConstant
then, with the target's weight tile, pack_layout (packed u8 x i8 kernels for tensorization);
and on the fused module (qcompile.compiler), block_activations (conv-to-conv tensors
channel-blocked).  Every pass takes the numerics contract (numerics.contracts) and asks it.
machinery.py (the rewriter every pass uses) and patterns.py (shared patterns) are not passes.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..numerics.contracts import Contract
from .canonicalize_bias import canonicalize_bias
from .check_lowered import check_lowered
from .fuse_epilogue_pt2e import fuse_epilogue_pt2e
from .fuse_requantize import fuse_requantize
from .lower_dynamic import lower_dynamic
from .lower_float_islands import lower_float_islands
from .lower_max_pool import lower_max_pool
from .lower_qdq_ops import lower_boundaries, lower_qdq_ops
from .pack_layout import pack_layout
from .qdq_to_integer import qdq_to_integer


def lower(mod: tvm.IRModule, contract: Contract, threads: int, amx: bool = False) -> tvm.IRModule:
    """Apply the numerics contract: Q/DQ module in, integer module (no Q/DQ ops left) out.
    `amx`: the target CPU has AMX (a reference's oneDNN kernels may depend on it)."""
    mod = lower_dynamic(mod, contract)
    mod = qdq_to_integer(mod, contract)
    mod = canonicalize_bias(mod, contract)
    if contract.requantize is not None:
        mod = fuse_requantize(mod, contract)
    else:
        mod = fuse_epilogue_pt2e(mod, contract, amx)
    mod = lower_qdq_ops(mod, contract, threads)
    mod = lower_boundaries(mod, contract)
    mod = lower_max_pool(mod)
    mod = lower_float_islands(mod, contract)
    check_lowered(mod)
    return relax.transform.FoldConstant()(mod)


__all__ = ["lower", "lower_dynamic", "qdq_to_integer", "canonicalize_bias", "fuse_requantize",
           "lower_qdq_ops", "lower_boundaries", "lower_max_pool", "lower_float_islands",
           "check_lowered", "pack_layout"]
