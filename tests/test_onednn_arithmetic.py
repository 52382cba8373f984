"""The `inductor` contract's model of oneDNN's int8 arithmetic (numerics.onednn), checked against
the oneDNN ops torch.compile calls (onednn.qconv_pointwise, qconv2d_pointwise.binary,
qlinear_pointwise) on this host's CPU, and models compiled under it against torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qcompile
from qcompile.numerics import onednn
from qcompile.schedules import resolve_family
from qcompile.zoo import pt2e_quantize as zoo_pt2e

f32 = np.float32
AMX = resolve_family("x86").amx  # oneDNN runs its AMX kernels on this host


def _conv_case(cin, cout, k, groups, seed=0, hw=20):
    g = torch.Generator().manual_seed(seed)
    sx, zx = float(f32(0.025)), 100
    qx = torch.randint(0, 256, (1, cin, hw, hw), dtype=torch.uint8, generator=g).contiguous(
        memory_format=torch.channels_last)
    w = torch.randint(-128, 128, (cout, cin // groups, k, k), dtype=torch.int8, generator=g)
    sw = (torch.rand(cout, generator=g) * 0.004 + 0.0005).float()
    b = torch.randn(cout, generator=g).float()
    pad = [k // 2] * 2
    packed = torch.ops.onednn.qconv_prepack(w, sw, sx, zx, [1, 1], pad, [1, 1], groups,
                                            list(qx.shape))
    args = (qx, torch.tensor(sx), torch.tensor(zx, dtype=torch.int32), packed, sw,
            torch.zeros(cout, dtype=torch.int64))
    geometry = ([1, 1], pad, [1, 1], groups)
    acc = torch.nn.functional.conv2d(qx.double() - zx, w.double(), None, 1, pad, 1, groups)
    return args, b, geometry, acc.numpy().astype(f32), sx, sw.numpy()


def _value(acc, sx, sw, b, kind, amx):
    """numerics.onednn's value, in numpy: sequential or combined scales, then the bias."""
    s = onednn.scales(sx, sw, kind, amx)
    shape = (1, -1, 1, 1) if acc.ndim == 4 else (1, -1)
    v = acc if s.first is None else acc * s.first
    return v * s.channel.reshape(shape) + b.numpy().reshape(shape)


def _kind(k, groups, cin):
    if groups == cin and groups > 1:
        return onednn.DEPTHWISE
    return onednn.CONV_1X1 if k == 1 else onednn.CONV


@pytest.mark.parametrize("cin,cout,k,groups", [(16, 32, 3, 1), (64, 64, 1, 1), (32, 32, 3, 32),
                                               (64, 64, 3, 32), (3, 16, 7, 1)])
def test_conv_float_output_scales_as_modelled(cin, cout, k, groups):
    """Float output (no quantize after): the scale order is visible in about half the elements,
    so the model must pick the right one for this CPU and kernel kind; the other order fails."""
    args, b, geometry, acc, sx, sw = _conv_case(cin, cout, k, groups)
    y = torch.ops.onednn.qconv_pointwise.tensor(*args, b, *geometry, 1.0, 0, torch.float32,
                                                "none", [], "").numpy()
    kind = _kind(k, groups, cin)
    assert np.array_equal(_value(acc, sx, sw, b, kind, AMX), y)
    other = onednn.Scales(f32(sx) * sw, None) if onednn.scales(sx, sw, kind, AMX).first \
        is not None else onednn.Scales(sw, f32(sx))
    v_other = (acc if other.first is None else acc * other.first) \
        * other.channel.reshape(1, -1, 1, 1) + b.numpy().reshape(1, -1, 1, 1)
    assert (v_other != y).mean() > 0.05


def test_linear_scales_as_modelled():
    g = torch.Generator().manual_seed(0)
    m, k, n = 2, 512, 256
    sx, zx = float(f32(0.02)), 120
    qx = torch.randint(0, 256, (m, k), dtype=torch.uint8, generator=g)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    sw = (torch.rand(n, generator=g) * 0.01 + 0.001).float()
    b = torch.randn(n, generator=g).float()
    packed = torch.ops.onednn.qlinear_prepack(w, [m, k])
    y = torch.ops.onednn.qlinear_pointwise.tensor(
        qx, torch.tensor(sx), torch.tensor(zx, dtype=torch.int32), packed, sw,
        torch.zeros(n, dtype=torch.int64), b, 1.0, 0, torch.float32, "none", [None], "").numpy()
    acc = ((qx.double() - zx) @ w.double().T).numpy().astype(f32)
    assert np.array_equal(_value(acc, sx, sw.numpy(), b, onednn.LINEAR, AMX), y)


def test_hardswish_post_op_as_modelled():
    args, b, geometry, acc, sx, sw = _conv_case(16, 32, 3, 1)
    y = torch.ops.onednn.qconv_pointwise.tensor(*args, b, *geometry, 1.0, 0, torch.float32,
                                                "hardswish", [], "").numpy()
    v = _value(acc, sx, sw, b, onednn.CONV, AMX)
    gate = np.clip(v * f32(1.0 / 6.0) + f32(0.5), 0, 1)
    assert np.array_equal(v * gate, y)
    # PyTorch's own hardswish formula is another function of the same value
    assert (((v * np.clip(v + f32(3), 0, 6)) / f32(6)) != y).mean() > 0.05


