"""The program PyTorch deploys an X86InductorQuantizer model with: `torch.compile` with
Inductor's freezing (oneDNN int8 convs and linears, generated C++ for the rest).  The `inductor`
contract's reference and a bench peer."""

from __future__ import annotations

import warnings

import torch


def compile_inductor(model):
    """`torch.compile(model)` run with freezing, under no_grad: a callable taking the model's
    inputs.  Inductor compiles on the first call (seconds to minutes)."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model)

    def run(*inputs):
        with inductor_config.patch(freezing=True), torch.no_grad(), warnings.catch_warnings():
            # Inductor's own deprecation warnings about the quantized weights it folds
            warnings.simplefilter("ignore", UserWarning)
            return compiled(*inputs)

    return run
