"""Transformer blocks: a dynamically quantized encoder whose float islands (token embeddings,
LayerNorm, attention with a padding mask, softmax, GELU) compile as ordinary Relax float ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qcompile
from qcompile import zoo
from qcompile.zoo.encoder import Encoder, token_inputs

from helpers import seeded


def _dynamic(model):
    return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


@pytest.fixture(scope="module")
def encoder():
    zm = zoo.get("bert_encoder")
    inputs = zm.example_inputs(4)
    return zm, inputs, qcompile.compile(zm.quantized, list(inputs[0]), tune_logs=False)


def test_zoo_encoder_against_int8_and_float(encoder):
    """Not bit-exact (TVM's LayerNorm, softmax and erf round differently from PyTorch's, and a
    dynamic linear's scale follows its input's extreme value), but much closer to PyTorch's int8
    run than quantization is to the float model, and as close to the float model as it."""
    zm, inputs, compiled = encoder
    assert compiled.meta["input_dtypes"] == ["int64", "int64"]
    report = qcompile.verify(zm.quantized, compiled, inputs, float_model=zm.float_model)
    assert report["unit"] == "float32 ulp"
    assert report["cosine"] > 0.99999, report
    assert abs(report["cosine_to_float"] - report["reference_cosine_to_float"]) < 1e-4, report
    assert 1 - report["cosine"] < 0.2 * (1 - report["reference_cosine_to_float"]), report


def test_padding_mask_has_pytorchs_effect(encoder):
    """Masking the last 5 tokens changes the outputs (every position's: a dynamic linear's
    scale is chosen over the whole tensor, padding included) the way it changes PyTorch's."""
    zm, inputs, compiled = encoder
    ids, full = inputs[0]
    full = torch.ones_like(full)
    masked = full.clone()
    masked[:, -5:] = 0
    with torch.no_grad():
        ref_delta = zm.quantized(ids, masked).numpy() - zm.quantized(ids, full).numpy()
    delta = compiled(ids, masked) - compiled(ids, full)
    assert np.abs(delta[:, :-5]).max() > 0.01  # the mask reaches the real positions
    cos = float((ref_delta * delta).sum() / np.linalg.norm(ref_delta) / np.linalg.norm(delta))
    assert cos > 0.95, cos  # measured 0.987: the rest is both runs' own rounding noise


def test_wrong_input_dtype_is_refused(encoder):
    _, inputs, compiled = encoder
    ids, mask = inputs[0]
    with pytest.raises(qcompile.QCompileError, match="expected int64 of shape"):
        compiled(ids.to(torch.float32), mask)


def test_out_of_range_token_id_does_not_crash(encoder):
    """PyTorch raises IndexError; the library clamps to the table (it has no exceptions)."""
    _, inputs, compiled = encoder
    ids, mask = inputs[0]
    bad = ids.clone()
    bad[0, 0] = 10**6
    clamped = ids.clone()
    clamped[0, 0] = 999
    assert np.array_equal(compiled(bad, mask), compiled(clamped, mask))


class _Islands(nn.Module):
    """Every float-island op between dynamic linears, on a (1, 6, 16) input."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)
        self.ln = nn.LayerNorm(16)

    def forward(self, x):
        h = F.gelu(self.ln(self.fc1(x)))
        q = h.view(1, 6, 2, 8).transpose(1, 2)
        mask = torch.ones(1, 1, 6, 6).masked_fill(torch.zeros(1, 1, 6, 6).bool(), 0.0) * 0.5
        a = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
        s = torch.softmax(a.transpose(1, 2).reshape(1, 6, 16) / 2.0, dim=-1)
        return self.fc2(s - h * 0.25)


def test_float_island_ops_follow_pytorch_closely():
    torch.manual_seed(0)
    model = _dynamic(seeded(_Islands()))
    x = torch.randn(1, 6, 16)
    compiled = qcompile.compile(model, [x], tune_logs=False)
    report = qcompile.verify(model, compiled, [x, torch.randn(1, 6, 16) * 3])
    assert report["cosine"] > 0.9999, report


def test_small_encoder_shapes():
    """Another size (3 heads of 8, 3 layers, 11 tokens, batch 2) compiles and runs."""
    torch.manual_seed(3)
    model = _dynamic(Encoder(vocab=50, max_len=16, hidden=24, heads=3, inner=40, depth=3))
    ids, mask = token_inputs((2, 11), 1, seed=4, vocab=50)[0]
    compiled = qcompile.compile(model, [ids, mask], tune_logs=False)
    with torch.no_grad():
        ref = model(ids, mask).numpy()
    out = compiled(ids, mask)
    cos = float((ref * out).sum() / np.linalg.norm(ref) / np.linalg.norm(out))
    assert out.shape == ref.shape and cos > 0.9999


class _Untraceable(Encoder):
    """Python control flow on a tensor value: torch.fx cannot trace this (Hugging Face models
    are often like it); qcompile.compile then captures it with torch.jit.trace."""

    def forward(self, ids, mask):
        if bool(mask.sum() > 0):
            return super().forward(ids, mask)
        return super().forward(ids, torch.ones_like(mask))


def test_traced_and_untraceable_encoders(encoder):
    zm, inputs, _ = encoder
    with torch.no_grad():
        traced = torch.jit.trace(zm.quantized, inputs[0])
    compiled = qcompile.compile(traced, list(inputs[0]), tune_logs=False)
    report = qcompile.verify(traced, compiled, inputs[:2])
    assert report["cosine"] > 0.99999, report

    torch.manual_seed(5)
    model = _dynamic(_Untraceable(vocab=50, max_len=16, hidden=24, heads=3, inner=40, depth=1))
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(model)
    pairs = token_inputs((1, 9), 2, seed=8, vocab=50)
    compiled = qcompile.compile(model, list(pairs[0]), tune_logs=False)
    assert qcompile.verify(model, compiled, pairs)["cosine"] > 0.9999
