"""The numerics contracts: what each promises, against which reference, and the arithmetic every
quantized op gets under it.

A contract is one `Contract` entry in this registry.  The passes, verify, explain, fuzz, the
board bundles and the CLI ask the entry (its reference engine, its bias rule, the kernel of an
op) and never compare a contract's name; a choice an entry does not make is an error, never a
fallback to another contract's arithmetic.  Adding a contract: its entry (`register`), any
kernels it needs in the op-family modules (requantize, quantize, elementwise, pooling, tables),
its tests; docs/architecture.md walks through one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Callable, Mapping

from ..errors import QCompileError
from . import constants, elementwise, float_islands, onednn, pooling, quantize, requantize, tables

EAGER = "eager"  # eager / FX / TorchScript models: PyTorch's quantized modules, static or dynamic
PT2E = "pt2e"    # torchao convert_pt2e graphs: quantized_decomposed Q/DQ ops around float ops
MODEL_KINDS = (EAGER, PT2E)


@dataclass(frozen=True)
class Reference:
    """What `qcompile verify` compares a contract's outputs with."""

    name: str           # as reports name it: "fbgemm", "qnnpack", "pt2e", "torch.compile"
    engine: str | None  # PyTorch's quantized engine running the model; None: the model's own
    #                     program (a PT2E graph run as it is)
    description: str
    compiled: bool = False  # the program run through torch.compile (Inductor, freezing)


@dataclass(frozen=True)
class Tolerance:
    """How far a contract's outputs may be from its reference's."""

    description: str  # the promise in words (README, bundle READMEs)
    exact: bool       # every output element equal to the reference's
    # the bound of one rounding layer, in output steps, from r = s_in * s_w / s_out (a contract
    # that rounds differently from its reference); None: no per-layer bound is promised
    layer_steps: Callable[[float], int] | None = None


@dataclass(frozen=True)
class DynamicLinear:
    """How a dynamically quantized linear runs (numerics.dynamic)."""

    reduce_range: bool  # honours the module's reduce_range ([0, 127]); False: always [0, 255]
    fused_bias: bool    # the bias added inside the output FMA; False: after the rounded product

    def activation_range(self, reduce_range: bool) -> tuple[int, int]:
        """[qmin, qmax] a dynamic linear's input is quantized to."""
        return (0, 127) if self.reduce_range and reduce_range else (0, 255)


@dataclass(frozen=True)
class Kernels:
    """The TE kernel each quantized op gets (functions of numerics' op-family modules)."""

    quantize: Callable           # a float model input to 8 bits: (x, scale, zero_point, dtype)
    dequantize: Callable         # 8 bits to float: (q, scale, zero_point)
    requantize_tensor: Callable  # to other qparams, a float clip between: (q, qin, qout, clip)
    add: Callable                # (a, b, qa, qb, qo, relu, threads)
    mul: Callable                # (a, b, qa, qb, qo, relu, threads)
    # (op, qin, qout, bounds) -> (body table, tail table or None): hardswish, hardsigmoid,
    # sigmoid (and relu, clip where integer_clamp is False)
    unary_table: Callable
    adaptive_avg_pool: Callable  # to 1x1: (x, qin, qout)
    mean: Callable               # over H and W, to (N, C, 1, 1): (x, qin, qout, dims as spelled)
    avg_pool: Callable           # (x, qin, qout, kernel, stride, padding, ceil_mode,
    #                              count_include_pad)
    # relu / hardtanh that keep the input's qparams: True, an integer clamp of the steps (the
    # engines' kernels); False, the unary table of the float op (a PT2E program)
    integer_clamp: bool
    # qnnpack's clamp of a channels-last tensor hands its memory on permuted (docs/numerics.md)
    clamp_permutes_channels_last: bool = False
    # float islands computed with a formula of their own, by Relax op (numerics.float_islands)
    float_islands: Mapping = field(default_factory=lambda: float_islands.PYTORCH)


@dataclass(frozen=True)
class FloatEpilogue:
    """A PT2E contract's conv/linear epilogue, one float kernel (passes.fuse_epilogue_pt2e)."""

    # (sx, sw, accumulator kind, amx) -> requantize.Scales: the constants the kernel multiplies by
    scales: Callable
    # (acc, channel scales, first scale, bias, axis, act, residual, act_after, out) -> TE tensor
    kernel: Callable
    # the float activations the kernel computes itself ("relu", "clip", "hardswish", "silu")
    acts: frozenset = frozenset({"relu", "clip", "hardswish"})


