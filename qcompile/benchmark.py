"""Side-by-side timing: qcompile vs PyTorch fbgemm int8, PyTorch fp32, ONNX Runtime int8 and
OpenVINO int8 (both on the model ONNX Runtime's quantize_static makes).

A PT2E model (torchao convert_pt2e) is timed against what PyTorch deploys it with instead of
fbgemm: `torch.compile` with Inductor's freezing on (PyTorch's documented path for
X86InductorQuantizer models: weights constant-folded, quantized convs/linears lowered to
oneDNN), compiled during the warm-up.

All runtimes run in one process on the same input, interleaved in rounds: per round each runtime
gets untimed calls for HANDOVER_S (at least one), then PER_ROUND timed calls in a row.  The
untimed calls absorb the hand-over: the thread pools of PyTorch (OpenMP), ONNX Runtime and TVM
spin for a while after a call, and the calls after another runtime's are slowed by its idle
spinning threads (measured: qcompile's ResNet-18 10.4 ms alone, 17.4 ms timed right after each
PyTorch call; after five ONNX Runtime calls its next call took 44 ms and the two after it
7.6-8.0 ms against 6.1 ms; sleeping between calls instead made every runtime erratic).  The
hand-over outlasts the longest spin: the CPU time of the process's threads in the 100 ms
windows after its last MobileNetV2 call was 100, 60, 0 ms for qcompile (TVM's workers), 40, 0
for ONNX Runtime, 10, 0 for PyTorch (ad-hoc script, /proc/self/task; with the earlier 0.1 s,
PyTorch fbgemm's calls right after qcompile's shared a core with TVM's spinning worker).  The
report gives medians and ratios.
Timings on shared machines are noisy:
compare ratios from one run, never absolute numbers across runs.
"""

from __future__ import annotations

import functools

import os
import tempfile
import time

import numpy as np
import torch

from .engines import quantized_engine
from .provenance import provenance


def _feed_names(n: int) -> list[str]:
    return ["input"] if n == 1 else [f"input{i}" for i in range(n)]


def _onnx_int8(float_model, examples, calibration, dynamic: bool = False):
    """Export the float model to ONNX, pre-process it and quantize it with ONNX Runtime's tools
    (quant_pre_process, then quantize_static: QDQ, per channel, u8 activations, i8 weights; or,
    for a dynamically quantized model, quantize_dynamic: int8 weights, activations quantized
    at run time, as PyTorch's): the int8 model ONNX Runtime and OpenVINO both run.  `examples`:
    one call's inputs.  (path, None), or (None, a reason)."""
    try:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_dynamic, quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        return None, "onnxruntime not installed (pip install '.[bench]')"
    names = _feed_names(len(examples))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([dict(zip(names, (t.numpy() for t in _as_tuple(x))))
                               for x in calibration])

        def get_next(self):
            return next(self.items, None)

    workdir = tempfile.mkdtemp(prefix="qcompile-bench-")
    fp32, int8 = os.path.join(workdir, "fp32.onnx"), os.path.join(workdir, "int8.onnx")
    pre = os.path.join(workdir, "fp32_pre.onnx")
    try:
        torch.onnx.export(float_model, tuple(examples), fp32, input_names=names,
                          output_names=["output"], opset_version=17, dynamo=False)
        # ONNX Runtime's own pre-processing (shape inference, graph optimization) before
        # quantize_static, as its docs ask: without it a torchvision model's Identity nodes
        # kept the adds out of the quantized patterns (ResNet-18 14 ms against 3.4)
        quant_pre_process(fp32, pre)
        if dynamic:
            quantize_dynamic(pre, int8, weight_type=QuantType.QInt8)
        else:
            quantize_static(pre, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as err:  # noqa: BLE001 - any exporter failure is reported, not fatal
        return None, f"ONNX export/quantization failed: {err}"
    return int8, None


def _onnxruntime_int8(int8_path, examples, threads):
    """ONNX Runtime (CPU provider) on the int8 ONNX model: a callable, or a reason."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnxruntime not installed (pip install '.[bench]')"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(int8_path, options, providers=["CPUExecutionProvider"])
    feed = dict(zip(_feed_names(len(examples)), (x.numpy() for x in examples)))
    return (lambda: session.run(None, feed)), None


def _openvino_int8(int8_path, examples, threads):
    """OpenVINO's CPU plugin on the same int8 ONNX model (it reads the QDQ pairs and runs the
    quantized layers in u8/i8; latency hint, one stream): a callable, or a reason."""
    try:
        import openvino as ov
    except ImportError:
        return None, "openvino not installed (pip install '.[bench]')"
    core = ov.Core()
    compiled = core.compile_model(core.read_model(int8_path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str)
                  for op in compiled.get_runtime_model().get_ops()
                  if "runtimePrecision" in op.get_rt_info()}
    if not precisions & {"u8", "i8"}:
        return None, f"OpenVINO ran no layer in int8 (runtime precisions {sorted(precisions)})"
    request = compiled.create_infer_request()
    data = {i: x.numpy() for i, x in enumerate(examples)}
    return (lambda: request.infer(data)), None


def _as_tuple(example) -> tuple:
    """One call's inputs as a tuple (a model of one input takes a tensor)."""
    return tuple(example) if isinstance(example, (list, tuple)) else (example,)


