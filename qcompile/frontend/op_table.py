"""The op registry: one entry per op, with everything that names it.

An entry holds the op's spellings on each capture path and the converter each reaches
(torch.fx modules, functions and Tensor methods; TorchScript node kinds; the aten names of a
PT2E graph), what gives its arithmetic after import (`lowering`), and how often the
differential fuzzer draws it.  The importers look their converters up in the tables built here,
and their errors list what these tables hold.

`lowering` says which decision of the numerics contract (qcompile/numerics/contracts.py) the op
reaches, so the passes know nothing of torch and the frontends nothing of contracts:
  a `Kernels` field   the contract's kernel of that name (add, mul, unary_table, avg_pool, ...)
  "requantize"        the conv/linear epilogue (the contract's requantize rule)
  "dynamic"           the contract's DynamicLinear rule
  "clamp"             an integer clamp of the steps, or the float op's table (Kernels.integer_clamp)
  "exact"             data movement or max: no arithmetic, the same under every contract
  "float"             a float island, compiled by TVM's float kernels
Adding an op: its converters, its entry here, a test (docs/architecture.md).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn.functional as F

from . import float_ops as fl
from . import pt2e_ops as pt
from . import quantized_ops as q
from . import script_ops as ts

LOWERINGS = ("requantize", "dynamic", "clamp", "exact", "float")  # plus the Kernels fields

_QD = "quantized_decomposed"


@dataclass(frozen=True)
class Op:
    """One op: its spellings and converters per capture path, its lowering, its fuzz weight."""

    name: str
    lowering: str
    fx_modules: dict = field(default_factory=dict)    # module class -> convert(imp, module, *args)
    fx_functions: dict = field(default_factory=dict)  # callable -> convert(imp, *args, **kwargs)
    fx_methods: dict = field(default_factory=dict)    # Tensor method -> convert(imp, *args, ...)
    torchscript: dict = field(default_factory=dict)   # node kind -> convert(imp, *args)
    aten: dict = field(default_factory=dict)          # PT2E op name -> convert(imp, *args, ...)
    fuzz: dict = field(default_factory=dict)          # fuzz graph kind -> weight of its draws


OPS = (
    # ------------------------------------------------------------------ boundaries
    Op("quantize", "quantize",
       fx_modules={nnq.Quantize: q.quantize_stub},
       fx_functions={torch.quantize_per_tensor: q.quantize_per_tensor},
       torchscript={"aten::quantize_per_tensor": ts.quantize_per_tensor},
       aten={f"{_QD}.quantize_per_tensor.default": pt.quantize,
             f"{_QD}.quantize_per_tensor.tensor": pt.quantize}),
    Op("dequantize", "dequantize",
       fx_modules={nnq.DeQuantize: q.dequantize_module},
       fx_functions={torch.dequantize: q.dequantize_value},
       fx_methods={"dequantize": q.dequantize_value},
       torchscript={"aten::dequantize": q.dequantize_value},
       aten={f"{_QD}.dequantize_per_tensor.default": pt.dequantize,
             f"{_QD}.dequantize_per_tensor.tensor": pt.dequantize,
             f"{_QD}.dequantize_per_channel.default": pt.dequantize_channel}),
    # ------------------------------------------------------------------ conv / linear
    Op("conv2d", "requantize",
       fx_modules={nnq.Conv2d: q.conv2d, nniq.ConvReLU2d: q.conv2d_relu_module},
       torchscript={"quantized::conv2d": ts.conv2d(relu=False),
                    "quantized::conv2d_relu": ts.conv2d(relu=True)},
       aten={"aten.conv2d.default": pt.conv2d},
       fuzz={"image": 3}),
    Op("linear", "requantize",
       fx_modules={nnq.Linear: q.linear, nniq.LinearReLU: q.linear_relu_module},
       torchscript={"quantized::linear": ts.linear(relu=False),
                    "quantized::linear_relu": ts.linear(relu=True)},
       aten={"aten.linear.default": pt.linear},
       fuzz={"sequence": 3}),
    Op("dynamic_linear", "dynamic",
       fx_modules={nnqd.Linear: q.dynamic_linear, nniqd.LinearReLU: q.dynamic_linear_relu_module},
       torchscript={"quantized::linear_dynamic": ts.dynamic_linear(relu=False),
                    "quantized::linear_relu_dynamic": ts.dynamic_linear(relu=True)}),
    # ------------------------------------------------------------------ elementwise
    Op("add", "add",
       fx_functions={torch.ops.quantized.add: q.add, torch.ops.quantized.add_relu: q.add_relu,
                     operator.add: fl.add},
       torchscript={"quantized::add": q.add, "quantized::add_relu": q.add_relu,
                    "aten::add": ts.arith(fl.add, "add")},
       aten={"aten.add.Tensor": pt.add, "aten.add_.Tensor": pt.add, "aten.add.Scalar": pt.add},
       fuzz={"image": 1, "sequence": 1}),
    Op("mul", "mul",
       fx_functions={torch.ops.quantized.mul: q.mul, torch.ops.quantized.mul_relu: q.mul_relu,
                     operator.mul: fl.mul},
       torchscript={"quantized::mul": q.mul, "quantized::mul_relu": q.mul_relu,
                    "aten::mul": ts.arith(fl.mul, "mul")},
       aten={"aten.mul.Tensor": pt.mul, "aten.mul.Scalar": pt.mul},
       fuzz={"image": 1, "sequence": 1}),
    Op("cat", "requantize_tensor",
       fx_functions={torch.ops.quantized.cat: q.qcat},
       torchscript={"quantized::cat": q.qcat},
       aten={"aten.cat.default": pt.cat},
       fuzz={"image": 1}),
    Op("relu", "clamp",
       fx_modules={torch.nn.ReLU: q.relu_module},
       fx_functions={torch.relu: q.relu, F.relu: q.relu},
       fx_methods={"relu": q.relu},
       torchscript={"aten::relu": q.relu, "aten::relu_": q.relu},
       aten={"aten.relu.default": pt.relu, "aten.relu_.default": pt.relu},
       fuzz={"image": 1, "sequence": 1}),
    Op("hardtanh", "clamp",  # relu6 is hardtanh(0, 6), also in aten
       fx_modules={nnq.ReLU6: q.relu6_module, torch.nn.ReLU6: q.relu6_module,
                   torch.nn.Hardtanh: q.hardtanh_module},
       fx_functions={F.relu6: q.relu6, F.hardtanh: q.hardtanh},
       torchscript={"aten::relu6": q.relu6, "aten::hardtanh": q.hardtanh,
                    "aten::hardtanh_": q.hardtanh, "quantized::relu6": q.relu6},
       aten={"aten.hardtanh.default": pt.hardtanh, "aten.hardtanh_.default": pt.hardtanh,
             "aten.relu6.default": pt.relu6, "aten.relu6_.default": pt.relu6,
             "aten.clamp.default": pt.clamp},
       fuzz={"image": 1}),
    Op("hardswish", "unary_table",
       fx_modules={nnq.Hardswish: q.hardswish_module},
       torchscript={"quantized::hardswish": ts.hardswish},
       aten={"aten.hardswish.default": pt.hardswish, "aten.hardswish_.default": pt.hardswish},
       fuzz={"image": 1, "sequence": 1}),
    Op("hardsigmoid", "unary_table",
       fx_modules={torch.nn.Hardsigmoid: q.hardsigmoid_module},
       fx_functions={F.hardsigmoid: q.hardsigmoid},
       torchscript={"aten::hardsigmoid": q.hardsigmoid},
       aten={"aten.hardsigmoid.default": pt.hardsigmoid}),
    Op("sigmoid", "unary_table",
       fx_modules={torch.nn.Sigmoid: q.sigmoid_module},
       fx_functions={torch.sigmoid: q.sigmoid},
       torchscript={"aten::sigmoid": q.sigmoid},
       aten={"aten.sigmoid.default": pt.sigmoid, "aten.sigmoid_.default": pt.sigmoid},
       fuzz={"image": 1, "sequence": 1}),
    # ------------------------------------------------------------------ pooling
    Op("max_pool2d", "exact",
       fx_modules={torch.nn.MaxPool2d: q.max_pool2d_module},
       fx_functions={F.max_pool2d: q.max_pool2d},
       torchscript={"aten::max_pool2d": q.max_pool2d},
       aten={"aten.max_pool2d.default": pt.max_pool2d,
             "aten.max_pool2d_with_indices.default": pt.max_pool2d_with_indices},
       fuzz={"image": 1}),
    Op("avg_pool2d", "avg_pool",
       fx_modules={torch.nn.AvgPool2d: q.avg_pool2d_module},
       fx_functions={F.avg_pool2d: q.avg_pool2d},
       torchscript={"aten::avg_pool2d": q.avg_pool2d},
       aten={"aten.avg_pool2d.default": pt.avg_pool2d},
       fuzz={"image": 1}),
    Op("mean", "mean",  # over H and W; a PT2E graph's is the adaptive pool below
       fx_functions={torch.mean: q.mean},
       fx_methods={"mean": q.mean},
       torchscript={"aten::mean": q.mean}),
    Op("adaptive_avg_pool2d", "adaptive_avg_pool",  # to 1x1; a PT2E graph's mean over H, W
       fx_modules={torch.nn.AdaptiveAvgPool2d: q.adaptive_avg_pool2d_module},
       fx_functions={F.adaptive_avg_pool2d: q.adaptive_avg_pool2d},
       torchscript={"aten::adaptive_avg_pool2d": q.adaptive_avg_pool2d},
       aten={"aten.adaptive_avg_pool2d.default": pt.adaptive_avg_pool2d,
             "aten.mean.dim": pt.mean}),
    # ------------------------------------------------------------------ data movement
    Op("flatten", "exact",
       fx_modules={torch.nn.Flatten: q.flatten_module},
       fx_functions={torch.flatten: q.flatten},
       fx_methods={"flatten": q.flatten},
       torchscript={"aten::flatten": q.flatten},
       aten={"aten.flatten.using_ints": pt.flatten}),
    Op("reshape", "exact",
       fx_functions={torch.reshape: q.reshape},
       fx_methods={"reshape": q.reshape, "view": q.reshape},
       torchscript={"aten::reshape": ts.reshape, "aten::view": ts.reshape},
       aten={"aten.view.default": pt.reshape, "aten.reshape.default": pt.reshape}),
    Op("transpose", "exact",  # channel shuffles transpose 8-bit data
       fx_functions={torch.transpose: q.transpose},
       fx_methods={"transpose": q.transpose},
       torchscript={"aten::transpose": q.transpose},
       aten={"aten.transpose.int": pt.transpose}),
    Op("permute", "exact",
       fx_functions={torch.permute: q.permute},
       fx_methods={"permute": q.permute},
       torchscript={"aten::permute": q.permute},
       aten={"aten.permute.default": pt.permute}),
    Op("expand", "exact",
       fx_methods={"expand": q.expand},
       torchscript={"aten::expand": q.expand},
       aten={"aten.expand.default": pt.expand}),
    Op("unflatten", "exact",
       fx_methods={"unflatten": q.unflatten},
       aten={"aten.unflatten.int": pt.unflatten}),
    Op("unsqueeze", "exact",
       fx_methods={"unsqueeze": q.unsqueeze},
       torchscript={"aten::unsqueeze": q.unsqueeze},
       aten={"aten.unsqueeze.default": pt.unsqueeze}),
    Op("squeeze", "exact",
       fx_methods={"squeeze": q.squeeze},
       aten={"aten.squeeze.dim": pt.squeeze, "aten.squeeze.dims": pt.squeeze}),
    Op("slice", "exact",
       torchscript={"aten::slice": q.slice_tensor},
       aten={"aten.slice.Tensor": pt.slice_tensor}),
    Op("select", "exact",
       fx_methods={"select": q.select},
       torchscript={"aten::select": q.select},
       aten={"aten.select.int": pt.select}),
    Op("unbind", "exact",
       fx_methods={"unbind": q.unbind},
       aten={"aten.unbind.int": pt.unbind}),
    Op("upsample_nearest2d", "exact",  # nearest upsampling copies 8-bit values
       aten={"aten.upsample_nearest2d.vec": pt.upsample_nearest2d}),
    Op("chunk", "exact",
       fx_functions={torch.chunk: q.chunk},
       fx_methods={"chunk": q.chunk},
       torchscript={"aten::chunk": q.chunk}),
    Op("size", "exact",  # shape arithmetic: sizes are Python numbers
       fx_methods={"size": q.size}),
    Op("floordiv", "float",
       fx_functions={operator.floordiv: fl.floordiv}),
    Op("identity", "exact",  # Identity, Dropout in eval, contiguous, clone
       fx_modules={torch.nn.Identity: q.identity, torch.nn.Dropout: q.identity},
       fx_methods={"contiguous": q.passthrough},
       torchscript={"aten::contiguous": ts.passthrough, "aten::dropout": ts.passthrough},
       aten={"aten.dropout.default": pt.identity, "aten.dropout_.default": pt.identity,
             "aten.clone.default": pt.identity,
             "aten.contiguous.default": pt.identity,
             "aten._assert_tensor_metadata.default": pt.check}),
    # ------------------------------------------------------------------ float islands
    Op("sub", "float",
       fx_functions={operator.sub: fl.sub},
       torchscript={"aten::sub": ts.arith(fl.sub, "sub"),
                    "aten::rsub": ts.arith(fl.sub, "rsub", reverse=True)},
       aten={"aten.sub.Tensor": pt.sub, "aten.rsub.Scalar": pt.rsub}),
    Op("div", "float",
       fx_functions={operator.truediv: fl.truediv},
       torchscript={"aten::div": ts.arith(fl.truediv, "div")},
       aten={"aten.div.Tensor": pt.div}),
    Op("matmul", "float",
       fx_functions={torch.matmul: fl.matmul, operator.matmul: fl.matmul},
       fx_methods={"matmul": fl.matmul},
       torchscript={"aten::matmul": fl.matmul, "aten::bmm": fl.matmul},
       aten={"aten.matmul.default": pt.island(fl.matmul),
             "aten.bmm.default": pt.island(fl.matmul)}),
    Op("embedding", "float",
       fx_modules={torch.nn.Embedding: fl.embedding_module},
       fx_functions={F.embedding: fl.embedding},
       torchscript={"aten::embedding": ts.embedding},
       aten={"aten.embedding.default": pt.island(ts.embedding)}),
    Op("layer_norm", "float",
       fx_modules={torch.nn.LayerNorm: fl.layer_norm_module},
       fx_functions={F.layer_norm: fl.layer_norm},
       torchscript={"aten::layer_norm": ts.layer_norm},
       aten={"aten.layer_norm.default": pt.layer_norm}),
    Op("gelu", "float",
       fx_modules={torch.nn.GELU: fl.gelu_module},
       fx_functions={F.gelu: fl.gelu},
       torchscript={"aten::gelu": fl.gelu},
       aten={"aten.gelu.default": pt.island(fl.gelu), "aten.gelu_.default": pt.island(fl.gelu)}),
    Op("silu", "float",
       fx_modules={torch.nn.SiLU: fl.silu_module},
       fx_functions={F.silu: fl.silu},
       torchscript={"aten::silu": fl.silu, "aten::silu_": fl.silu},
       aten={"aten.silu.default": pt.island(fl.silu), "aten.silu_.default": pt.island(fl.silu)}),
    Op("upsample_bilinear2d", "float",
       aten={"aten.upsample_bilinear2d.vec": pt.upsample_bilinear2d}),
    Op("softmax", "float",
       fx_modules={torch.nn.Softmax: fl.softmax_module},
       fx_functions={F.softmax: fl.softmax, torch.softmax: fl.softmax},
       fx_methods={"softmax": fl.softmax},
       torchscript={"aten::softmax": fl.softmax},
       aten={"aten.softmax.int": pt.island(fl.softmax),
             "aten._softmax.default": pt.island(fl.softmax)}),
    Op("tanh", "float",
       fx_functions={torch.tanh: fl.tanh},
       torchscript={"aten::tanh": fl.tanh},
       aten={"aten.tanh.default": pt.island(fl.tanh)}),
    Op("masked_fill", "float",
       fx_methods={"masked_fill": fl.masked_fill},
       torchscript={"aten::masked_fill": fl.masked_fill}),
    *(Op(what, "float", torchscript={f"aten::{what}": fl.compare(what)},
         aten={f"aten.{what}.{kind}": pt.island(fl.compare(what)) for kind in ("Scalar", "Tensor")})
      for what in ("eq", "ne", "gt", "lt", "ge", "le")),
    # what traced Hugging Face forwards compute around their Linears (masks, position ids,
    # mean pooling): TorchScript spellings only
    *(Op(name, "float", torchscript={f"aten::{name}": convert},
         aten={f"aten.{name}.{overload}": pt.island(convert)} if overload else {})
      for name, convert, overload in (
          ("cumsum", fl.cumsum, "default"), ("type_as", fl.type_as, "default"),
          ("sum", fl.reduce_sum, "dim_IntList"), ("clamp", fl.clamp, None),
          ("gather", fl.gather, "default"), ("where", fl.where, "self"),
          ("index", fl.index, "Tensor"))),
    *(Op(f"bitwise_{what}", "float",
         torchscript={f"aten::__{what}__": fl.bitwise(what), f"aten::bitwise_{what}":
                      fl.bitwise(what)},
         aten={f"aten.bitwise_{what}.Tensor": pt.island(fl.bitwise(what)),
               f"aten.__{what}__.Tensor": pt.island(fl.bitwise(what))})
      for what in ("and", "or", "xor")),
    Op("scaled_dot_product_attention", "float",
       fx_functions={F.scaled_dot_product_attention: fl.scaled_dot_product_attention},
       torchscript={"aten::scaled_dot_product_attention": fl.scaled_dot_product_attention},
       aten={"aten.scaled_dot_product_attention.default":
             pt.island(fl.scaled_dot_product_attention)}),
    Op("to", "float",
       fx_methods={"to": fl.to_dtype, "float": fl.to_float},
       torchscript={"aten::to": ts.to},
       aten={"aten.to.dtype": pt.island(fl.to_dtype), "aten._to_copy.default": pt.to_copy,
             "aten.to.device": pt.to_device, "aten.to.dtype_layout": pt.to_copy}),
    Op("ones_like", "float",
       torchscript={"aten::ones_like": ts.ones_like}),
    Op("zeros_like", "float",
       torchscript={"aten::zeros_like": ts.zeros_like}),
)


def _table(path: str) -> dict:
    """{spelling: converter} of one capture path over every op (a spelling names one op)."""
    table = {}
    for op in OPS:
        for spelling, convert in getattr(op, path).items():
            if spelling in table:
                raise ValueError(f"{spelling!r} spelled by two ops of the table ({path})")
            table[spelling] = convert
    return table


FX_MODULES, FX_FUNCTIONS, FX_METHODS = (_table(p) for p in ("fx_modules", "fx_functions",
                                                           "fx_methods"))
TORCHSCRIPT, ATEN = _table("torchscript"), _table("aten")
BY_NAME = {op.name: op for op in OPS}


def fx_module_converter(module):
    """The converter for a module instance (exact class first, then base classes), or None."""
    for cls in type(module).__mro__:
        if cls in FX_MODULES:
            return FX_MODULES[cls]
    return None


def describe_fx() -> str:
    """A sorted, readable list of the modules, functions and methods the fx path converts."""
    names = [f"{c.__module__.replace('torch.ao.nn.', '')}.{c.__name__}" for c in FX_MODULES]
    names += [getattr(f, "__name__", str(f)) for f in FX_FUNCTIONS]
    names += [f"Tensor.{m}" for m in FX_METHODS]
    return ", ".join(sorted(set(names)))


def fuzz_ops(kind: str) -> list[str]:
    """The ops the fuzzer draws for a graph kind ("image", "sequence"), each repeated by its
    weight, in table order."""
    return [op.name for op in OPS for _ in range(op.fuzz.get(kind, 0))]
