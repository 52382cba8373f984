"""Model zoo: our own model definitions plus their eager-mode static quantization (and, for
bert_ffn_dynamic, dynamic quantization).

Usage::

    zm = zoo.get("resnet18", engine="fbgemm", image_size=64)
    with qcompile.engines.quantized_engine(zm.engine):
        y = zm.quantized(zm.example_inputs(1)[0])
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.ao import quantization as tq

from .bert import BertFFN
from .encoder import Encoder, token_inputs
from ..engines import quantized_engine
from .common import damp_residual_branches, fit_head, init_weights, set_bn_stats
from .data import NUM_CLASSES, labelled_images
from .mobilenet import MobileNetV2, MobileNetV3Small
from .resnet import ResNet18

__all__ = ["ZOO_NAMES", "ENGINES", "ZooModel", "get", "float_tiny_model"]

ZOO_NAMES = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "bert_ffn", "bert_ffn_dynamic",
             "bert_encoder")
# dynamically quantized (quantize_dynamic): no calibration
_DYNAMIC_NAMES = ("bert_ffn_dynamic", "bert_encoder")
_ENCODER_SHAPE = (1, 32)  # (batch, tokens): int64 token ids and attention mask
# BERT-FFN models: their input is a hidden state, and `image_size` means nothing to them.
_BERT_NAMES = ("bert_ffn", "bert_ffn_dynamic", "bert_encoder")
ENGINES = ("fbgemm", "qnnpack")
CALIBRATION_SAMPLES = 8
BN_STAT_SAMPLES = 16
_BERT_SHAPE = (1, 128, 768)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread for a while (restored on exit).

    Building is dominated by small ops and observers; on a busy 2-core machine
    the default multi-threaded OpenMP pool made builds 5-20x slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# Residual branches end in a BatchNorm scaled by this (see common.damp_residual_branches):
# measured on resnet18 at 64 px, 16 inputs, it lifts int8-vs-float top-1 from 0.62 to 0.75 and
# the integer contract's cosine to fbgemm from 0.979 to 0.992.
RESIDUAL_GAIN = 0.3


# Images the CNN classifiers are fitted on (a linear probe; see data.py).
HEAD_FIT_SAMPLES = 200


def _random_inputs(shape: tuple, n: int, seed: int) -> list[torch.Tensor]:
    """n inputs of `shape` from a private, seeded generator: labelled synthetic images for the
    CNNs (data.labelled_images), standard-normal activations for bert_ffn."""
    if len(shape) == 4:
        return labelled_images(shape, n, seed)[0]
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n)]


@dataclass
class ZooModel:
    """A zoo model: the float original and its converted quantized counterpart."""

    name: str
    engine: str                   # "fbgemm" or "qnnpack"
    float_model: nn.Module        # eval mode, unfused, same weights as `quantized`
    quantized: nn.Module          # output of torch.ao.quantization.convert, eval mode
    input_shape: tuple            # e.g. (1, 3, 224, 224)

    def example_inputs(self, n: int, seed: int = 1) -> list:
        """n deterministic inputs of `input_shape`, distributed like the calibration data
        (bert_encoder: n (token ids, attention mask) pairs)."""
        if self.name == "bert_encoder":
            return token_inputs(self.input_shape, n, seed)
        return _random_inputs(self.input_shape, n, seed)


def _build_float(name: str, image_size: int) -> tuple[nn.Module, tuple]:
    """Construct and initialise (global-RNG seeded) the float model and its input shape."""
    if name == "bert_encoder":  # PyTorch's default initialisation (seeded)
        return Encoder().eval(), _ENCODER_SHAPE
    if name in _BERT_NAMES:
        model = BertFFN()
        init_weights(model)
        for block in model.blocks:  # fc2 feeds no ReLU: unit gain keeps the scale steady
            nn.init.kaiming_normal_(block.fc2.weight, nonlinearity="linear")
        return model.eval(), _BERT_SHAPE
    if name == "resnet18":
        model = ResNet18()
    elif name == "mobilenet_v2":
        model = MobileNetV2()
    else:
        model = MobileNetV3Small(image_size=image_size)
    shape = (1, 3, image_size, image_size)
    init_weights(model, smooth_depthwise=getattr(model, "SMOOTH_DEPTHWISE", False))
    stats_batch = torch.cat(_random_inputs(shape, BN_STAT_SAMPLES, seed=30_000))
    set_bn_stats(model, stats_batch)
    damp_residual_branches(model, RESIDUAL_GAIN)
    images, labels = labelled_images(shape, HEAD_FIT_SAMPLES, seed=40_000)
    fit_head(model, model.get_submodule(model.HEAD), torch.cat(images), labels, NUM_CLASSES)
    return model.eval(), shape


def quantize(float_model: nn.Module, fuse_groups: list[list[str]], engine: str,
             calibration: list[torch.Tensor]) -> nn.Module:
    """Eager-mode static quantization: fuse, prepare, calibrate, convert (on a copy)."""
    model = copy.deepcopy(float_model).eval()
    with quantized_engine(engine), torch.no_grad(), warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao; silence the noise.
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        tq.fuse_modules(model, fuse_groups, inplace=True)
        model.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(model, inplace=True)
        for x in calibration:
            model(x)
        tq.convert(model, inplace=True)
    return model.eval()


def quantize_dynamic(float_model: nn.Module, engine: str) -> nn.Module:
    """Dynamic quantization: every nn.Linear gets int8 weights (per tensor, the default dynamic
    qconfig) and chooses its input's qparams at run time; packed for `engine` (on a copy).
    QuantStub / DeQuantStub are left as they are: unconverted, they pass the float through."""
    model = copy.deepcopy(float_model).eval()
    with quantized_engine(engine), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        tq.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model.eval()


@functools.lru_cache(maxsize=None)
def _get_cached(name: str, engine: str, seed: int, image_size: int | None) -> ZooModel:
    with _single_thread():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            float_model, shape = _build_float(name, image_size or 224)
        if name in _DYNAMIC_NAMES:  # quantized at run time: no calibration
            quantized = quantize_dynamic(float_model, engine)
        else:
            calibration = _random_inputs(shape, CALIBRATION_SAMPLES, seed=10_000 + seed)
            quantized = quantize(float_model, float_model.fuse_groups(), engine, calibration)
    return ZooModel(name, engine, float_model, quantized, shape)


def get(name: str, engine: str = "fbgemm", seed: int = 0,
        image_size: int | None = None) -> ZooModel:
    """Build (or fetch from the in-process cache) zoo model `name`, quantized for `engine`.

    `image_size` overrides the 224x224 input of the CNNs; it is ignored for the BERT FFNs.
    The returned objects are shared between calls with the same arguments.
    """
    if name not in ZOO_NAMES:
        raise ValueError(f"unknown zoo model {name!r}; valid names: {', '.join(ZOO_NAMES)}")
    if engine not in ENGINES:
        raise ValueError(f"unknown quantization engine {engine!r}; valid: {', '.join(ENGINES)}")
    if image_size is not None and image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    if name in _BERT_NAMES or image_size == 224:
        image_size = None
    return _get_cached(name, engine, int(seed), image_size)


class _TinyCNN(nn.Module):
    """conv-bn-relu x2, global pool, linear: a small float-only model."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def float_tiny_model(seed: int = 0) -> nn.Module:
    """A small, unquantized float CNN (eval mode) taking (1, 3, 32, 32) inputs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _TinyCNN()
        init_weights(model)
    return model.eval()
