"""Hugging Face encoders (transformers), dynamically quantized, through jit.trace: every hf:
model compiles and agrees with PyTorch's int8 run; the graph ops their forward traces to
(attention masks built from index grids, position ids from cumsum, buffers gathered) each
import and compute what PyTorch computes."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn

import qcompile
from qcompile.errors import QCompileError
from qcompile.zoo import hf

from helpers import seeded

if importlib.util.find_spec("transformers") is None:
    pytest.skip("transformers is not installed (pip install -e '.[hf]')", allow_module_level=True)


def _sentence_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("name", list(hf.HF_MODELS))
def test_hf_encoder_compiles_and_agrees_with_pytorch_int8(name):
    """Each architecture and head, narrow (hf.TINY), batch 3 with padded sentences."""
    model = hf.build(name, (3, 16), tiny=True)
    inputs = model.example_inputs(2, seed=5)
    assert any(int(mask.sum()) < mask.numel() for _, mask in inputs)  # padding is exercised
    compiled = qcompile.compile(model.quantized, inputs[0], tune_logs=False)
    report = qcompile.verify(model.quantized, compiled, inputs, float_model=model.float_model)
    assert report["min_sample_cosine"] > 0.9999, report
    # quantization moved it from the float model as far as it moved PyTorch's int8 run
    assert abs(report["cosine_to_float"] - report["reference_cosine_to_float"]) < 1e-4, report


@pytest.mark.parametrize("name", ["bert_base", "distilbert_base_classify", "minilm_l6_mean"])
def test_hf_encoder_quantized_with_pt2e_agrees_with_its_program(name):
    """The static route: the exported model through X86InductorQuantizer (Q/DQ around its
    Linears and matmuls), compared with the eager PT2E program (the torch.compile reference
    is the default; checked by hand, it takes a minute a model)."""
    pytest.importorskip("torchao")
    model = hf.build(name, (2, 16), tiny=True, pt2e="x86")
    assert model.engine == "pt2e-x86"
    inputs = model.example_inputs(2, seed=5)
    compiled = qcompile.compile(model.quantized, inputs[0], tune_logs=False)
    report = qcompile.verify(model.quantized, compiled, inputs, engine="pt2e",
                             float_model=model.float_model)
    assert report["min_sample_cosine"] > 0.99999, report
    assert report["bit_exact_fraction"] > 0.1, report  # quantized steps agree, floats mostly


def test_roberta_under_pt2e_is_refused_with_the_way_out():
    pytest.importorskip("torchao")
    with pytest.raises(QCompileError, match="quantize it dynamically"):
        hf.build("roberta_base", (2, 16), tiny=True, pt2e="x86")


def test_a_library_model_returning_a_model_output_compiles():
    """The user's path: transformers' BertModel itself (its ModelOutput, a dict, traced with
    strict=False), quantize_dynamic, compiled on one batch; the compiled model returns the
    dict's tensors in order and honours the attention mask of later calls (the example's
    all-ones mask is not baked into the trace)."""
    transformers = hf.import_transformers()
    config = transformers.BertConfig(**hf.TINY)
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()  # two outputs: hidden states, pooled
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    ids = torch.randint(5, config.vocab_size, (2, 12))
    ones = torch.ones(2, 12, dtype=torch.int64)
    compiled = qcompile.compile(quantized, (ids, ones), tune_logs=False)
    padded = ones.clone()
    padded[1, 6:] = 0
    for mask in (ones, padded):
        got = compiled(ids, mask)
        with torch.no_grad():
            ref = quantized(input_ids=ids, attention_mask=mask)
        assert isinstance(got, tuple) and len(got) == 2
        for out, name in zip(got, ("last_hidden_state", "pooler_output")):
            assert _sentence_cosines(out, ref[name].numpy()).min() > 0.9999, name
    assert np.abs(compiled(ids, padded)[0][1] - compiled(ids, ones)[0][1]).max() > 1e-2


class _MaskOps(nn.Module):
    """What Hugging Face forwards trace to around their Linears: position ids from a cumsum of
    a comparison (RoBERTa), a buffer expanded and gathered by them, a mask indexed by index
    grids and combined with & / |, torch.where to an additive bias, sum and clamp (mean
    pooling)."""

    def __init__(self):
        super().__init__()
        self.fc = seeded(nn.Linear(8, 8), 3)
        self.register_buffer("types", torch.arange(16).remainder(3).reshape(1, 16))

    def forward(self, x, ids, mask):
        marked = ids.ne(1).int()
        positions = (torch.cumsum(marked, dim=1).type_as(marked) * marked).long() + 1
        types = torch.gather(self.types.expand(ids.shape[0], -1), 1, positions - 1)
        rows = torch.arange(ids.shape[0]).view(-1, 1)
        cols = torch.arange(ids.shape[1]).view(1, -1)
        keep = (mask.bool()[rows, cols] & (positions > 1)) | (types == 2)
        bias = torch.where(keep, torch.zeros(()), torch.finfo(torch.float32).min)
        count = mask.sum(1, keepdim=True).clamp(min=1)
        return (self.fc(x) + bias.unsqueeze(-1) + positions.unsqueeze(-1) * 0.5
                + count.unsqueeze(-1) + types.unsqueeze(-1))


def test_traced_mask_and_position_ops_compute_what_pytorch_does():
    model = torch.ao.quantization.quantize_dynamic(_MaskOps().eval(), {nn.Linear},
                                                   dtype=torch.qint8)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 8, generator=gen)
    ids = torch.randint(0, 4, (2, 16), generator=gen)
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 10:] = 0
    traced = torch.jit.trace(model, (x, ids, mask))
    compiled = qcompile.compile(traced, (x, ids, mask), tune_logs=False)
    ids2 = torch.randint(0, 4, (2, 16), generator=gen)  # other data through the same graph
    for i in (ids, ids2):
        with torch.no_grad():
            ref = model(x, i, mask).numpy()
        np.testing.assert_allclose(compiled(x, i, mask), ref, rtol=1e-6, atol=1e-4)


def test_an_unknown_hf_model_is_named_with_the_known_ones():
    with pytest.raises(QCompileError, match="minilm_l6_mean"):
        hf.build("bert_huge")
    with pytest.raises(QCompileError, match="BATCH,TOKENS"):
        hf.build("bert_base", (1, 3, 8))
