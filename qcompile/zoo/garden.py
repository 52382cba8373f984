"""The model garden: torchvision's quantizable classifiers (`torchvision.models.quantization`),
models nobody here wrote or tuned for, built with random weights and quantized with their own
`fuse_model()` and the fbgemm qconfig, calibrated on 8 inputs.

torchvision is an optional extra (`pip install -e .[garden]`, installed with --no-deps so pip
keeps the pinned CPU torch).  PyPI's torchvision 0.28 is built against CUDA torch: beside the
CPU torch its C++ ops do not load, and `import torchvision` then fails registering fake kernels
for two of them (`operator torchvision::nms does not exist`).  The classifiers need none of its
C++ ops, so `import_torchvision` declares those two operators' schemas (no kernels) and imports
it; with a torchvision whose C++ ops load, it imports it as it is.
"""

from __future__ import annotations

import functools
import importlib
import sys

from ..errors import QCompileError

# name -> native input size (inception_v3 takes 299 px, the others 224)
GARDEN = {
    "googlenet": 224, "inception_v3": 299, "mobilenet_v2": 224, "mobilenet_v3_large": 224,
    "resnet18": 224, "resnet50": 224, "resnext101_32x8d": 224, "resnext101_64x4d": 224,
    "shufflenet_v2_x0_5": 224, "shufflenet_v2_x1_0": 224, "shufflenet_v2_x1_5": 224,
    "shufflenet_v2_x2_0": 224,
}
CALIBRATION_SAMPLES = 8
# the ops torchvision/_meta_registrations.py registers fake kernels for whether or not its C++
# extension loaded, with the schemas its C++ code declares
_FAKE_REGISTERED = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


@functools.lru_cache(maxsize=None)
def import_torchvision():
    """The torchvision module, importable beside the CPU torch (see the module docstring)."""
    if importlib.util.find_spec("torchvision") is None:
        raise QCompileError("the model garden needs torchvision: pip install --no-deps "
                            "torchvision==0.28.0 pillow (or pip install -e '.[garden]' after "
                            "make setup; --no-deps keeps the CPU torch)")
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import's half-initialized modules
    for op, schema in _FAKE_REGISTERED.items():
        try:
            torch.library.define(f"torchvision::{op}", schema)
        except RuntimeError:  # declared already (by an earlier attempt or a loaded extension)
            pass
    return importlib.import_module("torchvision")


def _constructor_kwargs(name: str) -> dict:
    """torchvision's GoogLeNet and Inception-v3 without their training-only auxiliary heads
    (and with their own initialisation, which they otherwise warn about)."""
    return {"aux_logits": False, "init_weights": True} if name in (
        "googlenet", "inception_v3") else {}


@functools.lru_cache(maxsize=None)
def build(name: str, image_size: int | None = None, engine: str = "fbgemm", seed: int = 0):
    """Garden model `name` as a ZooModel: random (seeded) weights, its own fuse_model(), the
    engine's default qconfig, calibrated on CALIBRATION_SAMPLES synthetic images (shared
    between calls with the same arguments)."""
    if name not in GARDEN:
        raise QCompileError(f"unknown garden model {name!r}; the garden: {', '.join(GARDEN)}")
    import torch
    from torch.ao import quantization as tq

    from . import ZooModel, _random_inputs, _single_thread
    from ..engines import quantized_engine

    import_torchvision()
    quantization = importlib.import_module("torchvision.models.quantization")
    size = image_size or GARDEN[name]
    shape = (1, 3, size, size)
    with _single_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kwargs = _constructor_kwargs(name)
        float_model = getattr(quantization, name)(weights=None, quantize=False, **kwargs).eval()
        model = getattr(quantization, name)(weights=None, quantize=False, **kwargs).eval()
        model.load_state_dict(float_model.state_dict())
        calibration = _random_inputs(shape, CALIBRATION_SAMPLES, seed=10_000 + seed)
        with quantized_engine(engine), torch.no_grad():
            model.fuse_model()
            model.qconfig = tq.get_default_qconfig(engine)
            tq.prepare(model, inplace=True)
            for x in calibration:
                model(x)
            tq.convert(model, inplace=True)
    return ZooModel(f"garden:{name}", engine, float_model, model.eval(), shape)


