"""qcompile: int8-quantized PyTorch models compiled to native libraries with TVM.

Public API, each a short function in front of one stage:
  compile(model, example_inputs, target="x86", numerics=None) -> CompiledModel
  load(path) -> CompiledModel
  verify(model, compiled, inputs) -> report dict (differences in quantized steps)
  explain(model, example_inputs) -> per-layer numerics table
  bench(quantized, compiled, example, float_model) -> side-by-side timings
"""

import os as _os

# TVM's runtime starts one worker per *two* logical cores unless told otherwise, and only a
# count fixed before its thread pool starts sticks; CompiledModel then picks its own count.
_os.environ.setdefault("TVM_NUM_THREADS", str(len(_os.sched_getaffinity(0))))

from .errors import QCompileError  # noqa: E402
from .numerics import CONTRACTS  # noqa: E402


def compile(model, example_inputs, target="x86", numerics=None, threads=None,  # noqa: A001
            verbose=False, probe=False, tune_logs=True):
    """Compile a quantized torch model (convert / convert_fx / convert_pt2e output, a
    TorchScript module) for `target`.

    `numerics` is the contract: "fbgemm" (bit-exact with PyTorch's fbgemm engine), "qnnpack"
    (int32 bias, fp32 requantize, as PyTorch's qnnpack engine), "integer" (int32 bias,
    fixed-point requantize) or "pt2e" (PT2E models: their Q/DQ program's float arithmetic).
    None (default): pt2e for PT2E models, fbgemm otherwise.  `threads` is PyTorch's thread count the fbgemm contract mirrors
    (some of PyTorch's elementwise results depend on it); default: torch.get_num_threads().
    `probe=True` also returns every quantized module's 8-bit output (for verify's per_layer).
    `tune_logs`: True applies the shipped tuning databases of the target family (tune_logs/),
    False none, a path (or list) the databases under it (e.g. a `tune` work dir).
    """
    from .compiler import compile_model

    return compile_model(model, example_inputs, target, numerics, threads, verbose, probe,
                         tune_logs)


def tune(model, example_inputs, target="x86", trials=200, work_dir="qcompile-tune",
         numerics=None, **options):
    """Tune the model's int8 kernels with MetaSchedule (XGBoost cost model) into `work_dir`.

    Each kernel's default schedule is measured first; each kernel then gets its share of
    `trials`, or with `budget` ("30m", "1h") trials by its share of the model's runtime until
    the time is spent.  Resumable (a rerun continues from the database in `work_dir`, tuning
    the kernels below their share); every candidate passes a correctness gate before it
    enters the database; compile() uses a tuned record only where it measured faster than the
    default.  Options: threads, rpc_tracker ("host:port"), rpc_key, trials_per_iter,
    trials_per_task (overrides `trials`), budget, out (a print function).  Returns a report
    dict."""
    from .compiler.tune import tune_model

    return tune_model(model, example_inputs, target, trials, work_dir, numerics, **options)


def load(path):
    """Load a library written by `CompiledModel.export`."""
    from .compiler import load as _load

    return _load(path)


def verify(model, compiled, inputs, engine=None, per_layer=False, float_model=None):
    """Run PyTorch and the compiled model on the same inputs; report differences in LSBs
    (float outputs: float32 ULPs); with `float_model`, also both runs' cosine to it."""
    from .fidelity import verify as _verify

    return _verify(model, compiled, inputs, engine=engine, per_layer=per_layer,
                   float_model=float_model)


def explain(model, example_inputs, layer=None):
    """Per quantized conv/linear: scales, zero points, bias in int32, requantize multipliers."""
    from .explain_layers import explain as _explain

    return _explain(model, example_inputs, layer=layer)


def bench(quantized, compiled, example, float_model=None, calibration=None, runs=50, warmup=10,
          threads=None, onnxruntime=True):
    """Time `compiled` against PyTorch fbgemm, fp32 and ONNX Runtime int8, interleaved."""
    from .benchmark import bench as _bench

    return _bench(quantized, compiled, example, float_model, calibration, runs, warmup, threads,
                  onnxruntime)


__all__ = ["compile", "load", "verify", "explain", "bench", "QCompileError", "CONTRACTS"]