@dataclass(frozen=True)
class Contract:
    """One numerics contract (see the module docstring)."""

    name: str
    summary: str       # one line, for --help and the docs
    models: str        # the models it applies to: EAGER or PT2E
    default: bool      # the contract compile() picks for such models when none is asked for
    reference: Reference
    tolerance: Tolerance
    explain: str       # how it treats a conv/linear bias and requantizes, for `qcompile explain`
    # the bias as int32 at scale s_in * s_w: (bias, in_scale, weight_scales) -> int32 array,
    # added to the accumulator (passes.canonicalize_bias); None: the bias stays float
    int32_bias: Callable | None
    # the conv/linear epilogue's constants (numerics.requantize): (in_scale, weight_scales,
    # out_scale, out_zero_point, bias) -> Requantize; None: the PT2E program's float epilogue
    # (`epilogue`)
    requantize: Callable | None
    # depthwise convs on the engine's fast path sum raw products in pairs saturated to int16
    saturating_depthwise: bool
    kernels: Kernels
    dynamic: DynamicLinear | None  # None: dynamic quantization is refused ...
    no_dynamic: str = ""           # ... for this reason
    epilogue: FloatEpilogue | None = None  # the float epilogue where `requantize` is None
    # the activation dtype ("uint8") of the models of its kind it is the default for, ahead of
    # the kind's `default` contract
    default_for_activations: str | None = None


_REGISTRY: dict[str, Contract] = {}
# every registered contract by name (read-only; `register` adds to it)
CONTRACTS = MappingProxyType(_REGISTRY)


def register(contract: Contract) -> Contract:
    """Add a contract to the registry (its name must be new); returns it."""
    if contract.name in _REGISTRY:
        raise ValueError(f"a contract named {contract.name!r} is registered already")
    if contract.models not in MODEL_KINDS:
        raise ValueError(f"contract {contract.name!r}: models must be one of {MODEL_KINDS}")
    if (contract.requantize is None) == (contract.epilogue is None):
        raise ValueError(f"contract {contract.name!r}: give a requantize rule or a float epilogue")
    if contract.default and any(c.default for c in contracts_for(contract.models)):
        raise ValueError(f"contract {contract.name!r}: {contract.models} models have a default "
                         "contract already")
    _REGISTRY[contract.name] = contract
    return contract


def unregister(name: str) -> None:
    """Remove a contract from the registry (tests that register one of their own)."""
    del _REGISTRY[name]