def _is_dynamic(quantized) -> bool:
    """True if the model holds dynamically quantized Linears (quantize_dynamic)."""
    import torch.ao.nn.quantized.dynamic as nnqd

    modules = quantized.modules() if isinstance(quantized, torch.nn.Module) else []
    return any(isinstance(m, nnqd.Linear) for m in modules)


def _inductor(quantized, examples):
    """`torch.compile(quantized)` with freezing, compiled now; a callable, or a reason."""
    from .inductor_program import compile_inductor

    program = compile_inductor(quantized)
    try:
        program(*examples)
    except Exception as err:  # noqa: BLE001 - reported, the other runtimes still run
        return None, f"torch.compile (Inductor, freezing) failed: {str(err)[:300]}"
    return (lambda: program(*examples)), None


# what a user would run instead of qcompile (fp32 and other qcompile builds are not peers);
# torch_fbgemm_traced: the model's TorchScript trace (how dynamically quantized transformers
# are deployed)
PEERS = ("torch_fbgemm", "torch_fbgemm_traced", "torch_inductor", "onnxruntime_int8",
         "openvino_int8")
PER_ROUND = 5
HANDOVER_S = 0.3


def _time_interleaved(runners: dict, runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        for fn in runners.values():
            fn()
    times = {name: [] for name in runners}
    while min(len(t) for t in times.values()) < runs:
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()  # hand-over, untimed
            while time.perf_counter() - start < HANDOVER_S:
                fn()
            for _ in range(min(PER_ROUND, runs - len(times[name]))):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: {"median_ms": float(np.median(t)), "min_ms": float(np.min(t)),
                   "p90_ms": float(np.percentile(t, 90)), "runs": len(t)}
            for name, t in times.items()}


