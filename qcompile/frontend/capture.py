"""Which importer takes a model, and `import_model`: quantized torch model -> Relax Q/DQ form."""

from __future__ import annotations

import torch

from ..errors import QCompileError
from .fx_import import QUANTIZE_FIRST, FxImporter, FxTraceError, capture
from .importer import Importer
from .pt2e_import import Pt2eImporter, is_pt2e_graph
from .script_import import ScriptImporter, is_quantized_script


def importer_for(model, input_shapes, probe: bool, input_dtypes=None,
                 example_inputs=None) -> Importer:
    """The importer for the model: fx for nn.Modules fx can trace, TorchScript for ScriptModules
    (torch.jit.load), PT2E graphs (convert_pt2e, torch.export) and, through torch.jit.trace on
    the example inputs (zeros of `input_shapes` without them), for quantized modules fx cannot
    trace."""
    if is_pt2e_graph(model):
        return Pt2eImporter(model, probe)
    if isinstance(model, torch.jit.ScriptModule):
        if not is_quantized_script(model):
            name = getattr(model, "original_name", "the TorchScript model")
            raise QCompileError(f"{name} is a float model: qcompile compiles quantized models. "
                                + QUANTIZE_FIRST)
        return ScriptImporter(model)
    try:
        return FxImporter(capture(model), probe)
    except FxTraceError:
        pass
    try:
        with torch.no_grad():
            if example_inputs is None:
                dtypes = input_dtypes or ["float32"] * len(input_shapes)
                example_inputs = [torch.zeros(s, dtype=getattr(torch, d))
                                  for s, d in zip(input_shapes, dtypes)]
            # the trace follows the branches these inputs take: Python control flow on tensor
            # values is fixed to what the example inputs did
            # strict=False: a dict of outputs (Hugging Face's ModelOutput) is traced as one;
            # the compiled model returns its tensors in order
            traced = torch.jit.trace(model, tuple(torch.as_tensor(x) for x in example_inputs),
                                     strict=False)
    except Exception as err:  # noqa: BLE001 - neither capture works: say both
        raise QCompileError(f"neither torch.fx nor torch.jit.trace could capture "
                            f"{type(model).__name__}: {err}") from err
    return ScriptImporter(traced)


def import_model(model: torch.nn.Module, input_shapes: list[tuple[int, ...]],
                 probe: bool = False, input_dtypes=None, example_inputs=None):
    """Quantized torch model -> Relax IRModule in Q/DQ form (float outputs; float32 inputs
    unless `input_dtypes` names others, e.g. int64 token ids).

    With `probe`, `main` also returns the 8-bit output of every quantized module, after the
    model's own outputs; returns (module, probe names) then (TorchScript models: no probes).
    """
    importer = importer_for(model, input_shapes, probe, input_dtypes, example_inputs)
    mod = importer.run(input_shapes, input_dtypes)
    qp = importer.output_qparams
    if qp is not None:  # the output's quantized step, for reports in LSBs
        mod = mod.with_attr("qcompile.output_qparams", [qp.scale, qp.zero_point])
    if probe:
        return mod, [name for name, _ in importer.probes]
    return mod