def get_contract(name: str) -> Contract:
    """The registered contract `name`, else a QCompileError listing the known ones."""
    if name not in _REGISTRY:
        raise QCompileError(f"unknown numerics {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def contracts_for(models: str | None = None) -> list[Contract]:
    """The registered contracts (those for `models` only, when given), in registration order."""
    return [c for c in _REGISTRY.values() if models in (None, c.models)]


def default_contract(models: str, activations: str | None = None) -> Contract:
    """The contract compile() picks for a model of that kind (whose activations are quantized
    to `activations`, when known) when none is asked for."""
    preferred = [c for c in contracts_for(models)
                 if activations is not None and c.default_for_activations == activations]
    return preferred[0] if preferred else next(c for c in contracts_for(models) if c.default)


def _within_bias_rounding(ratio: float) -> int:
    """floor(1 + r/2) steps: the int32 bias is off by up to half an accumulator step, r/2
    output steps, plus the output's own rounding (1 while r < 2, as in calibrated models)."""
    return max(1, math.floor(1 + ratio / 2))


FBGEMM = Reference("fbgemm", "fbgemm", "PyTorch's fbgemm engine")
QNNPACK = Reference("qnnpack", "qnnpack", "PyTorch's qnnpack engine")
EXACT = Tolerance("equal to the reference's, element for element", exact=True)

register(Contract(
    name="fbgemm",
    summary="bit-exact with PyTorch's fbgemm engine (and its x86 engine's linears)",
    models=EAGER, default=True, reference=FBGEMM, tolerance=EXACT,
    explain="float bias added after scaling (never rounded)",
    int32_bias=None, requantize=requantize.fbgemm_rule, saturating_depthwise=True,
    kernels=Kernels(
        quantize=quantize.quantize, dequantize=quantize.dequantize,
        requantize_tensor=quantize.requantize_tensor,
        add=elementwise.add_fbgemm, mul=elementwise.mul_fbgemm,
        unary_table=partial(tables.engine_tables, "fbgemm", True),
        adaptive_avg_pool=pooling.adaptive_avg_pool_engine, mean=pooling.mean_engine,
        avg_pool=pooling.avg_pool_engine, integer_clamp=True),
    dynamic=DynamicLinear(reduce_range=True, fused_bias=True)))

register(Contract(
    name="qnnpack",
    summary="bit-exact with PyTorch's qnnpack engine (int32 bias, fp32 requantize)",
    models=EAGER, default=False, reference=QNNPACK, tolerance=EXACT,
    explain="int32 bias rint(b*f(1/f(sx*sw)))",
    int32_bias=constants.int32_bias_qnnpack, requantize=requantize.qnnpack_rule,
    saturating_depthwise=False,
    kernels=Kernels(
        quantize=quantize.quantize, dequantize=quantize.dequantize,
        requantize_tensor=quantize.requantize_tensor,
        add=elementwise.add_qnnpack, mul=elementwise.mul_fbgemm,
        unary_table=partial(tables.engine_tables, "qnnpack", False),
        adaptive_avg_pool=pooling.adaptive_avg_pool_qnnpack,
        mean=pooling.mean_qnnpack, avg_pool=pooling.avg_pool_qnnpack,
        integer_clamp=True, clamp_permutes_channels_last=True),
    dynamic=DynamicLinear(reduce_range=False, fused_bias=False)))

register(Contract(
    name="integer",
    summary="no float in conv/linear kernels: int32 bias, fixed-point (Q31) requantize",
    models=EAGER, default=False, reference=FBGEMM,
    tolerance=Tolerance("each layer within floor(1 + r/2) LSB of fbgemm's, r = sx*sw/so "
                        "(1 LSB while r < 2, as in calibrated models)", exact=False,
                        layer_steps=_within_bias_rounding),
    explain="int32 bias round(b/(sx*sw)), Q31 requantize",
    int32_bias=constants.int32_bias_nearest, requantize=requantize.fixed_point_rule,
    saturating_depthwise=False,
    kernels=Kernels(
        quantize=quantize.quantize, dequantize=quantize.dequantize,
        requantize_tensor=quantize.requantize_tensor_integer,
        add=elementwise.add_integer, mul=elementwise.mul_integer,
        unary_table=tables.exact_tables,
        adaptive_avg_pool=pooling.adaptive_avg_pool_integer, mean=pooling.mean_integer,
        avg_pool=pooling.avg_pool_integer,
        integer_clamp=True),
    dynamic=None,
    no_dynamic="its input's scale is chosen at run time from the data, which takes float "
               "arithmetic, and the 'integer' numerics contract has no float in its kernels"))

# the kernels of PT2E's quantized_decomposed ops, as the eager PT2E program computes them
_DECOMPOSED = Kernels(
    quantize=quantize.quantize_decomposed, dequantize=quantize.dequantize,
    requantize_tensor=quantize.requantize_tensor_decomposed,
    add=elementwise.add_decomposed, mul=elementwise.mul_decomposed,
    unary_table=tables.decomposed_tables,
    adaptive_avg_pool=pooling.adaptive_avg_pool_decomposed,
    mean=pooling.mean_decomposed, avg_pool=pooling.avg_pool_decomposed,
    integer_clamp=False)

register(Contract(
    name="pt2e",
    summary="PT2E models: their Q/DQ program's float arithmetic (the exact conv/linear value)",
    models=PT2E, default=True,
    reference=Reference("pt2e", None, "the PT2E program run by PyTorch (quantized_decomposed "
                                      "ops between float ops)"),
    tolerance=Tolerance("every op bit for bit except conv/linear sums, which take the exact "
                        "int32 accumulator instead of oneDNN's float sum: top-1 agreement, the "
                        "LSB distribution and the first divergent layer are reported",
                        exact=False),
    explain="float bias added to the exact conv value; quantize rne(f(x*f32(1/s))) + zp",
    int32_bias=None, requantize=None, saturating_depthwise=False,
    kernels=_DECOMPOSED,
    dynamic=None, no_dynamic="dynamic PT2E graphs (choose_qparams) are not supported yet",
    epilogue=FloatEpilogue(requantize.decomposed_scales, requantize.conv_epilogue_decomposed)))

register(Contract(
    name="inductor",
    summary="X86InductorQuantizer models: bit-exact with torch.compile (Inductor, freezing) on "
            "the target's CPU family",
    models=PT2E, default=False,
    reference=Reference("torch.compile", None, "the PT2E program compiled by torch.compile "
                                               "(Inductor with freezing: oneDNN int8 kernels)",
                        compiled=True),
    tolerance=Tolerance("equal to torch.compile's outputs on a CPU of the target's family "
                        "(oneDNN's AMX kernels scale accumulators differently); float islands "
                        "(SiLU, GELU, LayerNorm, softmax) and avg_pool2d follow the eager "
                        "program, not yet Inductor's code", exact=False),
    explain="oneDNN's epilogue: f(f(acc*sx)*sw) + b, or f(acc*f(sx*sw)) + b on AMX; quantize "
            "rne(f(f(v*f(1/s)) + zp))",
    int32_bias=None, requantize=None, saturating_depthwise=False,
    # the PT2E program's Q/DQ arithmetic, but Inductor's pools and float islands
    kernels=dataclasses.replace(
        _DECOMPOSED, adaptive_avg_pool=pooling.adaptive_avg_pool_inductor,
        mean=pooling.mean_inductor, float_islands=float_islands.INDUCTOR),
    dynamic=None, no_dynamic="dynamic PT2E graphs (choose_qparams) are not supported yet",
    epilogue=FloatEpilogue(onednn.scales, onednn.conv_epilogue,
                           acts=frozenset({"relu", "clip", "hardswish", "silu"})),
    default_for_activations="uint8"))
