"""256-entry tables for unary ops on 8-bit activations (hardswish, hardsigmoid, sigmoid).

An op of one 8-bit input has only 256 possible inputs, so a table is exact by construction.
Under the fbgemm and qnnpack contracts the table is filled by the engine's own kernel, run once
at compile time: it reproduces even the parts no formula pins (SLEEF's expf in sigmoid).  fbgemm's
vectorized kernels round differently in their scalar tails, so that contract has a second table
for tail positions (kernels.body_mask_fn says which elements those are).  The integer contract
fills its table from the exact real function, rounded half to even: no float at run time.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

UNARY_OPS = ("hardswish", "hardsigmoid", "sigmoid")


def _real(op: str, x: np.ndarray) -> np.ndarray:
    if op == "hardswish":
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
    if op == "hardsigmoid":
        return np.clip(x + 3.0, 0.0, 6.0) / 6.0
    if op == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    raise ValueError(op)


def _torch_op(op: str, qx, out_scale: float, out_zp: int):
    import torch

    if op == "hardswish":
        return torch.ops.quantized.hardswish(qx, out_scale, out_zp)
    if op == "hardsigmoid":
        return torch.nn.functional.hardsigmoid(qx)
    return torch.sigmoid(qx)


def _run_engine(engine: str, op: str, values: np.ndarray, qin, qout) -> np.ndarray:
    import torch

    from ..engines import quantized_engine

    with quantized_engine(engine):
        qx = torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(values.astype(np.uint8)), float(qin[0]), int(qin[1]))
        out = _torch_op(op, qx, float(qout[0]), int(qout[1]))
        return out.int_repr().numpy().astype(np.uint8)


@lru_cache(maxsize=None)
def unary_tables(op: str, contract: str, qin: tuple, qout: tuple):
    """(body_table, tail_table or None) mapping each input step to its output step."""
    steps = np.arange(256, dtype=np.uint8)
    if contract == "integer":
        x = (steps.astype(np.float64) - qin[1]) * qin[0]
        q = np.rint(_real(op, x) / qout[0]) + qout[1]
        return np.clip(q, 0, 255).astype(np.uint8), None
    engine = "fbgemm" if contract == "fbgemm" else "qnnpack"
    body = _run_engine(engine, op, steps, qin, qout)  # 256 = four whole 64-element blocks
    if contract != "fbgemm":
        return body, None
    # Runs of 32 elements have no whole block: every element goes through the scalar tail.
    tail = np.concatenate([_run_engine(engine, op, steps[i:i + 32], qin, qout)
                           for i in range(0, 256, 32)])
    return body, (None if np.array_equal(body, tail) else tail)
