"""Dynamically quantized Linear (torch.ao.quantization.quantize_dynamic), bit for bit.

The compiled model chooses each input's qparams at run time, like PyTorch; every output is
compared with PyTorch's as float32 bit patterns, on inputs chosen to reach every branch of
PyTorch's ChooseQuantizationParams (all zeros, constants, one-signed ranges, scales below its
6.1e-5 threshold, huge ranges) as well as ordinary data.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.quantization as tq
import torch.nn as nn

import qcompile
from helpers import seeded
from qcompile.engines import quantized_engine

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

PER_TENSOR, PER_CHANNEL = tq.default_dynamic_qconfig, tq.per_channel_dynamic_qconfig


def dynamic(body: nn.Module, engine="fbgemm", qconfig=PER_TENSOR, fuse=None) -> nn.Module:
    """quantize_dynamic of a copy of `body` (its Linear and fused LinearReLU) on `engine`."""
    model = copy.deepcopy(body).eval()
    if fuse:
        model = tq.fuse_modules(model, fuse)
    with quantized_engine(engine):
        return tq.quantize_dynamic(model, {nn.Linear: qconfig, nni.LinearReLU: qconfig},
                                   dtype=torch.qint8)


def edge_inputs(shape, seed=0) -> dict[str, torch.Tensor]:
    """Inputs that take each branch of the run-time qparams choice."""
    g = torch.Generator().manual_seed(seed)

    def normal():
        return torch.randn(shape, generator=g)

    outlier = normal()
    outlier.view(-1)[3 % outlier.numel()] = 4e4
    return {
        "normal": normal(), "wide": normal() * 50, "zeros": torch.zeros(shape),
        "constant": torch.full(shape, 0.37), "negative_constant": torch.full(shape, -2.5),
        "positive": normal().abs() + 1, "negative": -normal().abs() * 3,
        "tiny": normal() * 1e-6,                   # scale below 6.1e-5: range stretched
        "tiny_positive": normal().abs() * 1e-7,    # ... with min 0
        "tiny_negative": -normal().abs() * 1e-7,   # ... with max 0
        "huge": normal() * 1e30, "outlier": outlier,
        "quarters": torch.round(normal() * 8) / 4,  # values on a grid: rounding ties
    }


def assert_bits_equal(model, compiled, inputs: dict, engine="fbgemm"):
    """Every output equal to PyTorch's, float32 bit for bit."""
    with quantized_engine(engine), torch.no_grad():
        for name, x in inputs.items():
            ref = model(x).numpy()
            got = compiled(x)
            got = got[0] if isinstance(got, tuple) else got
            assert got.dtype == np.float32 and got.shape == ref.shape, name
            differ = got.view(np.uint32) != ref.view(np.uint32)
            assert not differ.any(), (f"input {name}: {differ.mean():.3%} of outputs differ, "
                                      f"max abs error {np.abs(got - ref).max():.3g}")


def compile_fast(model, example, numerics="fbgemm"):
    return qcompile.compile(model, [example], numerics=numerics, tune_logs=False)


# (in features, out features, bias, weights, input shape, fused relu)
LINEARS = {
    "per_tensor_bias_3d": (37, 13, True, PER_TENSOR, (2, 5, 37), False),
    "per_channel_no_bias_2d": (7, 100, False, PER_CHANNEL, (3, 7), False),
    "per_channel_bias_relu_2d": (100, 7, True, PER_CHANNEL, (4, 100), True),
    "per_tensor_no_bias_relu_3d": (13, 13, False, PER_TENSOR, (1, 1, 13), True),
}


@pytest.mark.parametrize("name", sorted(LINEARS))
def test_dynamic_linear(name):
    k, n, bias, qconfig, shape, relu = LINEARS[name]
    layers = [seeded(nn.Linear(k, n, bias=bias), seed=len(name))] + ([nn.ReLU()] if relu else [])
    model = dynamic(nn.Sequential(*layers), qconfig=qconfig, fuse=[["0", "1"]] if relu else None)
    inputs = edge_inputs(shape)
    assert_bits_equal(model, compile_fast(model, inputs["normal"]), inputs)


def test_affine_weights():
    """Weight zero points other than 0 (an affine weight observer) take the shifted product."""
    qconfig = tq.QConfig(activation=tq.default_dynamic_quant_observer,
                         weight=tq.MinMaxObserver.with_args(dtype=torch.qint8,
                                                            qscheme=torch.per_tensor_affine))
    linear = seeded(nn.Linear(16, 9))
    with torch.no_grad():
        linear.weight.add_(0.5)  # one-sided weights: a zero point far from 0
    model = dynamic(nn.Sequential(linear), qconfig=qconfig)
    assert model[0].weight().q_zero_point() != 0
    inputs = edge_inputs((3, 16), seed=1)
    assert_bits_equal(model, compile_fast(model, inputs["normal"]), inputs)