# Architectures from public model libraries that have no eager-quantizable version, for the PT2E
# path (torch.export, torchao prepare_pt2e / convert_pt2e): name -> (library, constructor,
# native input size).  Every GARDEN classifier can be quantized this way too, from torchvision's
# float model of the same name.  "vit_tiny" is torchvision's VisionTransformer at DeiT-Tiny's
# width (192, 3 heads) with 4 of its 12 layers (compile and calibration stay short).
PT2E_GARDEN = {
    "efficientnet_b0": ("torchvision", "efficientnet_b0", 224),
    "convnext_tiny": ("torchvision", "convnext_tiny", 224),
    "regnet_y_400mf": ("torchvision", "regnet_y_400mf", 224),
    "vit_tiny": ("torchvision", "vit_tiny", 224),
    "mobilevit_xxs": ("timm", "mobilevit_xxs", 256),
    "resnet26d": ("timm", "resnet26d", 224),
}


def pt2e_names() -> list[str]:
    """Every name `build_pt2e` takes: the PT2E-only architectures, then the GARDEN classifiers."""
    return list(PT2E_GARDEN) + list(GARDEN)


def _architecture(name: str) -> tuple[str, str, int]:
    """(library, constructor, native input size) of a name `build_pt2e` takes."""
    return PT2E_GARDEN.get(name) or ("torchvision", name, GARDEN[name])


def _float_architecture(name: str, image_size: int):
    """The float model `name` with PyTorch's (seeded) initialisation, eval mode."""
    library, constructor, _ = _architecture(name)
    if library == "timm":
        if importlib.util.find_spec("torchvision") is not None:
            import_torchvision()  # timm imports it: made importable beside the CPU torch first
        try:
            timm = importlib.import_module("timm")
        except ImportError as err:
            raise QCompileError(f"garden:{name} comes from timm: pip install 'qcompile[garden]' "
                                "(or pip install timm)") from err
        return timm.create_model(constructor, pretrained=False)
    models = import_torchvision().models
    if constructor == "vit_tiny":
        return models.VisionTransformer(image_size=image_size, patch_size=16, num_layers=4,
                                        num_heads=3, hidden_dim=192, mlp_dim=768)
    return getattr(models, constructor)(weights=None, **_constructor_kwargs(name))


def _give_zero_layers_default_weights(model) -> None:
    """Layers initialised to zero (torchvision's ViT head) get PyTorch's default
    initialisation, so the output depends on the input."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if (isinstance(weight, torch.nn.Parameter) and hasattr(module, "reset_parameters")
                    and weight.numel() > 1 and not weight.any()):
                module.reset_parameters()


@functools.lru_cache(maxsize=None)
def build_pt2e(name: str, quantizer: str = "x86", image_size: int | None = None, seed: int = 0):
    """Garden model `name` (PT2E_GARDEN or GARDEN) quantized the PT2E way with torchao's
    `quantizer` ("x86" or "xnnpack"), as a ZooModel (engine "pt2e-<quantizer>"): seeded
    weights, BatchNorm statistics measured on synthetic images (common.set_bn_stats),
    calibrated on CALIBRATION_SAMPLES of them."""
    if name not in PT2E_GARDEN and name not in GARDEN:
        raise QCompileError(f"unknown garden model {name!r}; PT2E quantizes any of "
                            f"{', '.join(pt2e_names())}")
    import torch

    from . import BN_STAT_SAMPLES, ZooModel, _random_inputs, _single_thread
    from .common import set_bn_stats
    from .pt2e_quantize import quantize_pt2e

    size = image_size or _architecture(name)[2]
    shape = (1, 3, size, size)
    with _single_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        float_model = _float_architecture(name, size)
        _give_zero_layers_default_weights(float_model)
        set_bn_stats(float_model, torch.cat(_random_inputs(shape, BN_STAT_SAMPLES, seed=30_000)))
        calibration = _random_inputs(shape, CALIBRATION_SAMPLES, seed=10_000 + seed)
        quantized = quantize_pt2e(float_model.eval(), calibration, quantizer)
    return ZooModel(f"garden:{name}", f"pt2e-{quantizer}", float_model, quantized, shape)
