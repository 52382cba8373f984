"""256-entry tables for unary ops on 8-bit activations (hardswish, hardsigmoid, sigmoid; under
a PT2E program relu and hardtanh too).

An op of one 8-bit input has only 256 possible inputs, so a table is exact by construction.
Each function returns (body table, tail table or None) for (op, input qparams, output qparams,
clip bounds):
  engine_tables      filled by a PyTorch engine's own kernel, run once at compile time: it
                     reproduces even the parts no formula pins (SLEEF's expf in sigmoid).  With
                     `tails` (fbgemm's vectorized kernels, which round differently in their
                     scalar tails) a second table for tail positions (elementwise.body_mask_fn
                     says which elements those are)
  exact_tables       the exact real function, rounded half to even: no float at run time
  decomposed_tables  PyTorch's own float ops between quantized_decomposed dequantize/quantize
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


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
def engine_tables(engine: str, tails: bool, op: str, qin: tuple, qout: tuple, bounds=None):
    """(body, tail or None): the tables `engine`'s kernel computes (hardswish, hardsigmoid,
    sigmoid).  Use functools.partial(engine_tables, engine, tails) as a contract's table."""
    steps = np.arange(256, dtype=np.uint8)
    body = _run_engine(engine, op, steps, qin, qout)  # 256 = four whole 64-element blocks
    if not tails:
        return body, None
    # Runs of 32 elements have no whole block: every element goes through the scalar tail.
    tail = np.concatenate([_run_engine(engine, op, steps[i:i + 32], qin, qout)
                           for i in range(0, 256, 32)])
    return body, (None if np.array_equal(body, tail) else tail)


@lru_cache(maxsize=None)
def exact_tables(op: str, qin: tuple, qout: tuple, bounds=None):
    """(table, None): the exact real function of `op`, rounded half to even."""
    steps = np.arange(256, dtype=np.uint8)
    x = (steps.astype(np.float64) - qin[1]) * qin[0]
    q = np.rint(_real(op, x) / qout[0]) + qout[1]
    return np.clip(q, 0, 255).astype(np.uint8), None


@lru_cache(maxsize=None)
def decomposed_tables(op: str, qin: tuple, qout: tuple, bounds=None):
    """(table, None): quantize(op(dequantize(q))) with PyTorch's own float ops and
    quantized_decomposed's quantize/dequantize (op: relu, hardswish, hardsigmoid, sigmoid, or
    clip with `bounds`)."""
    return _decomposed_table(op, qin, qout, bounds), None


def _decomposed_table(fn_name: str, qin: tuple, qout: tuple, bounds=None) -> np.ndarray:
    """The 256-entry table of quantize(op(dequantize(q))), filled by PyTorch's own float ops."""
    import torch
    import torch.ao.quantization.fx._decomposed  # noqa: F401 - registers quantized_decomposed
    import torch.nn.functional as F

    qd = torch.ops.quantized_decomposed
    steps = torch.arange(256, dtype=torch.uint8)
    d = qd.dequantize_per_tensor(steps, float(qin[0]), int(qin[1]), 0, 255, torch.uint8)
    fns = {"relu": torch.relu, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
           "sigmoid": torch.sigmoid,
           "clip": lambda t: torch.clamp(t, float(bounds[0]), float(bounds[1]))}
    y = fns[fn_name](d)
    q = qd.quantize_per_tensor(y, float(qout[0]), int(qout[1]), 0, 255, torch.uint8)
    return q.numpy().astype(np.uint8)
