"""A small BERT-style encoder: token and position embeddings, post-LayerNorm encoder layers
(multi-head self-attention through F.scaled_dot_product_attention with an additive padding
mask, GELU feed-forward).  Quantized with `quantize_dynamic`, its Linears become int8 and the
rest (embeddings, LayerNorm, attention, GELU, residuals) stays float: the float islands.

Inputs: token ids and an attention mask (1 = token, 0 = padding), both int64 of shape (B, T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, each followed by a residual add and LayerNorm."""

    def __init__(self, hidden: int, heads: int, inner: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))
        self.ln1 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, inner)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(inner, hidden)
        self.ln2 = nn.LayerNorm(hidden)

    def _split(self, x: torch.Tensor, b: int, t: int) -> torch.Tensor:
        return x.view(b, t, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.size()
        q, k, v = (self._split(proj(x), b, t) for proj in (self.q, self.k, self.v))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias)
        x = self.ln1(x + self.o(attn.transpose(1, 2).reshape(b, t, h)))
        return self.ln2(x + self.fc2(self.act(self.fc1(x))))


class Encoder(nn.Module):
    """Embeddings + LayerNorm + `depth` encoder layers; returns the last hidden states."""

    def __init__(self, vocab: int = 1000, max_len: int = 128, hidden: int = 256, heads: int = 4,
                 inner: int = 1024, depth: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Parameter(torch.randn(max_len, hidden) * 0.02)
        self.ln = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, inner) for _ in range(depth))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = ids.size()
        x = self.ln(self.tokens(ids) + self.positions[:t])
        # additive mask: 0 where attended, -10000 at padding (B, 1, 1, T)
        mask_bias = (1.0 - mask.to(torch.float32)).view(b, 1, 1, t) * -10000.0
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x


def token_inputs(shape: tuple, n: int, seed: int, vocab: int = 1000):
    """n (ids, mask) pairs: random token ids, the last 0..T/4 positions padding."""
    gen = torch.Generator().manual_seed(seed)
    batch, length = shape
    pairs = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, length), generator=gen)
        pad = int(torch.randint(0, length // 4 + 1, (1,), generator=gen))
        mask = torch.ones(batch, length, dtype=torch.int64)
        if pad:
            mask[:, length - pad:] = 0
        pairs.append((ids, mask))
    return pairs
