"""The model garden (qcompile/zoo/garden.py): torchvision's quantizable classifiers with random
weights, each quantized with its own fuse_model() and the fbgemm qconfig, compiled with the
default schedules and compared with PyTorch's fbgemm engine.

One small model (ShuffleNet: chunk, size arithmetic, the channel shuffle's view/transpose,
a quantized mean) in the default run; the whole garden at native sizes behind the `garden`
marker (make test-garden)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

import pytest

import qcompile
from qcompile.cli import main
from qcompile.zoo import garden


def test_torchvision_imports_beside_the_cpu_torch():
    """In a fresh process: the adapter imports torchvision, whose C++ ops may not load."""
    code = ("from qcompile.zoo.garden import import_torchvision; tv = import_torchvision(); "
            "from torchvision.models import quantization as q; "
            "print(type(q.shufflenet_v2_x0_5(weights=None, quantize=False)).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "QuantizableShuffleNetV2" in done.stdout


def test_a_timm_model_builds_first_in_a_fresh_process():
    """timm imports torchvision: a timm garden model built before any torchvision one (what
    `qcompile verify garden:mobilevit_xxs --pt2e x86` does) must not die on its C++ ops."""
    if importlib.util.find_spec("timm") is None:  # (importing it here would import torchvision)
        pytest.skip("timm is not installed")
    code = ("from qcompile.zoo.garden import _float_architecture; "
            "print(type(_float_architecture('resnet26d', 64)).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ResNet" in done.stdout


def test_a_small_garden_model_is_bit_exact(capsys):
    entry = garden.build("shufflenet_v2_x0_5", image_size=64)
    compiled = qcompile.compile(entry.quantized, entry.example_inputs(1), tune_logs=False)
    report = qcompile.verify(entry.quantized, compiled, entry.example_inputs(3, seed=5))
    assert report["bit_exact_fraction"] == 1.0, report
    assert compiled.meta["kernels"]["tensorized"] > 0
    assert main(["garden", "shufflenet_v2_x0_5", "--image-size", "64", "--runs", "0",
                 "--inputs", "2"]) == 0
    table = capsys.readouterr().out
    assert "garden:shufflenet_v2_x0_5" in table and "1.000000" in table


def test_an_unknown_garden_model_names_the_garden():
    with pytest.raises(qcompile.QCompileError, match="resnext101_32x8d"):
        garden.build("resnet1000")


@pytest.mark.garden
@pytest.mark.parametrize("name", sorted(garden.GARDEN))
def test_every_garden_model_compiles_and_is_bit_exact(name):
    """Compile times are printed, not asserted (timings are never a test's business:
    `qcompile garden` reports them)."""
    entry = garden.build(name)
    start = time.perf_counter()
    compiled = qcompile.compile(entry.quantized, entry.example_inputs(1), tune_logs=False)
    print(f"{name}: compiled in {time.perf_counter() - start:.1f} s")
    report = qcompile.verify(entry.quantized, compiled, entry.example_inputs(4, seed=1234))
    assert report["bit_exact_fraction"] >= 0.999, report


def test_pt2e_architectures_with_attention_and_silu(capsys):
    """The PT2E garden's attention and SiLU models at a small size: they compile and agree
    with the PT2E program (top-1 over 4 inputs, cosine), and `qcompile garden --pt2e` prints
    their rows."""
    for name, size in (("vit_tiny", 64), ("efficientnet_b0", 64)):
        entry = garden.build_pt2e(name, "x86", image_size=size)
        compiled = qcompile.compile(entry.quantized, entry.example_inputs(1), tune_logs=False)
        report = qcompile.verify(entry.quantized, compiled, entry.example_inputs(4, seed=5))
        assert report["top1_agreement"] == 1.0 and report["cosine"] > 0.999, (name, report)
    assert main(["garden", "--pt2e", "x86", "vit_tiny", "--image-size", "64", "--runs", "0",
                 "--inputs", "2"]) == 0
    assert "garden:vit_tiny" in capsys.readouterr().out


def test_a_pt2e_only_architecture_asks_for_pt2e():
    from qcompile.models import load_model

    with pytest.raises(qcompile.QCompileError, match="--pt2e x86"):
        load_model("garden:convnext_tiny", None, None)


@pytest.mark.garden
@pytest.mark.parametrize("name", sorted(garden.PT2E_GARDEN))
@pytest.mark.parametrize("quantizer", ["x86", "xnnpack"])
def test_every_pt2e_architecture_compiles_and_agrees(name, quantizer):
    """EfficientNet, ConvNeXt, RegNet, ViT, MobileViT, ResNet-D at their native sizes under
    both quantizers.  Against the eager PT2E program (oneDNN's float convs, PyTorch's float
    islands) differences grow through deep random-weight nets; the bar is the cosine."""
    entry = garden.build_pt2e(name, quantizer)
    start = time.perf_counter()
    compiled = qcompile.compile(entry.quantized, entry.example_inputs(1), tune_logs=False)
    print(f"{name} ({quantizer}): compiled in {time.perf_counter() - start:.1f} s")
    report = qcompile.verify(entry.quantized, compiled, entry.example_inputs(4, seed=1234))
    assert report["cosine"] > 0.998, report