def bench(quantized, compiled, example, float_model=None, calibration=None, runs=50, warmup=10,
          threads=None, onnxruntime=True, openvino=True, pt2e=False, others=None,
          traced=False) -> dict:
    """Time `compiled` against PyTorch fbgemm (and, given the float model and installed,
    PyTorch fp32, ONNX Runtime int8 and OpenVINO int8 on one int8 ONNX model: statically
    quantized, or dynamically for a `quantize_dynamic` model).

    `example` is one call's input: a tensor, or a tuple of them (token ids and a mask);
    `calibration` (such inputs, for ORT's quantize_static) defaults to [example].  `traced`:
    also time PyTorch running the model's TorchScript trace ("torch_fbgemm_traced").  `pt2e`:
    `quantized` is a PT2E program, timed compiled by Inductor ("torch_inductor") instead of on
    fbgemm.  `others`: more compiled models {name: CompiledModel}
    timed in the same rounds on the same input (a PT2E model's eager twin).  Returns
    {"runtimes": {name: {"median_ms", ...}}, "speedup_vs_fbgemm" (or "speedup_vs_inductor"),
    ...}.
    """
    import tvm

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    examples = _as_tuple(example)
    data = [tvm.runtime.tensor(x.numpy()) for x in examples]
    runners = {"qcompile": functools.partial(compiled._machine()["main"], *data)}
    for name, other in (others or {}).items():
        runners[name] = functools.partial(other._machine()["main"], *data)
    notes = []
    if pt2e:
        inductor_run, why = _inductor(quantized, examples)
        if inductor_run is not None:
            runners["torch_inductor"] = inductor_run
        else:
            notes.append(why)
    else:
        def torch_int8(program=quantized):
            with quantized_engine("fbgemm"), torch.no_grad():
                program(*examples)

        runners["torch_fbgemm"] = torch_int8
        if traced:
            with quantized_engine("fbgemm"), torch.no_grad():
                script = torch.jit.trace(quantized, examples, strict=False)
            runners["torch_fbgemm_traced"] = functools.partial(torch_int8, script)
    if float_model is not None:
        def torch_fp32():
            with torch.no_grad():
                float_model(*examples)

        runners["torch_fp32"] = torch_fp32
    if (onnxruntime or openvino) and float_model is not None:
        int8_path, why = _onnx_int8(float_model, examples, calibration or [example],
                                    dynamic=_is_dynamic(quantized))
        peers = [("onnxruntime_int8", _onnxruntime_int8, onnxruntime),
                 ("openvino_int8", _openvino_int8, openvino)]
        for name, runner, wanted in peers:
            if wanted and int8_path is not None:
                run, why = runner(int8_path, examples, threads)
                runners.update({name: run} if run is not None else {})
            if wanted and name not in runners:
                notes.append(f"{name}: {why}")
    report = {"runtimes": _time_interleaved(runners, runs, warmup), "threads": threads,
              "batch": int(examples[0].shape[0]), "notes": notes}
    ours = report["runtimes"]["qcompile"]["median_ms"]
    for name, key in (("torch_fbgemm", "speedup_vs_fbgemm"),
                      ("torch_fbgemm_traced", "speedup_vs_fbgemm_traced"),
                      ("torch_inductor", "speedup_vs_inductor"),
                      ("onnxruntime_int8", "speedup_vs_onnxruntime"),
                      ("openvino_int8", "speedup_vs_openvino"),
                      ("torch_fp32", "speedup_vs_fp32")):
        if name in report["runtimes"]:
            report[key] = report["runtimes"][name]["median_ms"] / ours
    for name in others or {}:
        report[f"speedup_vs_{name}"] = report["runtimes"][name]["median_ms"] / ours
    peers = [p for p in PEERS if p in report["runtimes"]]
    if peers:
        best = min(peers, key=lambda p: report["runtimes"][p]["median_ms"])
        report["best_peer"] = best
        report["speedup_vs_best_peer"] = report["runtimes"][best]["median_ms"] / ours
    report["provenance"] = provenance(threads)
    return report


def dense_model(m: int, k: int, n: int, seed: int = 0):
    """A quantized (fbgemm) Linear k->n and an (m, k) input: the single-op benchmark."""
    import torch.ao.quantization as tq

    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(tq.QuantStub(), torch.nn.Linear(k, n), tq.DeQuantStub()).eval()
    x = torch.randn((m, k), generator=gen)
    model.qconfig = tq.get_default_qconfig("fbgemm")
    with quantized_engine("fbgemm"), torch.no_grad():
        tq.prepare(model, inplace=True)
        model(x)
        tq.convert(model, inplace=True)
    return model, x


