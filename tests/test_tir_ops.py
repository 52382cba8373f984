"""The scalar building blocks of qcompile.numerics.tir_ops, compiled vectorized for the host
and compared with numpy emulations of the instruction sequences they stand for."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te

from qcompile.numerics.tir_ops import fbgemm_step
from qcompile.schedules import resolve_family


def fbgemm_store_reference(p: np.ndarray, zero_point: int, lo: int, hi: int,
                           wrapping_add: bool) -> np.ndarray:
    """fbgemm's requantize store, instruction by instruction: cvtps2dq (round half to even,
    INT32_MIN when out of range), packs_epi32 (saturate to int16), adds_epi16 (the zero point,
    saturating), packus/packs_epi16 (saturate to 8 bits), then the activation's clip [lo, hi]
    (inside the 8-bit range: the two saturate as one).  `wrapping_add`: ATen's quantize adds
    the zero point with add_epi32 (wrapping) before packs_epi32."""
    p64 = p.astype(np.float64)
    r = np.where((p64 >= -2.0**31) & (p64 < 2.0**31), np.rint(p64), -2.0**31).astype(np.int64)
    if wrapping_add:
        r = (r + zero_point + 2**31) % 2**32 - 2**31
        return np.clip(np.clip(r, -32768, 32767), lo, hi)
    r = np.clip(np.clip(r, -32768, 32767) + zero_point, -32768, 32767)
    return np.clip(r, lo, hi)


def _values() -> np.ndarray:
    """Ties, the clip bounds' neighbourhoods, the int16 and int32 edges and beyond."""
    rng = np.random.default_rng(0)
    edges = [2.0**31, 2.0**31 - 128, 2.0**31 - 256, 2.0**31 - 192, -2.0**31, -2.0**31 - 256, 1e10, -1e10, 3e38, -3e38,
             32767.5, 32768.0, -32768.5, -32769.0, 0.0, -0.0]
    ties = np.arange(-300, 300) + 0.5
    near = np.arange(-300, 300)[:, None] + np.array([-0.25, 0.0, 0.49999997, 0.50000006])
    values = np.concatenate([edges, ties, near.ravel(), rng.normal(0, 200, 4000),
                             rng.normal(0, 1e6, 1000)]).astype(np.float32)
    return values[: len(values) // 16 * 16]


# (zero point, lo, hi, wrapping_add, fits_int32: only values below 2^31 are given)
CASES = [(0, 0, 255, False, False), (128, 0, 255, False, False), (255, 0, 255, False, False),
         (37, 37, 255, False, False), (10, 10, 70, False, False), (-128, -128, 127, False, False),
         (0, 0, 255, True, False), (127, 0, 255, True, False), (128, 0, 255, True, False),
         (255, 255, 255, True, False), (128, 0, 255, False, True), (3, 3, 90, False, True)]


@pytest.mark.parametrize("zero_point,lo,hi,wrapping_add,fits_int32", CASES)
def test_fbgemm_step_is_fbgemms_store(zero_point, lo, hi, wrapping_add, fits_int32):
    values = _values()
    if fits_int32:
        values = np.resize(values[values < 2.0**31], values.size)
    p = te.placeholder((values.size,), "float32", name="p")
    out = te.compute(p.shape, lambda i: fbgemm_step(p[i], zero_point, lo, hi, wrapping_add,
                                                    fits_int32), name="step")
    func = te.create_prim_func([p, out])
    sch = tvm.s_tir.Schedule(func)
    (loop,) = sch.get_loops(sch.get_sblock("step"))
    sch.vectorize(sch.split(loop, [None, 16])[1])
    lib = tvm.compile(sch.mod, target=resolve_family("x86").tvm_target())
    got = tvm.runtime.empty(values.shape, "int32")
    lib["main"](tvm.runtime.tensor(values), got)
    expected = fbgemm_store_reference(values, zero_point, lo, hi, wrapping_add)
    wrong = np.flatnonzero(got.numpy() != expected)
    assert wrong.size == 0, f"{wrong.size} wrong, e.g. p={values[wrong[:5]]}"


def test_requantize_knows_when_the_scaled_accumulator_fits_int32():
    """The out-of-range select may go only when no int32 accumulator can scale past 2^31."""
    from qcompile.numerics.requantize import Requantize

    def fits(float_bias, mult, bias=None, inv_ats=None):
        rq = Requantize(None, np.float32([mult]), None if bias is None else np.array([bias]),
                        None if inv_ats is None else np.float32([inv_ats]))
        return rq.scaled_fits_int32(float_bias)

    assert fits(True, 0.02)
    assert fits(True, 0.999)
    assert not fits(True, 1.0)
    assert not fits(True, 0.999, np.float32(1e7))
    assert not fits(True, 0.5, np.float32(3.0), 1e9)
    assert fits(True, 0.5, np.float32(3.0), 10.0)
    # qnnpack's int32 bias add wraps: |v| stays within 2^31 whatever the bias
    assert fits(False, 0.9, np.int32(2**31 - 1))