class Chain(nn.Module):
    """Linear -> ReLU (a float module) -> Linear -> Linear: each linear re-chooses qparams."""

    def __init__(self):
        super().__init__()
        self.fc1, self.relu = seeded(nn.Linear(24, 40)), nn.ReLU()
        self.fc2, self.fc3 = seeded(nn.Linear(40, 24), 1), seeded(nn.Linear(24, 5), 2)

    def forward(self, x):
        return self.fc3(self.fc2(self.relu(self.fc1(x))))


def test_consecutive_dynamic_linears_with_float_relu():
    model = dynamic(Chain())
    inputs = edge_inputs((2, 6, 24), seed=2)
    compiled = compile_fast(model, inputs["normal"])
    lowered = compiled.integer_module["main"].script()
    assert lowered.count("choose_qparams") == 3  # one run-time choice per linear
    assert_bits_equal(model, compiled, inputs)


class Heads(nn.Module):
    """Three linears reading one tensor (attention's Q, K and V), summed."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (seeded(nn.Linear(24, 16), s) for s in (3, 4, 5))

    def forward(self, x):
        return self.q(x) + self.k(x) * self.v(x)


def test_linears_reading_one_tensor_quantize_it_once():
    model = dynamic(Heads())
    inputs = edge_inputs((2, 6, 24), seed=3)
    compiled = compile_fast(model, inputs["normal"])
    lowered = compiled.integer_module["main"].script()
    assert lowered.count("choose_qparams") == 1 and lowered.count("quantize_dynamic") == 1
    assert_bits_equal(model, compiled, inputs)


def test_old_module_version_does_not_reduce_range():
    """Modules saved before version 4 call PyTorch's op without reduce_range: [0, 255]."""
    model = dynamic(nn.Sequential(seeded(nn.Linear(20, 11))))
    model[0].version = 3
    inputs = edge_inputs((4, 20), seed=3)
    assert_bits_equal(model, compile_fast(model, inputs["normal"]), inputs)


def test_qnnpack_contract():
    """qnnpack ignores reduce_range ([0, 255]) and adds the bias unfused."""
    body = nn.Sequential(seeded(nn.Linear(30, 17)), nn.ReLU(), seeded(nn.Linear(17, 6), 1))
    with quantized_engine("qnnpack"):
        model = tq.quantize_dynamic(copy.deepcopy(body).eval(),
                                    {"0": PER_CHANNEL, "2": PER_TENSOR}, dtype=torch.qint8)
    inputs = edge_inputs((2, 3, 30), seed=4)
    compiled = compile_fast(model, inputs["normal"], numerics="qnnpack")
    assert_bits_equal(model, compiled, inputs, engine="qnnpack")


def test_torchscript_traced_and_scripted():
    model = dynamic(nn.Sequential(seeded(nn.Linear(12, 8)), nn.ReLU(), seeded(nn.Linear(8, 3))),
                    fuse=[["0", "1"]])
    inputs = edge_inputs((2, 12), seed=5)
    with quantized_engine("fbgemm"):
        traced = torch.jit.trace(model, inputs["normal"])
        scripted = torch.jit.script(model)
    compiled = compile_fast(traced, inputs["normal"])
    assert_bits_equal(traced, compiled, inputs)
    assert_bits_equal(scripted, compile_fast(scripted, inputs["normal"]), {"n": inputs["normal"]})


def test_integer_contract_is_refused_naming_the_module():
    model = dynamic(Chain())
    with pytest.raises(qcompile.QCompileError) as err:
        qcompile.compile(model, [torch.randn(2, 24)], numerics="integer", tune_logs=False)
    message = str(err.value)
    assert "'fc1'" in message and "run time" in message
    assert "fbgemm" in message and "qnnpack" in message


def test_float16_dynamic_is_refused_naming_the_op():
    model = copy.deepcopy(nn.Sequential(seeded(nn.Linear(8, 4)))).eval()
    model = tq.quantize_dynamic(model, {nn.Linear}, dtype=torch.float16)
    with pytest.raises(qcompile.QCompileError, match="DynamicQuantizedLinear '0'.*float16"):
        qcompile.compile(model, [torch.randn(2, 8)], tune_logs=False)


def test_rank_one_input_is_refused():
    model = dynamic(nn.Sequential(seeded(nn.Linear(8, 4))))
    with pytest.raises(qcompile.QCompileError, match="rank 1"):
        qcompile.compile(model, [torch.randn(8)], tune_logs=False)


