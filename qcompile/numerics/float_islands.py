"""Float formulas for float islands, as vectorizable TE kernels: PyTorch's (GELU, SiLU: the ones
that cost time) and Inductor's (SiLU, sigmoid with Sleef's exp, bit for bit) for the inductor
contract.

TVM lowers `exp` and `erf` to libm calls, one element at a time: ConvNeXt-T's first dense +
GELU kernel took 8.4 ms, the model 73 ms (14.5 ms with these formulas).  These are the formulas of PyTorch's vectorized CPU
kernels (ATen's Vectorized<float>), with exp_poly for Sleef's exp: not bit-exact with PyTorch
(exp_poly is within ~1.4 ulp of exp, equal to torch.exp for ~90% of inputs), which float islands
never promised.
"""

from __future__ import annotations

import math

from tvm import te, tirx

from types import MappingProxyType

from .tir_ops import exp_poly, exp_sleef, f32, fence, fma

# Vectorized<float>::erf: Abramowitz & Stegun 7.1.26, evaluated with FMAs
_ERF_P = 0.3275911
_ERF_COEFFS = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


def erf_value(z, e):
    """ATen's vectorized erf(z), given e = exp(-z*z): t = 1 / fma(p, |z|, 1), r = the
    polynomial in t by FMAs, erf = sign(z) * fma(-e * t, r, 1)."""
    t = f32(1.0) / fma(f32(_ERF_P), tirx.abs(z), f32(1.0))
    r = f32(_ERF_COEFFS[0])
    for c in _ERF_COEFFS[1:]:
        r = fma(r, t, f32(c))
    y = fma(-e * t, r, f32(1.0))
    return tirx.Select(z < f32(0.0), -y, y)


def gelu(x):
    """GELU (erf form) as ATen's vectorized kernel writes it: (x * 0.5) * (1 + erf(x / sqrt 2))."""
    alpha = f32(math.sqrt(0.5))

    def value(v):
        z = v * alpha
        return (v * f32(0.5)) * (f32(1.0) + erf_value(z, exp_poly(-(z * z))))

    return te.compute(x.shape, lambda *i: value(x(*i)), name="gelu")


def silu(x):
    """SiLU as ATen writes it: x / (1 + exp(-x)) (one division, not x * sigmoid(x))."""
    return te.compute(x.shape, lambda *i: x(*i) / (f32(1.0) + exp_poly(-x(*i))), name="silu")


def softmax(x, axis: int = -1):
    """softmax along `axis` as ATen's vectorized kernel orders it: the row's max, exp(x - max),
    their sum, then each times 1 / sum (exp_poly for ATen's exp).  Relax's legalization calls
    libm's exp per element: BERT-base's 12 x 128 x 128 attention softmax took 0.30 ms a layer."""
    rank = len(x.shape)
    axis = axis % rank
    k = te.reduce_axis((0, x.shape[axis]), name="k")

    def along(i, j):
        return (*i[:axis], j, *i[axis + 1:])

    row = [d for a, d in enumerate(x.shape) if a != axis]
    top = te.compute(row, lambda *i: te.max(x(*along(i, k)), axis=k), name="softmax_max")
    e = te.compute(x.shape, lambda *i: exp_poly(
        x(*i) - top(*(i[:axis] + i[axis + 1:]))), name="softmax_exp")
    k2 = te.reduce_axis((0, x.shape[axis]), name="k2")
    total = te.compute(row, lambda *i: te.sum(e(*along(i, k2)), axis=k2), name="softmax_sum")
    return te.compute(x.shape, lambda *i: e(*i) * (f32(1.0) / total(*(i[:axis] + i[axis + 1:]))),
                      name="softmax")


def sigmoid_inductor(x):
    """sigmoid as Inductor's generated code computes it: 1 / (1 + exp(-x)), Sleef's exp."""
    return te.compute(x.shape, lambda *i: f32(1.0) / (f32(1.0) + exp_sleef(-x(*i))),
                      name="sigmoid_inductor")


def silu_inductor(x):
    """SiLU in Inductor's generated code: its decomposition x * sigmoid(x) (sigmoid_inductor)."""
    return te.compute(x.shape, lambda *i: fence(
        x(*i) * (f32(1.0) / (f32(1.0) + exp_sleef(-x(*i))))), name="silu_inductor")


# the float islands each contract computes with its own formula, by Relax op
PYTORCH = MappingProxyType({"relax.nn.gelu": gelu, "relax.nn.silu": silu,
                            "relax.nn.softmax": softmax})
INDUCTOR = MappingProxyType({"relax.nn.gelu": gelu, "relax.nn.silu": silu_inductor,
                             "relax.sigmoid": sigmoid_inductor, "relax.nn.softmax": softmax})
