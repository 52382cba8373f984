"""x86 AVX-512 tensor intrinsic for fbgemm's depthwise accumulator: 16 outputs, four taps
per instruction pair, the int16 saturation done by the instruction that defines it.

fbgemm computes a depthwise conv with vpmaddubsw: u8 activations times i8 weights, adjacent
products summed with int16 saturation.  Our kernel (numerics.kernels.depthwise_conv_fbgemm)
describes that accumulator as sum_pairs sat16(x_t0 w_t0 + x_t1 w_t1) per output; vectorized as
written it costs two vpmovzxbw, two vpmullw, a vpaddsw, a vpmovsxwd and a vpaddd per pair and
16 outputs.  This intrinsic computes 16 outputs of one row as fbgemm does, but along the output
columns rather than the channels:

  for each quad of taps (two pairs, 4q .. 4q+3):
      bytes[4k + b] = activation under output column k at tap 4q+b    (a vpermb/vpermt2b of
                                                                        32- or 64-byte row loads)
      vpmaddubsw(bytes, weights 4q..4q+3 repeated)  -> 32 x int16: the two pair sums, saturated
      vpmaddwd(that, 1)                              -> 16 x int32: their exact sum
  C[0:16] = sum of the quads

The rows come from the kernel's padded planes (kernels.padded_planes): at stride 1 the
activations of one tap for 16 consecutive outputs are 16 consecutive bytes of a plane row; at
stride 2 the intrinsic reads the padded rows before their de-interleaving and its shuffles pick
every other byte (that de-interleaving copy, vectorized by LLVM as byte extracts and inserts,
took 58 % of a stride-2 kernel's samples under `perf record -e cpu-clock`).  Each quad is one
byte shuffle of at most a few 32- or 64-byte row loads (the planes carry slack columns, so the
loads past the last tap stay inside the buffer; the bytes there are never used).  A pair's
second half past the last tap has a zero weight, and the weight row is padded with zero weights
to a multiple of 4 (qdq_to_integer): the last quad's missing pair adds 0.  The description is
the kernel's own expression (kernels.fbgemm_pair_sum), so a tensorized block computes what the
kernel defines; tests/test_intrinsics.py runs the intrinsic on saturating inputs against numpy
and against the vectorized expression.

Needs AVX-512 BW (vpmaddubsw, vpmaddwd on 512 bits) and VBMI (byte shuffles across the
register): the x86-avx512-vnni and x86-amx families (TargetFamily.depthwise_quads).
Measured (/tmp ad-hoc script: each MobileNetV2 depthwise kernel built both ways, timed
interleaved, 2-core Xeon): the 10 shapes sum to 0.70 ms against 1.03 vectorized; stride 2 gains
most (144 x 56^2 -> 28^2: 0.155 -> 0.064 ms).
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from qcompile.numerics.kernels import DEPTHWISE_LANES, fbgemm_pair_sum

LANES = DEPTHWISE_LANES  # outputs per call: 16 int32 lanes of a 512-bit register


class _Rows:
    """Where a call's activations are: at stride 1 the kernel's padded planes (pack_data,
    [1, 1, kernel, 1, columns]); at stride 2 the padded rows before their de-interleaving
    (pack_pad, [1, 1, kernel, columns]: the shuffles pick every other byte themselves).
    `load` bytes are read per row, at least `columns`."""

    def __init__(self, kernel: int, stride: int):
        self.kernel, self.stride = kernel, stride
        self.columns = stride * (LANES - 1) + kernel
        self.load = 32 if self.columns <= 32 else 64
        self.shape = ((1, 1, kernel, 1, self.columns) if stride == 1
                      else (1, 1, kernel, self.columns))

    def index(self, ky: int, col):
        """Buffer indices of row ky, column col of the region."""
        return [0, 0, ky, 0, col] if self.stride == 1 else [0, 0, ky, col]


def _quad_sum(X, W, rows: _Rows) -> tirx.PrimExpr:
    """int32x16: the pair sums of 16 outputs from X (the rows under one output row, _Rows)
    and W (the channel's weights, zero-padded to a multiple of 4 taps)."""
    kernel, stride = rows.kernel, rows.stride
    taps = kernel * kernel
    loaded = {}

    def row(ky):
        if ky not in loaded:
            loaded[ky] = X.vload(rows.index(ky, 0), f"uint8x{rows.load}")
        return loaded[ky]

    ones = tirx.Broadcast(tirx.const(1, "int16"), 2 * LANES)
    total = None
    for q in range(-(-taps // 4)):
        sources, index = [], []
        for k in range(LANES):
            for b in range(4):
                ky, kx = divmod(min(4 * q + b, taps - 1), kernel)  # past the taps: weight 0
                if ky not in sources:
                    sources.append(ky)
                index.append(sources.index(ky) * rows.load + stride * k + kx)
        vectors = [row(ky) for ky in sources]
        if len(vectors) * rows.load < 4 * LANES:  # a shuffle yields no more lanes than it reads
            vectors.append(vectors[0])
        quad = tirx.Shuffle(vectors, [tirx.const(i, "int32") for i in index])
        word = T.reinterpret("int32", W.vload([0, 4 * q], "int8x4"))
        weights = T.reinterpret(f"int8x{4 * LANES}", tirx.Broadcast(word, LANES))
        pairs = T.call_llvm_pure_intrin(f"int16x{2 * LANES}", "llvm.x86.avx512.pmaddubs.w.512",
                                        quad, weights)
        sums = T.call_llvm_pure_intrin(f"int32x{LANES}", "llvm.x86.avx512.pmaddw.d.512",
                                       pairs, ones)
        total = sums if total is None else total + sums
    return total


def _pair_sum(X, W, j, rows: _Rows) -> tirx.PrimExpr:
    """The kernel's own expression for output column j of the region (the description)."""

    def x_at(t):
        ky, kx = divmod(t, rows.kernel)
        return X[tuple(rows.index(ky, rows.stride * j + kx))]

    return fbgemm_pair_sum(x_at, lambda t: W[0, t], rows.kernel * rows.kernel)


def _intrinsic(kernel: int, stride: int):
    """(desc, impl) of C[0:16] = fbgemm's pair sums for a kernel x kernel depthwise conv at
    column stride `stride`."""
    rows = _Rows(kernel, stride)
    even = kernel * kernel + kernel * kernel % 2
    shape = rows.shape
    region = tuple(slice(0, d) for d in shape)
    strides = tuple(f"x{d}" for d in range(len(shape) - 1)) + (1,)

    @T.prim_func(s_tir=True)
    def desc(X: T.Buffer(shape, "uint8", offset_factor=1),
             W: T.Buffer((1, even), "int8", offset_factor=1),
             C: T.Buffer((1, 1, 1, LANES), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(X[region], W[0, 0:even])
            T.writes(C[0, 0, 0, 0:LANES])
            for j in range(LANES):
                with T.sblock("pairs"):
                    vj = T.axis.spatial(LANES, j)
                    C[0, 0, 0, vj] = _pair_sum(X, W, vj, rows)

    @T.prim_func(s_tir=True)
    def impl(X: T.Buffer(shape, "uint8", offset_factor=1, strides=strides),
             W: T.Buffer((1, even), "int8", offset_factor=1, strides=("w_row", 1)),
             C: T.Buffer((1, 1, 1, LANES), "int32", offset_factor=1, scope="local",
                         strides=("c_n", "c_c", "c_row", 1))) -> None:
        with T.sblock("root"):
            T.reads(X[region], W[0, 0:even])
            T.writes(C[0, 0, 0, 0:LANES])
            C[0, 0, 0, T.ramp(0, 1, LANES)] = _quad_sum(X, W, rows)

    return desc, impl


def quad_intrinsic(kernel: int, stride: int) -> str:
    """The name of the intrinsic for a kernel x kernel conv at column stride `stride`
    (registered on first use)."""
    name = f"qcompile_fbgemm_depthwise_{kernel}x{kernel}_s{stride}_x{LANES}"
    try:
        TensorIntrin.get(name)
    except Exception:  # noqa: BLE001 - not registered yet
        TensorIntrin.register(name, *_intrinsic(kernel, stride))
    return name
