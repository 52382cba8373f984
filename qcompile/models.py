"""Where the commands' models come from: `zoo:NAME` (our zoo, quantized eagerly or with PT2E),
`garden:NAME` (torchvision's quantizable classifiers; with PT2E also the architectures of
zoo/garden.py's PT2E_GARDEN), `hf:NAME` (Hugging Face encoders, dynamically quantized), a
TorchScript file (torch.jit.save, .pt) or an exported PT2E
program (torch.export.save, .pt2).
"""

from __future__ import annotations

from .errors import QCompileError
from .numerics.contracts import EAGER, default_contract, get_contract


class FileModel:
    """A TorchScript file (torch.jit.save of a quantized model) and its input shape: what the
    commands need of a model, like a ZooModel."""

    def __init__(self, path: str, input_shape, engine: str):
        if input_shape is None:
            raise QCompileError(f"{path}: a model file needs --input-shape (e.g. 1,3,224,224)")
        self.input_shape = tuple(input_shape)
        self.quantized = load_exported(path) if path.endswith(".pt2") else load_torchscript(
            path, engine)
        self.float_model = None

    def example_inputs(self, n: int, seed: int = 1):
        """n seeded standard-normal inputs of the given shape."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        return [torch.randn(self.input_shape, generator=gen) for _ in range(n)]


def load_exported(path: str):
    """torch.export.load of a PT2E-quantized program (.pt2) -> its GraphModule."""
    import os

    import torch

    if not os.path.exists(path):
        raise QCompileError(f"no such model file: {path}")
    try:
        return torch.export.load(path).module()
    except Exception as err:  # noqa: BLE001 - corrupt, truncated or not an exported program
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise QCompileError(f"cannot read {path} as an exported program ({first}); qcompile "
                            "takes .pt2 files written by torch.export.save of a PT2E-quantized "
                            "model") from err


def load_torchscript(path: str, engine: str = "fbgemm"):
    """torch.jit.load under the quantized `engine`, with errors that say what is wrong.

    Loading re-packs every quantized weight for the engine active at that moment; PyTorch's
    default ("x86") picks oneDNN for some convolutions, whose results differ from fbgemm's
    (seen: 1-3 LSB on a ResNet-18's output), so the engine is set while loading."""
    import os

    import torch

    from .engines import quantized_engine

    if not os.path.exists(path):
        raise QCompileError(f"no such model file: {path}")
    try:
        with quantized_engine(engine):
            return torch.jit.load(path, map_location="cpu").eval()
    except Exception as err:  # noqa: BLE001 - corrupt, truncated or not TorchScript
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise QCompileError(f"cannot read {path} as a TorchScript model ({first}); qcompile "
                            "takes files written by torch.jit.save of a traced or scripted "
                            "quantized model") from err


def first_inputs(inputs: list) -> list:
    """The example inputs of one call: the first entry, unpacked when the model takes several
    (bert_encoder's (token ids, attention mask))."""
    first = inputs[0]
    return list(first) if isinstance(first, (tuple, list)) else [first]


def reference_engine(numerics: str | None) -> str:
    """The PyTorch engine a model is quantized and loaded on for `numerics` (its contract's
    reference engine; the default contract's when it has none or none is given)."""
    contract = get_contract(numerics) if numerics else default_contract(EAGER)
    return contract.reference.engine or default_contract(EAGER).reference.engine


def load_model(spec: str, numerics: str | None, image_size: int | None,
               engine: str | None = None, input_shape=None, pt2e: str | None = None):
    """`zoo:NAME` -> ZooModel (quantized eagerly, or with PT2E's `pt2e` quantizer);
    `garden:NAME` -> the torchvision model as a ZooModel; `hf:NAME` -> a transformers encoder
    (zoo.hf); a TorchScript (.pt) or
    exported-program (.pt2) file, with its input shape -> FileModel.  Eager models are
    quantized (or loaded) on `engine`, by default numerics' reference."""
    engine = engine or reference_engine(numerics)
    if spec.startswith("hf:"):
        from .zoo import hf

        return hf.build(spec[len("hf:"):], input_shape, pt2e=pt2e)
    if spec.startswith("garden:"):
        from .zoo import garden

        name = spec[len("garden:"):]
        if pt2e is not None:
            return garden.build_pt2e(name, pt2e, image_size=image_size)
        if name in garden.PT2E_GARDEN:
            raise QCompileError(f"garden:{name} has no eager-quantizable version: quantize it "
                                "the PT2E way, --pt2e x86 (or xnnpack)")
        return garden.build(name, image_size=image_size, engine=engine)
    if not spec.startswith("zoo:"):
        return FileModel(spec, input_shape, engine)
    from . import zoo

    try:
        if pt2e is not None:
            from .zoo import pt2e_quantize

            return pt2e_quantize.get(spec[4:], pt2e, image_size=image_size)
        return zoo.get(spec[4:], engine=engine, image_size=image_size)
    except ValueError as err:  # unknown name, engine or image size
        raise QCompileError(str(err)) from None
