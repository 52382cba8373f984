"""Zoo models quantized the PT2E way: torch.export, torchao prepare_pt2e / convert_pt2e.

torchao is an optional extra (`pip install -e .[pt2e]`); it brings no torch of its own.
Two quantizers: "x86" (X86InductorQuantizer: uint8 activations, per-channel int8 weights, conv
outputs fused into a following add; the classifier's output stays float) and "xnnpack"
(XNNPACKQuantizer, from torchao's testing package: int8 activations, every op's output
quantized).
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings

import torch

from ..errors import QCompileError

QUANTIZERS = ("x86", "xnnpack")


def _torchao():
    """Import torchao's PT2E API quietly (it logs about CUDA-only kernels it cannot load)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization.pt2e import quantize_pt2e
    except ImportError as err:
        raise QCompileError("PT2E quantization needs torchao: pip install 'qcompile[pt2e]' "
                            "(or pip install torchao; it does not pull another torch)") from err
    finally:
        logging.disable(previous)
    return quantize_pt2e


def make_quantizer(kind: str):
    """The torchao quantizer `kind` ("x86" or "xnnpack") with its default static config."""
    _torchao()
    if kind == "x86":
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

        return xiq.X86InductorQuantizer().set_global(
            xiq.get_default_x86_inductor_quantization_config())
    if kind == "xnnpack":
        from torchao.testing.pt2e import _xnnpack_quantizer as xq

        return xq.XNNPACKQuantizer().set_global(
            xq.get_symmetric_quantization_config(is_per_channel=True))
    raise QCompileError(f"unknown PT2E quantizer {kind!r}; choose one of {', '.join(QUANTIZERS)}")


def quantize_pt2e(float_model: torch.nn.Module, calibration: list,
                  quantizer: str = "x86") -> torch.fx.GraphModule:
    """Export, prepare, calibrate and convert a copy of `float_model` (eval mode).
    `calibration`: calls' inputs, each a tensor or a tuple of them (token ids and a mask)."""
    api = _torchao()
    model = copy.deepcopy(float_model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calls = [x if isinstance(x, tuple) else (x,) for x in calibration]
        exported = torch.export.export(model, calls[0]).module()
        prepared = api.prepare_pt2e(exported, make_quantizer(quantizer))
        for args in calls:
            prepared(*args)
        return api.convert_pt2e(prepared)


@functools.lru_cache(maxsize=None)
def get(name: str, quantizer: str = "x86", seed: int = 0, image_size: int | None = None):
    """Zoo model `name`, its float model quantized with PT2E (engine field: "pt2e-<quantizer>")."""
    from . import CALIBRATION_SAMPLES, ZooModel, _random_inputs, get as get_eager

    if quantizer not in QUANTIZERS:
        raise QCompileError(f"unknown PT2E quantizer {quantizer!r}; choose one of "
                            f"{', '.join(QUANTIZERS)}")
    base = get_eager(name, "fbgemm", seed, image_size)
    calibration = _random_inputs(base.input_shape, CALIBRATION_SAMPLES, seed=10_000 + seed)
    quantized = quantize_pt2e(base.float_model, calibration, quantizer)
    return ZooModel(name, f"pt2e-{quantizer}", base.float_model, quantized, base.input_shape)
