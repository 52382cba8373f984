"""Hugging Face encoders (`hf:NAME`): `transformers` models built from their published
configurations with seeded random weights (no hub access), quantized the way people quantize
them for CPU inference: `quantize_dynamic`, every nn.Linear int8, the rest float; or
statically, the exported model through torchao's PT2E quantizers (`--pt2e x86|xnnpack`).

Each entry is the library's own model class and forward (token ids and an attention mask in,
position and token-type ids from its buffers, SDPA attention, GELU, LayerNorm) under a head:
  hidden   the last hidden states (B, T, H)
  mean     a sentence embedding, the hidden states averaged over the unmasked tokens, as
           sentence-transformers' mean pooling does (B, H)
  classify the library's sequence-classification model's logits (B, labels)
The wrapper only picks the output tensor; compiling the library's model directly (its
ModelOutput dict traced) works as well.

transformers imports torchvision when it is installed: it is made importable beside the CPU
torch first (zoo.garden.import_torchvision).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import QCompileError
from . import ZooModel

# name -> (family, head, configuration overrides); families: bert, distilbert, roberta, xlmr
HF_MODELS = {
    "bert_base": ("bert", "hidden", {}),
    "bert_base_classify": ("bert", "classify", {"num_labels": 2}),
    "distilbert_base": ("distilbert", "hidden", {}),
    "distilbert_base_classify": ("distilbert", "classify", {"num_labels": 2}),
    "roberta_base": ("roberta", "hidden", {}),
    "xlm_roberta_base": ("xlmr", "hidden", {}),
    # all-MiniLM-L6-v2's shape: 6 BERT layers of 384, 12 heads; mean-pooled sentence embedding
    "minilm_l6_mean": ("bert", "mean", {"num_hidden_layers": 6, "hidden_size": 384,
                                        "num_attention_heads": 12, "intermediate_size": 1536}),
}
DEFAULT_SHAPE = (1, 128)  # (batch, tokens)
CALIBRATION_CALLS = 4  # batches a PT2E (static) quantization is calibrated on
# build(..., tiny=True): the same architecture, 2 narrow layers and a small vocabulary (tests)
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2,
        "intermediate_size": 128, "vocab_size": 1000}
# configuration names a family spells its own way (DistilBertConfig maps the others itself)
_RENAMED = {"distilbert": {"intermediate_size": "hidden_dim"}}
# the published base configurations the library's defaults do not already give
_FAMILIES = {
    "bert": ("BertConfig", "BertModel", "BertForSequenceClassification", {}),
    "distilbert": ("DistilBertConfig", "DistilBertModel", "DistilBertForSequenceClassification",
                   {}),
    "roberta": ("RobertaConfig", "RobertaModel", "RobertaForSequenceClassification",
                {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1,
                 "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
                 "layer_norm_eps": 1e-5}),
    "xlmr": ("XLMRobertaConfig", "XLMRobertaModel", "XLMRobertaForSequenceClassification",
             {"vocab_size": 250002, "max_position_embeddings": 514, "type_vocab_size": 1,
              "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5}),
}


def import_transformers():
    """The transformers module (torchvision made importable first when it is installed)."""
    if importlib.util.find_spec("transformers") is None:
        raise QCompileError("hf: models need transformers: pip install 'qcompile[hf]' "
                            "(or pip install transformers)")
    if importlib.util.find_spec("torchvision") is not None:
        from .garden import import_torchvision

        import_torchvision()
    # the targets' TVMScript intrinsics are parsed first: TVMScript's prim_func walks
    # inspect.stack(), which looks up every frame's module among sys.modules, and after
    # transformers' thousands of modules a first compile took 50 s instead of 10
    importlib.import_module("qcompile.schedules.targets")
    return importlib.import_module("transformers")


class Head(nn.Module):
    """A transformers model called with (input_ids, attention_mask), returning one tensor."""

    def __init__(self, model: nn.Module, head: str):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask)[0]
        if self.head != "mean":
            return out
        weights = mask.unsqueeze(-1).to(out.dtype)
        return (out * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def token_pairs(shape: tuple, n: int, seed: int, vocab: int) -> list:
    """n (ids, mask) pairs: random ids past the special tokens, each sentence padded at its
    end by 0..T/2 positions (mask 0), the first sentence of a batch never."""
    gen = torch.Generator().manual_seed(seed)
    batch, length = shape
    pairs = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (batch, length), generator=gen)
        mask = torch.ones(batch, length, dtype=torch.int64)
        for row in range(1, batch):
            pad = int(torch.randint(0, length // 2 + 1, (1,), generator=gen))
            mask[row, length - pad:] = 0
        pairs.append((ids, mask))
    return pairs


@functools.lru_cache(maxsize=None)
def build(name: str, input_shape: tuple | None = None, seed: int = 0, tiny: bool = False,
          pt2e: str | None = None):
    """`hf:NAME` as a zoo model: the float model, its int8 version (the same weights) and
    (ids, mask) inputs of `input_shape` (batch, tokens); `tiny`: see TINY.  The int8 version is
    `quantize_dynamic`'s, or with `pt2e` ("x86", "xnnpack") the exported model quantized
    statically with that torchao quantizer, calibrated on CALIBRATION_CALLS batches."""
    if name not in HF_MODELS:
        raise QCompileError(f"unknown hf model {name!r}; the hf models: {', '.join(HF_MODELS)}")
    shape = tuple(input_shape or DEFAULT_SHAPE)
    if len(shape) != 2:
        raise QCompileError(f"hf:{name} takes --input-shape BATCH,TOKENS, not {shape}")
    transformers = import_transformers()
    family, head, overrides = HF_MODELS[name]
    config_cls, model_cls, classify_cls, base = _FAMILIES[family]
    settings = {**base, **overrides, **(TINY if tiny else {})}
    renamed = _RENAMED.get(family, {})
    config = getattr(transformers, config_cls)(**{renamed.get(k, k): v
                                                   for k, v in settings.items()})
    config._attn_implementation = "sdpa"
    limit = getattr(config, "max_position_embeddings", 512) - (2 if family in ("roberta", "xlmr")
                                                               else 0)
    if shape[1] > limit:
        raise QCompileError(f"hf:{name} takes at most {limit} tokens, not {shape[1]}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if head == "classify":
            model = getattr(transformers, classify_cls)(config)
        else:  # without the pooler no head reads (DistilBERT has none)
            kwargs = {} if family == "distilbert" else {"add_pooling_layer": False}
            model = getattr(transformers, model_cls)(config, **kwargs)
    float_model = Head(model.eval(), head).eval()
    if pt2e is not None:
        from .pt2e_quantize import quantize_pt2e

        calibration = token_pairs(shape, CALIBRATION_CALLS, 10_000 + seed, config.vocab_size)
        try:
            quantized = quantize_pt2e(float_model, calibration, pt2e)
        except NotImplementedError as err:  # an observer torchao put on an integer tensor
            raise QCompileError(
                f"torchao's {pt2e} quantizer could not calibrate hf:{name}: {err} (it observes "
                "the integer position-id arithmetic of RoBERTa-style models); quantize it "
                "dynamically instead (hf:NAME without --pt2e)") from None
        return HfModel(f"hf:{name}", f"pt2e-{pt2e}", float_model, quantized, shape,
                       config.vocab_size)
    quantized = torch.ao.quantization.quantize_dynamic(float_model, {nn.Linear},
                                                       dtype=torch.qint8)
    return HfModel(f"hf:{name}", "fbgemm", float_model, quantized.eval(), shape,
                   config.vocab_size)


@dataclass
class HfModel(ZooModel):
    """A zoo model whose inputs are (token ids, attention mask) pairs."""

    vocab: int = 30522

    def example_inputs(self, n: int, seed: int = 1) -> list:
        """n (token ids, attention mask) pairs of `input_shape`, padded sentences among them."""
        return token_pairs(self.input_shape, n, seed, self.vocab)