def test_uint8_output_with_residual_as_modelled():
    """conv + add + relu to uint8 (the 'sum' post-op): fma of the residual's steps, the zero
    point added in float before rounding."""
    args, b, geometry, acc, sx, sw = _conv_case(32, 32, 3, 1, hw=28)
    v = _value(acc, sx, sw, b, onednn.CONV, AMX)
    so = float(f32((v.max() - v.min()) / 255))
    zo = int(round(-v.min() / so))
    g = torch.Generator().manual_seed(1)
    accum = torch.randint(0, 256, acc.shape, dtype=torch.uint8, generator=g).contiguous(
        memory_format=torch.channels_last)
    sa, za = float(f32(so * 0.7)), 128
    steps = accum.numpy().astype(np.float64) - za
    y = torch.ops.onednn.qconv2d_pointwise.binary_tensor(
        *args, accum.clone(), b, *geometry, so, zo, torch.uint8, sa, za, "sum", 1.0, "relu",
        [None], "").numpy()
    with_residual = (steps * np.float64(f32(sa)) + v.astype(np.float64)).astype(f32)
    shifted = (np.maximum(with_residual, 0) * f32(1.0 / so)).astype(f32) + f32(zo)
    assert np.array_equal(np.clip(np.rint(shifted), 0, 255), y)


@pytest.mark.parametrize("name,size", [("mobilenet_v3_small", 96), ("resnet18", 64)])
def test_zoo_models_bit_exact_with_torch_compile(name, size):
    """X86InductorQuantizer models compile under the inductor contract by default and equal
    torch.compile's float logits bit for bit (hardswish post-ops, squeeze-excite float values
    with two readers, residual sums to uint8 and to float, the float classifier)."""
    zm = zoo_pt2e.get(name, "x86", image_size=size)
    compiled = qcompile.compile(zm.quantized, zm.example_inputs(1), tune_logs=False)
    assert compiled.meta["numerics"] == "inductor"
    report = qcompile.verify(zm.quantized, compiled, zm.example_inputs(3))
    assert report["engine"] == "torch.compile", report
    assert report["bit_exact_fraction"] == 1.0, report
    eager = qcompile.verify(zm.quantized, compiled, zm.example_inputs(3), engine="pt2e")
    assert eager["engine"] == "pt2e" and eager["bit_exact_fraction"] < 1.0, eager


def _run_te(fn, values: np.ndarray) -> np.ndarray:
    """A float32 elementwise TIR expression `fn` over `values`, built for the host."""
    import tvm
    from tvm import te

    x = te.placeholder(values.shape, "float32", name="x")
    out = te.compute(values.shape, lambda *i: fn(x(*i)), name="out")
    lib = tvm.compile(te.create_prim_func([x, out]), target="llvm")
    result = tvm.runtime.tensor(np.zeros_like(values))
    lib(tvm.runtime.tensor(values), result)
    return result.numpy()


def test_swish_post_op_is_onednns_exp_and_logistic():
    """SiLU fused into a conv (oneDNN's 'swish' post-op) computes oneDNN's own exp and logistic:
    numerics.onednn's TIR versions give its outputs bit for bit, PyTorch's SiLU does not."""
    from qcompile.numerics.tir_ops import fence

    args, b, geometry, acc, sx, sw = _conv_case(16, 32, 3, 1, hw=28)
    out = {act: torch.ops.onednn.qconv_pointwise.tensor(
        *args, b, *geometry, 1.0, 0, torch.float32, act, [None], "").numpy()
        for act in ("none", "swish")}
    v = out["none"]
    ours = _run_te(lambda t: fence(t * onednn.logistic_onednn(t)), v)
    assert np.array_equal(ours, out["swish"])
    assert (torch.nn.functional.silu(torch.from_numpy(v)).numpy() != out["swish"]).mean() > 0.1


def test_exp_sleef_is_inductors_exp():
    """Inductor's generated code calls Sleef's expf_u10: tir_ops.exp_sleef equals it bit for
    bit over [-110, 110] (underflow and overflow included); PyTorch's eager exp differs."""
    from qcompile.numerics.tir_ops import exp_sleef

    x = np.random.default_rng(0).uniform(-110, 110, 200_000).astype(np.float32)
    inductor = torch.compile(lambda a: a.exp())(torch.from_numpy(x)).numpy()
    assert np.array_equal(_run_te(exp_sleef, x), inductor)


class _SqueezeExciteSiLU(torch.nn.Module):
    """EfficientNet's pattern: conv + SiLU, a squeeze-excite gate with SiLU and sigmoid."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3)
        self.fc1 = torch.nn.Conv2d(16, 8, 1)
        self.fc2 = torch.nn.Conv2d(8, 16, 1)
        self.c2 = torch.nn.Conv2d(16, 24, 1)

    def forward(self, x):
        y = torch.nn.functional.silu(self.c1(x))
        g = torch.sigmoid(self.fc2(torch.nn.functional.silu(self.fc1(y.mean((2, 3),
                                                                             keepdim=True)))))
        return self.c2(y * g)


def test_silu_and_sigmoid_bit_exact_with_torch_compile():
    """SiLU fused into convs (oneDNN's swish) and the gate's sigmoid in Inductor's C++ (Sleef's
    exp): equal to torch.compile's output bit for bit."""
    from qcompile.zoo.pt2e_quantize import quantize_pt2e

    g = torch.Generator().manual_seed(0)
    model = _SqueezeExciteSiLU().eval()
    calibration = [torch.randn(1, 3, 18, 18, generator=g) for _ in range(4)]
    gm = quantize_pt2e(model, calibration, "x86")
    compiled = qcompile.compile(gm, calibration[:1], tune_logs=False)
    report = qcompile.verify(gm, compiled, calibration)
    assert report["engine"] == "torch.compile" and report["bit_exact_fraction"] == 1.0, report
