"""PyTorch's quantized engine switch, the one place that flips it."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def quantized_engine(engine: str) -> Iterator[None]:
    """Run PyTorch's quantized ops on `engine` ("fbgemm", "qnnpack") inside the block."""
    import torch

    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous
