"""x86 AVX-512 tensor intrinsics for the depthwise kernels' sums: 16 outputs, four taps per
instruction, fbgemm's int16 saturation done by the instruction that defines it.

fbgemm computes a depthwise conv with vpmaddubsw: u8 activations times i8 weights, adjacent
products summed with int16 saturation.  Our kernel (numerics.depthwise.depthwise_conv_fbgemm)
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

The rows come from the kernel's padded planes (numerics.windows.padded_planes): at stride 1 the
activations of one tap for 16 consecutive outputs are 16 consecutive bytes of a plane row; at
stride 2 the intrinsic reads the padded rows before their de-interleaving and its shuffles pick
every other byte (that de-interleaving copy, vectorized by LLVM as byte extracts and inserts,
took 58 % of a stride-2 kernel's samples under `perf record -e cpu-clock`).  Each quad is one
byte shuffle of at most a few 32- or 64-byte row loads (the planes carry slack columns, so the
loads past the last tap stay inside the buffer; the bytes there are never used).  A pair's
second half past the last tap has a zero weight, and the weight row is padded with zero weights
to a multiple of 4 (qdq_to_integer): the last quad's missing pair adds 0.  The description is
the kernel's own expression (numerics.depthwise.fbgemm_pair_sum), so a tensorized block computes
what the kernel defines; tests/test_intrinsics.py runs the intrinsic on saturating inputs against
numpy and against the vectorized expression.

The exact depthwise kernel with u8 activations and weights that fit int8
(numerics.depthwise.depthwise_conv_exact_int8: PT2E, the integer and qnnpack contracts) uses the
same quads with one vpdpbusd each (exact int32 sums; mode "exact").  MobileNetV2 interleaved A/B on
the Xeon (ad-hoc script): integer contract 5.37 -> 4.94 ms, qnnpack 6.51 -> 5.94 ms median.

Needs AVX-512 BW (vpmaddubsw, vpmaddwd on 512 bits), VBMI (byte shuffles across the register)
and VNNI: the x86-avx512-vnni and x86-amx families (TargetFamily.depthwise_quads).
Measured (/tmp ad-hoc script: each MobileNetV2 depthwise kernel built both ways, timed
interleaved, 2-core Xeon): the 10 shapes sum to 0.70 ms against 1.03 vectorized; stride 2 gains
most (144 x 56^2 -> 28^2: 0.155 -> 0.064 ms).
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from qcompile.numerics.depthwise import exact_tap_sum, fbgemm_pair_sum
from qcompile.numerics.windows import DEPTHWISE_LANES

LANES = DEPTHWISE_LANES  # outputs per call: 16 int32 lanes of a 512-bit register


class _Rows:
    """Where a call's activations are: at stride 1 the kernel's padded planes (pack_data,
    [1, 1, kh, 1, columns]); at stride 2 the padded rows before their de-interleaving
    (pack_pad, [1, 1, kh, columns]: the shuffles pick every other byte themselves).
    `load` bytes are read per row, at least `columns`."""

    def __init__(self, kh: int, kw: int, stride: int):
        self.kh, self.kw, self.stride = kh, kw, stride
        self.taps = kh * kw
        self.columns = stride * (LANES - 1) + kw
        self.load = 32 if self.columns <= 32 else 64
        self.shape = ((1, 1, kh, 1, self.columns) if stride == 1 else (1, 1, kh, self.columns))

    def index(self, ky: int, col):
        """Buffer indices of row ky, column col of the region."""
        return [0, 0, ky, 0, col] if self.stride == 1 else [0, 0, ky, col]


def _quads(X, W, rows: _Rows):
    """For each quad of taps 4q .. 4q+3: (the 64 activation bytes of 16 outputs, four per
    output, from one shuffle of row loads; the quad's four weights repeated 16 times)."""
    loaded = {}

    def row(ky):
        if ky not in loaded:
            loaded[ky] = X.vload(rows.index(ky, 0), f"uint8x{rows.load}")
        return loaded[ky]

    for q in range(-(-rows.taps // 4)):
        sources, index = [], []
        for k in range(LANES):
            for b in range(4):
                ky, kx = divmod(min(4 * q + b, rows.taps - 1), rows.kw)  # past the taps: weight 0
                if ky not in sources:
                    sources.append(ky)
                index.append(sources.index(ky) * rows.load + rows.stride * k + kx)
        vectors = [row(ky) for ky in sources]
        if len(vectors) * rows.load < 4 * LANES:  # a shuffle yields no more lanes than it reads
            vectors.append(vectors[0])
        quad = tirx.Shuffle(vectors, [tirx.const(i, "int32") for i in index])
        word = T.reinterpret("int32", W.vload([0, 4 * q], "int8x4"))
        yield quad, T.reinterpret(f"int8x{4 * LANES}", tirx.Broadcast(word, LANES))


def _fbgemm_sum(X, W, rows: _Rows) -> tirx.PrimExpr:
    """int32x16: fbgemm's pair sums of 16 outputs (vpmaddubsw saturates each pair to int16,
    vpmaddwd adds a quad's two pairs exactly)."""
    ones = tirx.Broadcast(tirx.const(1, "int16"), 2 * LANES)
    total = None
    for quad, weights in _quads(X, W, rows):
        pairs = T.call_llvm_pure_intrin(f"int16x{2 * LANES}", "llvm.x86.avx512.pmaddubs.w.512",
                                        quad, weights)
        sums = T.call_llvm_pure_intrin(f"int32x{LANES}", "llvm.x86.avx512.pmaddw.d.512",
                                       pairs, ones)
        total = sums if total is None else total + sums
    return total


def _exact_sum(X, W, rows: _Rows) -> tirx.PrimExpr:
    """int32x16: the exact tap sums of 16 outputs, four taps per vpdpbusd."""
    total = tirx.Broadcast(tirx.const(0, "int32"), LANES)
    for quad, weights in _quads(X, W, rows):
        total = T.call_llvm_pure_intrin(f"int32x{LANES}", "llvm.x86.avx512.vpdpbusd.512",
                                        total, quad, weights)
    return total


_SUMS = {"fbgemm": (fbgemm_pair_sum, _fbgemm_sum), "exact": (exact_tap_sum, _exact_sum)}


def _described(X, W, j, rows: _Rows, mode: str) -> tirx.PrimExpr:
    """The kernel's own expression for output column j of the region (the description)."""

    def x_at(t):
        ky, kx = divmod(t, rows.kw)
        return X[tuple(rows.index(ky, rows.stride * j + kx))]

    return _SUMS[mode][0](x_at, lambda t: W[0, t], rows.taps)


def _computed(X, W, rows: _Rows, mode: str) -> tirx.PrimExpr:
    """The instructions' int32x16 for the same 16 outputs (the implementation)."""
    return _SUMS[mode][1](X, W, rows)


def _intrinsic(mode: str, kh: int, kw: int, stride: int):
    """(desc, impl) of C[0:16] = the kernel's sums (mode "fbgemm": fbgemm's saturating pairs;
    "exact": plain int32) for a kh x kw depthwise conv at column stride `stride`."""
    rows = _Rows(kh, kw, stride)
    weights = rows.taps + rows.taps % 2 if mode == "fbgemm" else rows.taps
    shape = rows.shape
    region = tuple(slice(0, d) for d in shape)
    strides = tuple(f"x{d}" for d in range(len(shape) - 1)) + (1,)

    @T.prim_func(s_tir=True)
    def desc(X: T.Buffer(shape, "uint8", offset_factor=1),
             W: T.Buffer((1, weights), "int8", offset_factor=1),
             C: T.Buffer((1, 1, 1, LANES), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(X[region], W[0, 0:weights])
            T.writes(C[0, 0, 0, 0:LANES])
            for j in range(LANES):
                with T.sblock("sums"):
                    vj = T.axis.spatial(LANES, j)
                    C[0, 0, 0, vj] = _described(X, W, vj, rows, mode)

    @T.prim_func(s_tir=True)
    def impl(X: T.Buffer(shape, "uint8", offset_factor=1, strides=strides),
             W: T.Buffer((1, weights), "int8", offset_factor=1, strides=("w_row", 1)),
             C: T.Buffer((1, 1, 1, LANES), "int32", offset_factor=1, scope="local",
                         strides=("c_n", "c_c", "c_row", 1))) -> None:
        with T.sblock("root"):
            T.reads(X[region], W[0, 0:weights])
            T.writes(C[0, 0, 0, 0:LANES])
            C[0, 0, 0, T.ramp(0, 1, LANES)] = _computed(X, W, rows, mode)

    return desc, impl


def fits(kw: int, stride: int) -> bool:
    """Can one call read its rows with single loads that stay inside the kernel's slack?
    (stride 1: 32-byte loads; stride 2: 64-byte loads of the undivided rows.)"""
    return (stride == 1 and LANES - 1 + kw <= 32) or (stride == 2 and 2 * (LANES - 1) + kw <= 64)


def quad_intrinsic(mode: str, kh: int, kw: int, stride: int) -> str:
    """The name of the intrinsic for a kh x kw depthwise conv at column stride `stride`, mode
    "fbgemm" or "exact" (registered on first use)."""
    name = f"qcompile_{mode}_depthwise_{kh}x{kw}_s{stride}_x{LANES}"
    try:
        TensorIntrin.get(name)
    except Exception:  # noqa: BLE001 - not registered yet
        TensorIntrin.register(name, *_intrinsic(mode, kh, kw, stride))
    return name
