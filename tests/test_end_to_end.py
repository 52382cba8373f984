"""What the user sees: zoo models quantized, compiled, exported as .so, run, compared to PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import qcompile
from qcompile import zoo
from qcompile.engines import quantized_engine

SMALL = {"resnet18": 64, "mobilenet_v2": 64, "mobilenet_v3_small": 64, "bert_ffn": None}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_zoo_fbgemm_bit_exact(name):
    entry = zoo.get(name, image_size=SMALL[name])
    inputs = entry.example_inputs(3, seed=7)
    compiled = qcompile.compile(entry.quantized, inputs[:1], numerics="fbgemm")
    report = qcompile.verify(entry.quantized, compiled, inputs)
    assert report["bit_exact_fraction"] == 1.0, report
    assert report["max_abs_lsb"] == 0


def test_export_runs_in_stock_tvm_runtime(tmp_path):
    entry = zoo.get("resnet18", image_size=64)
    x = entry.example_inputs(1, seed=3)[0]
    compiled = qcompile.compile(entry.quantized, [x])
    path = compiled.export(str(tmp_path / "resnet18.so"))
    vm = relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())
    stock = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    with quantized_engine("fbgemm"), torch.no_grad():
        ref = entry.quantized(x).numpy()
    np.testing.assert_array_equal(stock, ref)
    np.testing.assert_array_equal(qcompile.load(path)(x), ref)


def test_integer_contract_is_within_one_step_per_layer():
    """Integer requantize differs from fbgemm's float one only by rounding: <= 1 LSB a layer."""
    from helpers import inputs_like, quantize_eager, seeded

    xs = inputs_like((1, 8, 12, 12), n=4, scale=2.0)
    model = quantize_eager(torch.nn.Sequential(seeded(torch.nn.Conv2d(8, 16, 3, padding=1))), xs)
    compiled = qcompile.compile(model, xs[:1], numerics="integer")
    report = qcompile.verify(model, compiled, xs, engine="fbgemm")
    assert report["max_abs_lsb"] <= 1, report
    assert report["bit_exact_fraction"] > 0.98, report


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_integer_contract_on_a_whole_model(name):
    entry = zoo.get(name, image_size=64)
    inputs = entry.example_inputs(16, seed=11)
    compiled = qcompile.compile(entry.quantized, inputs[:1], numerics="integer")
    report = qcompile.verify(entry.quantized, compiled, inputs)
    assert report["top1_agreement"] >= 0.99, report
    assert report["cosine"] > 0.999, report


def test_qnnpack_contract_on_qnnpack_model():
    entry = zoo.get("resnet18", engine="qnnpack", image_size=64)
    inputs = entry.example_inputs(3, seed=5)
    compiled = qcompile.compile(entry.quantized, inputs[:1], numerics="qnnpack")
    report = qcompile.verify(entry.quantized, compiled, inputs, engine="qnnpack")
    assert report["bit_exact_fraction"] >= 0.999, report
