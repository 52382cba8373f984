"""Float islands: the float ops a quantized model keeps between its quantized ones.

Transformers quantized with `quantize_dynamic` keep everything but their Linears in float:
embeddings of integer token ids, LayerNorm, attention (matmuls, masking, softmax), GELU,
residual adds.  These become ordinary Relax float ops, compiled by TVM's own kernels; a
dynamic linear after them chooses its qparams from whatever they computed.  Which torch spelling
reaches which converter is frontend/op_table.py's business.  They are not
bit-exact with PyTorch's float kernels (other summation orders, other exp/erf), which is why
verify reports the cosine to the float model next to the cosine to PyTorch's int8 run.

Each converter refuses a quantized input (that would be a float op on 8-bit values, which the
Q/DQ passes handle, or a missing DeQuantStub).
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
from tvm import relax

from .values import QValue

R = relax.op


def float_value(imp, value, what: str):
    """A float Relax expression for `value` (a Relax float expr, a torch tensor or a number);
    a quantized value is refused (a float op on 8-bit data)."""
    if isinstance(value, QValue):
        raise imp.error(f"{what} is a float op applied to a quantized tensor: put a DeQuantStub "
                        "before it (float islands run on dequantized values)")
    if isinstance(value, relax.Expr):
        return value
    if isinstance(value, torch.Tensor):
        array = value.detach().numpy()
        dtype = "float32" if array.dtype.kind == "f" else str(array.dtype)
        # the dtype spelled out: relax.const would make an int64 array int32
        return relax.const(array.astype(dtype), dtype)
    if isinstance(value, (bool, int, float)):
        return relax.const(np.array(value, dtype="float32"))
    raise imp.error(f"{what}: unsupported operand {type(value).__name__}")


def _rank(expr) -> int:
    return len(expr.ty.shape)


def _operand(imp, value, other, what: str):
    """One operand of a binary op: a Python int beside an integer tensor takes its dtype (the
    position-id arithmetic of a traced model stays integer, as in PyTorch)."""
    if (isinstance(value, (bool, int)) and isinstance(other, relax.Expr)
            and ("int" in str(other.ty.dtype) or str(other.ty.dtype) == "bool")):
        return relax.const(value, str(other.ty.dtype))
    return float_value(imp, value, what)


def _promoted(x, y, to_float: bool = False):
    """x, y in one dtype: float32 when either is float (or `to_float`), else the wider int."""
    dx, dy = str(x.ty.dtype), str(y.ty.dtype)
    if to_float or "float" in dx or "float" in dy:
        return [v if str(v.ty.dtype) == "float32" else R.astype(v, "float32") for v in (x, y)]
    if dx != dy:
        return R.astype(x, "int64"), R.astype(y, "int64")
    return x, y


def _binary(op, what):
    def convert(imp, a, b):
        if not isinstance(a, (relax.Expr, QValue)) and not isinstance(b, (relax.Expr, QValue)):
            return getattr(operator, what)(a, b)  # Python arithmetic on sizes
        x, y = _operand(imp, a, b, what), _operand(imp, b, a, what)
        return imp.emit(op(*_promoted(x, y, to_float=what == "truediv")))

    return convert


def compare(what: str):
    """aten::eq / ne / gt / lt / ge / le of graph tensors and numbers: a bool tensor."""
    op = {"eq": R.equal, "ne": R.not_equal, "gt": R.greater, "lt": R.less,
          "ge": R.greater_equal, "le": R.less_equal}[what]

    def convert(imp, a, b):
        x, y = _operand(imp, a, b, what), _operand(imp, b, a, what)
        return imp.emit(op(*_promoted(x, y)))

    return convert


def cumsum(imp, x, dim, dtype=None):
    """torch.cumsum: integer and bool inputs sum in int64, as PyTorch's."""
    x = float_value(imp, x, "cumsum")
    out = "float32" if "float" in str(x.ty.dtype) else "int64"
    if dtype is not None:
        raise imp.error("cumsum with an explicit dtype is not supported")
    return imp.emit(R.cumsum(x, axis=int(dim), dtype=out))


def type_as(imp, x, other):
    """x.type_as(other): x converted to other's dtype."""
    x, other = float_value(imp, x, "type_as"), float_value(imp, other, "type_as")
    if str(x.ty.dtype) == str(other.ty.dtype):
        return x
    return imp.emit(R.astype(x, str(other.ty.dtype)))


def embedding_module(imp, module, ids):
    """nn.Embedding: rows of the float weight table, gathered by integer ids.  An id outside
    the table is clamped to its first or last row (PyTorch raises IndexError; a compiled
    library has no exceptions, and must never read outside the table)."""
    if module.max_norm is not None:
        raise imp.error("nn.Embedding with max_norm is not supported")
    table = relax.const(module.weight.detach().numpy().astype("float32"))
    return imp.emit(R.take(table, float_value(imp, ids, "embedding"), axis=0, mode="clip"))


