"""A stack of BERT-base-sized feed-forward blocks (no residual / LayerNorm)."""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub


class FFNBlock(nn.Module):
    """Linear(hidden -> inner), ReLU, Linear(inner -> hidden)."""

    def __init__(self, hidden: int = 768, inner: int = 3072) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, inner)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


class BertFFN(nn.Module):
    """`depth` FFN blocks between a QuantStub and a DeQuantStub."""

    def __init__(self, depth: int = 4, hidden: int = 768, inner: int = 3072) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.blocks = nn.Sequential(*[FFNBlock(hidden, inner) for _ in range(depth)])
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.blocks(self.quant(x)))

    def fuse_groups(self) -> list[list[str]]:
        """Module-name groups for `fuse_modules` (Linear+ReLU)."""
        return [[f"blocks.{i}.fc1", f"blocks.{i}.relu"] for i in range(len(self.blocks))]