def test_comparison_has_teeth_unfused_bias(monkeypatch):
    """The same kernels with fbgemm's range but the bias added after a rounded product (the
    qnnpack epilogue) must be caught: fbgemm fuses that add into one FMA."""
    import dataclasses

    from qcompile.numerics import contracts

    model = dynamic(nn.Sequential(seeded(nn.Linear(40, 32))))
    x = edge_inputs((8, 40), seed=6)["wide"]
    qnnpack = contracts.get_contract("qnnpack")
    reduced = dataclasses.replace(qnnpack, dynamic=dataclasses.replace(qnnpack.dynamic,
                                                                       reduce_range=True))
    monkeypatch.setitem(contracts._REGISTRY, "qnnpack", reduced)
    unfused = compile_fast(model, x, numerics="qnnpack")
    with quantized_engine("fbgemm"), torch.no_grad():
        ref = model(x).numpy()
    differ = unfused(x).view(np.uint32) != ref.view(np.uint32)
    assert 0.02 < differ.mean() < 0.9, differ.mean()  # close, but not the same bits


def test_zoo_bert_ffn_dynamic():
    """768-wide hidden states, 128 tokens, 4 blocks: fc1 -> float ReLU -> fc2, each linear
    dynamically quantized; the u8 x i8 GEMMs are the packed, tensorized dense kernels."""
    from qcompile import zoo

    entry = zoo.get("bert_ffn_dynamic")
    inputs = entry.example_inputs(2, seed=8)
    compiled = qcompile.compile(entry.quantized, inputs[:1], numerics="fbgemm", tune_logs=False)
    kernels = compiled.meta["kernels"]  # fc1 and fc2 shapes (shared by blocks), VNNI or AMX
    assert kernels["tensorized"] + kernels["amx"] == 2, kernels
    report = qcompile.verify(entry.quantized, compiled, inputs)
    assert report["bit_exact_fraction"] == 1.0 and report["lsb"] is None, report
    assert report["unit"] == "float32 ulp" and "bit patterns" in report["measured"]
    assert report["max_abs_error"] == report["max_rel_error"] == 0.0


def test_float_report_counts_bit_patterns_and_relative_error():
    from qcompile.fidelity.report import compare

    ref = np.array([0.0, 1.0, 2.0, -4.0], np.float32)
    out = np.array([-0.0, 1.0, np.nextafter(np.float32(2), np.float32(3)), -4.5], np.float32)
    report = compare(ref, out, None)
    assert report["bit_exact_fraction"] == 0.25  # -0.0 is not 0.0 bit for bit
    assert report["max_rel_error"] == 0.125 and report["max_abs_error"] == 0.5
    assert report["lsb_histogram"][1] == 1  # the neighbouring float: 1 ULP


def test_explain_says_dynamic_layers_have_no_compile_time_scales():
    from qcompile.explain_layers import explain

    with pytest.raises(qcompile.QCompileError, match="'fc1'.*dynamically quantized"):
        explain(dynamic(Chain()), [torch.randn(2, 24)])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fbgemm", "x86", "qnnpack"])
def test_random_shapes_and_ranges(engine):
    """12 random linears (1-257 inputs, 1-130 outputs, bias or not, fused ReLU or not, per
    tensor or per channel), each on 60 draws of every edge input, scaled by 1e-8..1e8 and
    shifted: every output bit for bit.  The x86 engine runs dynamic linear on fbgemm."""
    numerics = "qnnpack" if engine == "qnnpack" else "fbgemm"
    rng = np.random.default_rng(0)
    for case in range(12):
        k = int(rng.choice([1, 3, 5, 16, 31, 64, 257]))
        n = int(rng.choice([1, 2, 9, 16, 33, 130]))
        relu, bias = case % 3 == 0, case % 4 != 1
        layers = [seeded(nn.Linear(k, n, bias=bias), seed=case)] + ([nn.ReLU()] if relu else [])
        model = dynamic(nn.Sequential(*layers), engine=engine,
                        qconfig=PER_CHANNEL if case % 2 else PER_TENSOR,
                        fuse=[["0", "1"]] if relu else None)
        shape = (int(rng.integers(1, 7)), k) if case % 2 else (2, int(rng.integers(1, 5)), k)
        compiled = compile_fast(model, torch.zeros(shape), numerics=numerics)
        for draw in range(60):
            inputs = edge_inputs(shape, seed=1000 * case + draw)
            scale = float(10.0 ** rng.uniform(-8, 8))
            shift = float(rng.normal()) if draw % 2 else 0.0
            inputs = {name: x * (scale if name == "normal" else 1.0) + shift
                      for name, x in inputs.items()}
            assert_bits_equal(model, compiled, inputs, engine=engine)


def test_min_sample_cosine_is_the_worst_sentence_of_any_call():
    from qcompile.fidelity.report import min_sample_cosine

    ref = np.ones((2, 3, 4, 5), np.float32)  # 2 calls, batch 3, 4 tokens x 5 features
    out = ref.copy()
    out[1, 2] *= -1  # one sentence of the second call reversed
    assert min_sample_cosine(ref, ref) == pytest.approx(1.0)
    assert min_sample_cosine(ref, out) == pytest.approx(-1.0)
    assert min_sample_cosine(ref[:, 0, 0], out[:, 0, 0]) == pytest.approx(1.0)  # no batch axis