def format_bench(report: dict, gops: float | None = None) -> str:
    """The bench report as a table with ratios to qcompile."""
    ours = report["runtimes"]["qcompile"]["median_ms"]
    width = max(18, *(len(name) + 1 for name in report["runtimes"]))
    lines = [f"{'runtime':<{width}}{'median ms':>11}{'min ms':>10}{'vs qcompile':>13}"
             + ("     GOP/s" if gops else "")]
    for name, t in report["runtimes"].items():
        extra = f"{gops / t['median_ms'] * 1e3:10.1f}" if gops else ""
        lines.append(f"{name:<{width}}{t['median_ms']:11.2f}{t['min_ms']:10.2f}"
                     f"{t['median_ms'] / ours:12.2f}x{extra}")
    lines.append(f"(batch {report['batch']}, {report['threads']} threads, median of "
                 f"{report['runtimes']['qcompile']['runs']} runs interleaved in rounds of "
                 f"{PER_ROUND}; ratio > 1: "
                 "qcompile is faster)")
    if "best_peer" in report:
        lines.append(f"best peer: {report['best_peer']}, qcompile "
                     f"{report['speedup_vs_best_peer']:.2f}x")
    prov = report.get("provenance") or {}
    if prov:
        lines.append(f"({prov.get('cpu')}, {prov.get('cores')} cores; qcompile "
                     f"{(prov.get('commit') or 'unknown')[:12]})")
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def profile_kernels(compiled, example, runs: int = 20, warmup: int = 3) -> dict:
    """Where one call of the compiled model spends its time, kernel by kernel.

    Every call instruction of the Relax VM is timed (wall clock, `VirtualMachine.
    set_instrument`) over `runs` calls after `warmup`; per kernel: calls per run, ms per run,
    share of the run, and how it was scheduled ("tuned", "amx", "window", ...: the compile
    summary's words).  The timing hook costs a few microseconds per call, counted in "vm"
    (the run's time outside any kernel).  Returns {"run_ms", "kernels": [...] slowest first}."""
    import tvm

    vm = compiled._machine()
    data = [tvm.runtime.tensor(x.numpy()) for x in _as_tuple(example)]
    for _ in range(warmup):
        vm["main"](*data)
    spent, calls, started = {}, {}, {}

    def instrument(_func, name, before, _ret, *_args):
        now = time.perf_counter()
        if before:
            started[name] = now
        else:
            spent[name] = spent.get(name, 0.0) + now - started.pop(name)
            calls[name] = calls.get(name, 0) + 1
        return 0  # VMInstrumentReturnKind.NO_OP

    vm.set_instrument(instrument)
    try:
        t0 = time.perf_counter()
        for _ in range(runs):
            vm["main"](*data)
        run_s = (time.perf_counter() - t0) / runs
    finally:
        vm.set_instrument(lambda *_args: 0)
    how = compiled.meta.get("kernel_schedules", {})
    kernels = [{"name": name, "schedule": how.get(name, "vm builtin"), "calls": calls[name] / runs,
                "ms": spent[name] / runs * 1e3, "share": spent[name] / runs / run_s}
               for name in spent]
    kernels.sort(key=lambda k: -k["ms"])
    inside = sum(k["ms"] for k in kernels)
    kernels.append({"name": "vm", "schedule": "", "calls": 1, "ms": run_s * 1e3 - inside,
                    "share": 1 - inside / (run_s * 1e3)})
    return {"run_ms": run_s * 1e3, "runs": runs, "kernels": kernels}


def format_kernels(profile: dict, top: int) -> str:
    """The `top` slowest kernels of profile_kernels' report as a table, the rest summed."""
    rows = [f"{'kernel':<58} {'schedule':<10} {'calls':>5} {'ms/run':>8} {'share':>6}"]
    shown = [k for k in profile["kernels"] if k["name"] != "vm"][:top]
    for k in shown:
        rows.append(f"{k['name'][:58]:<58} {k['schedule']:<10} {k['calls']:>5.0f} "
                    f"{k['ms']:>8.3f} {k['share']:>6.1%}")
    rest = [k for k in profile["kernels"] if k not in shown]
    if rest:
        rows.append(f"{f'the other {len(rest) - 1} kernels and the VM':<58} {'':<10} {'':>5} "
                    f"{sum(k['ms'] for k in rest):>8.3f} {sum(k['share'] for k in rest):>6.1%}")
    rows.append(f"(one run: {profile['run_ms']:.3f} ms, mean of {profile['runs']} runs with every "
                f"kernel call timed)")
    return "\n".join(rows)