def layer_norm(imp, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    x = float_value(imp, x, "layer_norm")
    n = len(normalized_shape)
    shape = [int(d) for d in normalized_shape]
    gamma = weight if weight is not None else torch.ones(shape)
    beta = bias if bias is not None else torch.zeros(shape)
    axes = list(range(_rank(x) - n, _rank(x)))
    return imp.emit(R.nn.layer_norm(x, float_value(imp, gamma, "layer_norm"),
                                    float_value(imp, beta, "layer_norm"), axes, epsilon=float(eps)))


def gelu(imp, x, approximate="none"):
    x = float_value(imp, x, "gelu")
    return imp.emit(R.nn.gelu_tanh(x) if approximate == "tanh" else R.nn.gelu(x))


def softmax(imp, x, dim=None, dtype=None, _stacklevel=3):
    if dim is None:
        raise imp.error("softmax without dim is not supported")
    return imp.emit(R.nn.softmax(float_value(imp, x, "softmax"), axis=int(dim)))


def matmul(imp, a, b):
    return imp.emit(R.matmul(float_value(imp, a, "matmul"), float_value(imp, b, "matmul")))


def to_dtype(imp, x, *args, **kwargs):
    """Tensor.to(dtype) / .float(): only dtype conversions (no devices)."""
    dtype = kwargs.get("dtype", args[0] if args else torch.float32)
    names = {torch.float32: "float32", torch.int64: "int64", torch.int32: "int32",
             torch.bool: "bool"}
    if dtype not in names:
        raise imp.error(f"conversion to {dtype} is not supported")
    x = float_value(imp, x, "to")
    if str(x.ty.dtype) == names[dtype]:  # e.g. a dynamic linear's Y.to(x.dtype): a no-op
        return x
    return imp.emit(R.astype(x, names[dtype]))


def masked_fill(imp, x, mask, value):
    x = float_value(imp, x, "masked_fill")
    cond = float_value(imp, mask, "masked_fill")
    if str(cond.ty.dtype) != "bool":
        cond = R.astype(cond, "bool")
    return imp.emit(R.where(cond, relax.const(np.array(value, dtype="float32")), x))


def scaled_dot_product_attention(imp, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """softmax(q k^T * scale + mask) v, PyTorch's math reading of SDPA (a bool mask keeps
    where True)."""
    if is_causal or enable_gqa:
        raise imp.error("scaled_dot_product_attention with is_causal or enable_gqa is not "
                        "supported; pass an explicit attn_mask")
    q, k, v = (float_value(imp, t, "scaled_dot_product_attention") for t in (q, k, v))
    head_dim = int(q.ty.shape[-1])
    factor = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    axes = list(range(_rank(k)))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    scores = R.multiply(R.matmul(q, R.permute_dims(k, axes)),
                        relax.const(np.array(factor, dtype="float32")))
    if attn_mask is not None:
        mask = float_value(imp, attn_mask, "scaled_dot_product_attention")
        if str(mask.ty.dtype) == "bool":
            scores = R.where(mask, scores, relax.const(np.array(-np.inf, dtype="float32")))
        else:
            scores = R.add(scores, mask)
    weights = imp.emit(R.nn.softmax(scores, axis=-1))
    return imp.emit(R.matmul(weights, v))


def _bits(imp, value, what):
    """An operand of a logical op: a Python bool or int stays one (float_value makes numbers
    float32)."""
    if isinstance(value, (bool, int)):
        return relax.const(value, "bool" if isinstance(value, bool) else "int64")
    return float_value(imp, value, what)


def bitwise(what: str):
    """aten::__and__ / __or__ / __xor__ (and the bitwise_ spellings) of bool or integer
    tensors, e.g. attention masks combined: logical ops on bool, bitwise ops on integers."""
    logical = {"and": R.logical_and, "or": R.logical_or, "xor": R.logical_xor}[what]
    bits = {"and": R.bitwise_and, "or": R.bitwise_or, "xor": R.bitwise_xor}[what]

    def convert(imp, a, b):
        x, y = _bits(imp, a, what), _bits(imp, b, what)
        kinds = {str(x.ty.dtype), str(y.ty.dtype)}
        if "float32" in kinds:
            raise imp.error(f"aten::__{what}__ of a float tensor is not defined")
        if kinds == {"bool"}:
            return imp.emit(logical(x, y))
        return imp.emit(bits(R.astype(x, "int64"), R.astype(y, "int64")))

    return convert


def reduce_sum(imp, x, dim=None, keepdim=False, dtype=None):
    """x.sum(dims) of a float island (integer and bool tensors sum in int64, as PyTorch's)."""
    x = float_value(imp, x, "sum")
    if dtype is not None:
        raise imp.error("sum with an explicit dtype is not supported")
    if "float" not in str(x.ty.dtype):
        x = R.astype(x, "int64")
    axes = None if dim is None else [int(d) for d in (dim if isinstance(dim, (list, tuple))
                                                      else [dim])]
    return imp.emit(R.sum(x, axis=axes, keepdims=bool(keepdim)))


def clamp(imp, x, low=None, high=None):
    """x.clamp(min, max) of a float island (either bound may be absent)."""
    x = float_value(imp, x, "clamp")
    dtype = str(x.ty.dtype)
    if low is not None:
        x = R.maximum(x, relax.const(low, dtype))
    if high is not None:
        x = R.minimum(x, relax.const(high, dtype))
    return imp.emit(x)


def gather(imp, x, dim, index, sparse_grad=False):
    """torch.gather(x, dim, index): out[i][j] = x[i][index[i][j]] along `dim`."""
    x, index = float_value(imp, x, "gather"), float_value(imp, index, "gather")
    return imp.emit(R.gather_elements(x, index, axis=int(dim)))


def where(imp, cond, a, b):
    """torch.where(cond, a, b): a bool mask choosing between tensors or numbers (float32 when
    either is float, as an additive attention mask built from a bool one)."""
    cond = _bits(imp, cond, "where")
    if str(cond.ty.dtype) != "bool":
        cond = R.astype(cond, "bool")
    x, y = float_value(imp, a, "where"), float_value(imp, b, "where")
    if str(x.ty.dtype) != str(y.ty.dtype):
        x, y = R.astype(x, "float32"), R.astype(y, "float32")
    return imp.emit(R.where(cond, x, y))


def index(imp, x, indices):
    """x[i0, i1, ...]: integer index tensors known at import time (a mask built from index
    grids) on the leading dimensions, broadcast together; the rest of x is taken whole.  One
    take of the leading dimensions flattened, at the flat positions PyTorch's broadcast gives."""
    x = float_value(imp, x, "index")
    if not indices or any(not isinstance(i, torch.Tensor) for i in indices):
        raise imp.error("aten::index is supported with index tensors known at import time on "
                        "the leading dimensions only (not with indices computed from the inputs "
                        "or a skipped dimension)")
    shape = [int(d) for d in x.ty.shape]
    lead = shape[:len(indices)]
    flat = torch.zeros((), dtype=torch.int64)
    for i, size in zip(indices, lead):
        i = i.to(torch.int64)
        flat = flat * size + torch.where(i < 0, i + size, i)
    rows = R.reshape(x, [math.prod(lead), *shape[len(indices):]])
    return imp.emit(R.take(rows, relax.const(flat.numpy(), "int64"), axis=0))


def embedding(imp, ids, weight, *args, **kwargs):
    """F.embedding(ids, weight): rows of the weight table (clamped ids, as nn.Embedding)."""
    return imp.emit(R.take(float_value(imp, weight, "embedding"), float_value(imp, ids, "embedding"),
                           axis=0, mode="clip"))


def silu(imp, x, inplace=False):
    return imp.emit(R.nn.silu(float_value(imp, x, "silu")))


def interpolate(imp, x, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """F.interpolate of an (N, C, H, W) float tensor: nearest or bilinear."""
    x = float_value(imp, x, "interpolate")
    h, w = [int(d) for d in x.ty.shape][2:]
    if size is None:
        factors = scale_factor if isinstance(scale_factor, (list, tuple)) else [scale_factor] * 2
        size = [int(math.floor(h * float(factors[0]))), int(math.floor(w * float(factors[1])))]
    size = [int(d) for d in (size if isinstance(size, (list, tuple)) else [size, size])]
    if mode == "nearest":
        return imp.emit(R.image.resize2d(x, size, method="nearest_neighbor",
                                         coordinate_transformation_mode="asymmetric",
                                         rounding_method="floor"))
    if mode == "bilinear":
        return imp.emit(R.image.resize2d(x, size, method="linear",
                                         coordinate_transformation_mode=(
                                             "align_corners" if align_corners else "half_pixel")))
    raise imp.error(f"interpolate mode {mode!r} is not supported (nearest, bilinear)")


def tanh(imp, x):
    return imp.emit(R.tanh(float_value(imp, x, "tanh")))


def to_float(imp, x):
    """Tensor.float()."""
    return to_dtype(imp, x, torch.float32)


# a op b of float values (Python numbers, e.g. sizes, are combined as numbers)
add = _binary(R.add, "add")
sub = _binary(R.subtract, "sub")
mul = _binary(R.multiply, "mul")
truediv = _binary(R.divide, "truediv")
floordiv = _binary(R.floor_divide, "floordiv")


# ---------------------------------------------------------------------------- modules
def layer_norm_module(imp, m, x):
    return layer_norm(imp, x, m.normalized_shape, m.weight, m.bias, m.eps)


def gelu_module(imp, m, x):
    return gelu(imp, x, m.approximate)


def silu_module(imp, m, x):
    return silu(imp, x)


def softmax_module(imp, m, x):
    return softmax(imp, x, m.dim)
