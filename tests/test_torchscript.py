"""TorchScript models (torch.jit.save of traced or scripted quantized models) and modules fx
cannot trace: imported through the TorchScript graph into the same Q/DQ form."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qcompile
import qcompile.zoo as zoo
from qcompile.cli import main
from qcompile.models import load_torchscript

from helpers import inputs_like, quantize_eager, seeded


@pytest.fixture(scope="module")
def resnet():
    return zoo.get("resnet18", "fbgemm", image_size=32)


@pytest.mark.parametrize("how", ["trace", "script"])
def test_saved_resnet18_compiles_and_is_bit_exact(resnet, tmp_path, how):
    """Loaded under fbgemm (load_torchscript does that; PyTorch's default engine "x86" re-packs
    some convs for oneDNN, which computes other bits)."""
    x = resnet.example_inputs(1)[0]
    script = torch.jit.trace(resnet.quantized, x) if how == "trace" else torch.jit.script(
        resnet.quantized)
    path = tmp_path / f"r18_{how}.pt"
    torch.jit.save(script, str(path))
    loaded = load_torchscript(str(path))
    compiled = qcompile.compile(loaded, [x], tune_logs=False)
    # the same kernels as the fx import: one per conv (20) and the dense (layer1's two
    # same-shape convs no longer share one: the first reads the max pool's NCHW output, the
    # second a channel-blocked one)
    assert compiled.meta["kernels"]["tensorized"] == 21
    gen = torch.Generator().manual_seed(1234)  # off-distribution inputs too
    inputs = resnet.example_inputs(3, seed=3) + [torch.randn(x.shape, generator=gen)
                                                 for _ in range(3)]
    report = qcompile.verify(loaded, compiled, inputs)
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


def test_model_file_through_the_command_line(resnet, tmp_path, capsys):
    path = tmp_path / "r18.pt"
    torch.jit.save(torch.jit.trace(resnet.quantized, resnet.example_inputs(1)[0]), str(path))
    assert main(["compile", str(path), "--input-shape", "1,3,32,32", "-o",
                 str(tmp_path / "r18.so"), "--no-tune-logs"]) == 0
    assert (tmp_path / "r18.so").exists()
    assert main(["compile", str(path), "-o", str(tmp_path / "x.so")]) == 2
    assert "needs --input-shape" in capsys.readouterr().err
    assert main(["explain", str(path), "--input-shape", "1,3,32,32"]) == 2
    assert "TorchScript model hides them" in capsys.readouterr().err


def test_corrupt_or_truncated_file_is_a_clear_error(resnet, tmp_path):
    good = tmp_path / "good.pt"
    torch.jit.save(torch.jit.trace(resnet.quantized, resnet.example_inputs(1)[0]), str(good))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:4096])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model" * 100)
    for bad in (truncated, garbage):
        with pytest.raises(qcompile.QCompileError, match="cannot read .* as a TorchScript model"):
            load_torchscript(str(bad))
    with pytest.raises(qcompile.QCompileError, match="no such model file"):
        load_torchscript(str(tmp_path / "missing.pt"))


def test_float_torchscript_model_says_quantize_first():
    model = torch.jit.trace(nn.Sequential(nn.Conv2d(3, 4, 3)).eval(), torch.zeros(1, 3, 8, 8))
    with pytest.raises(qcompile.QCompileError, match="float model.*Quantize it first"):
        qcompile.compile(model, [torch.zeros(1, 3, 8, 8)])


def test_unsupported_torchscript_op_names_op_and_node():
    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = seeded(nn.Conv2d(3, 4, 3), 1)

        def forward(self, x):
            return F.leaky_relu(self.conv(x))  # an op qcompile does not know

    xs = inputs_like((1, 3, 8, 8), n=2)
    model = quantize_eager(Body(), xs)
    script = torch.jit.trace(model, xs[0])
    with pytest.raises(qcompile.QCompileError,
                       match=r"unsupported TorchScript op aten::leaky_relu at node %\S+ = "
                             r"aten::leaky_relu"):
        qcompile.compile(script, xs[:1])


def _convert_in_place(model, calibration):
    """Eager static quantization (fbgemm qconfig) of a model with its own stubs, which
    helpers.quantize_eager's wrapper would put before its data-dependent branch."""
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    torch.ao.quantization.prepare(model, inplace=True)
    for x in calibration:
        model(x)
    return torch.ao.quantization.convert(model, inplace=True)


def test_module_fx_cannot_trace_is_captured_with_jit_trace():
    class Branchy(nn.Module):
        """Python control flow on a tensor's value: torch.fx cannot trace it."""

        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.conv = seeded(nn.Conv2d(3, 8, 3), 2)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            if x.sum() > -1e9:  # always true; fx fails on the data-dependent branch
                x = self.quant(x)
            return self.dequant(self.conv(x))

    xs = inputs_like((1, 3, 10, 10), n=3)
    model = _convert_in_place(Branchy().eval(), xs)
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(model)
    compiled = qcompile.compile(model, xs[:1], tune_logs=False)
    report = qcompile.verify(model, compiled, xs)
    assert report["bit_exact_fraction"] == 1.0, report


@pytest.mark.parametrize("name,engine", [("mobilenet_v2", "qnnpack"), ("bert_ffn", "fbgemm")])
def test_traced_zoo_models_are_bit_exact(name, engine, tmp_path):
    """quantized::relu6 (MobileNetV2's ReLU6), linears on 3-d inputs (the FFN stack)."""
    from qcompile.engines import quantized_engine

    entry = zoo.get(name, engine, image_size=32)
    xs = entry.example_inputs(3)
    with quantized_engine(engine):
        torch.jit.save(torch.jit.trace(entry.quantized, xs[0]), str(tmp_path / "m.pt"))
    loaded = load_torchscript(str(tmp_path / "m.pt"), engine)
    compiled = qcompile.compile(loaded, xs[:1], numerics=engine, tune_logs=False)
    report = qcompile.verify(loaded, compiled, xs)
    assert report["bit_exact_fraction"] == 1.0 and report["max_abs_lsb"] == 0, report


def test_arithmetic_with_alpha_on_constants():
    """A traced graph adds constants with alpha (Hugging Face models compute position tables
    from buffers that way: `aten::add(buffer, buffer, alpha)`, evaluated at import); a failing
    op on such values is a QCompileError naming the op and the node, never a raw TypeError."""
    class Offsets(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.conv = seeded(nn.Conv2d(3, 4, 1), 5)
            self.dequant = torch.ao.quantization.DeQuantStub()
            self.register_buffer("base", torch.arange(4.0).reshape(1, 4, 1, 1))
            self.register_buffer("step", torch.full((1, 4, 1, 1), 0.25))

        def forward(self, x):
            if x.sum() > -1e9:  # fx cannot trace this: captured with jit.trace
                x = self.quant(x)
            shift = torch.sub(torch.add(self.base, self.step, alpha=2), self.step, alpha=3)
            return self.dequant(self.conv(x)) + shift

    xs = inputs_like((1, 3, 6, 6), n=2)
    model = _convert_in_place(Offsets().eval(), xs)
    compiled = qcompile.compile(model, xs[:1], tune_logs=False)
    report = qcompile.verify(model, compiled, xs)
    assert report["bit_exact_fraction"] == 1.0, report
