"""Compile a quantized torch model to a Relax VM executable; export and load `.so` files."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from qcompile.schedules import resolve_family
from qcompile.schedules.amx import schedule_amx_kernels
from qcompile.schedules.default_cpu import default_schedule

from .. import frontend, passes
from ..errors import QCompileError
from ..numerics.contracts import (EAGER, PT2E, Contract, contracts_for, default_contract,
                                  get_contract)
from ..passes.block_activations import pass_for as block_activations_pass

_META_SUFFIX = ".json"


def _fusion_passes(target, family=None):
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    layout = []
    if family is not None and family.activation_block:
        layout = [block_activations_pass(family.activation_block)]
    return cpu.library_dispatch_passes(target) + cpu.legalize_passes(target) + layout


def build_pipeline(target: tvm.target.Target, family=None, report: dict | None = None,
                   tune_logs=None) -> tvm.transform.Pass:
    """Relax's CPU pipeline with our schedules between fusion and lowering.

    The family's AMX dense kernels (schedules.amx) are scheduled first, then the other fused
    PrimFuncs take the records `tune_logs` (tuning.choice.TuneLogs) chooses for them; the
    rest get our default schedule.  `family` (schedules.TargetFamily) picks the tensorized
    schedules; `report` collects how each PrimFunc was scheduled."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0, name="qcompile.BuildPipeline")
    def _pipeline(mod, _ctx):
        with target:
            apply_db = []
            if tune_logs is not None:
                from ..tuning.choice import apply_tune_logs

                apply_db.append(apply_tune_logs(tune_logs, report))
            seq = tvm.transform.Sequential(
                _fusion_passes(target, family) + [schedule_amx_kernels(family, report)]
                + apply_db + [default_schedule(family, report)]
                + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
            return seq(mod)

    return _pipeline


def fuse(mod: tvm.IRModule, target: tvm.target.Target, family=None) -> tvm.IRModule:
    """Legalize and fuse as the build does for `family`: the PrimFuncs tuning works on."""
    with target:
        return tvm.transform.Sequential(_fusion_passes(target, family))(mod)


def input_specs(arrays: list) -> tuple[list, list]:
    """(shapes, dtypes) of example input arrays, as the compiled module keeps them."""
    return ([tuple(int(d) for d in a.shape) for a in arrays], [input_dtype(a) for a in arrays])


def integer_module(model, examples: list, contract: Contract, threads: int, family,
                   probe: bool = False):
    """Import, apply the numerics contract and pack for the family.  `examples`: one call's
    input arrays (their shapes and dtypes; a model fx cannot trace is traced on them).

    Returns (integer module, probes, output qparams recorded by the frontend or None)."""
    shapes, dtypes = input_specs(examples)
    probes = []
    if probe:
        mod, probes = frontend.import_model(model, shapes, probe=True, input_dtypes=dtypes,
                                            example_inputs=examples)
    else:
        mod = frontend.import_model(model, shapes, input_dtypes=dtypes, example_inputs=examples)
    out_qp = mod.attrs.get("qcompile.output_qparams") if mod.attrs is not None else None
    integer = passes.lower(mod, contract, threads, amx=bool(family is not None and family.amx))
    integer = passes.pack_layout(
        integer, family.out_block, family.in_block, family.signed_activations,
        pixel_lanes=family.out_block if family.pixel_intrinsic else None,
        group_lanes=family.group_lanes)
    return integer, probes, out_qp


@dataclass
class CompiledModel:
    """A compiled model: call it on torch tensors or numpy arrays; `.export(path)` writes a .so."""

    executable: object
    meta: dict
    integer_module: tvm.IRModule | None = None
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        self._vm = None

    @property
    def family(self):
        """The schedules.TargetFamily compiled for."""
        return _family_of(self.meta)

    def _machine(self):
        if self._vm is None:
            family = self.family
            if not family.runs_here():
                raise QCompileError(
                    f"this model is compiled for {family.name} ({family.arch}), which this "
                    f"machine cannot run: export it (`qcompile compile ... -o model.so`) and run "
                    f"it on the device, or check it here with `qcompile verify MODEL --target "
                    f"{family.name} --emulate`")
            self._vm = relax.VirtualMachine(self.executable, tvm.cpu())
            threads = self.meta.get("threads")
            if threads:
                # big-core affinity mode (1) with `threads` workers, what TVM itself starts with
                tvm.get_global_func("runtime.config_threadpool")(1, int(threads))
        return self._vm

    @property
    def input_shapes(self):
        return [tuple(s) for s in self.meta["input_shapes"]]

    def __call__(self, *inputs):
        arrays = [as_numpy(x) for x in inputs]
        self._check_inputs(arrays)
        out = self._machine()["main"](*[tvm.runtime.tensor(a) for a in arrays])
        if isinstance(out, tvm.runtime.Tensor):
            return out.numpy()
        return tuple(o.numpy() for o in out)

    def _check_inputs(self, arrays):
        shapes = self.input_shapes
        if len(arrays) != len(shapes):
            raise QCompileError(f"the model takes {len(shapes)} inputs, got {len(arrays)}")
        dtypes = self.meta.get("input_dtypes") or ["float32"] * len(shapes)
        for i, (a, s, d) in enumerate(zip(arrays, shapes, dtypes)):
            if tuple(a.shape) != s or a.dtype != np.dtype(d):
                raise QCompileError(f"input {i}: expected {d} of shape {s}, got "
                                    f"{a.dtype} of shape {tuple(a.shape)}")

    def export(self, path: str) -> str:
        """Write the library (loadable by tvm.runtime.load_module) and a JSON sidecar;
        for another architecture, linked with the family's cross compiler."""
        self.family.export_library(self.executable, path)
        with open(path + _META_SUFFIX, "w") as f:
            json.dump(self.meta, f, indent=1)
        return path


def _family_of(meta: dict):
    """The target family a model's metadata names (x86 when it does not say)."""
    return resolve_family(meta.get("target_family", "x86"))


def as_numpy(x) -> np.ndarray:
    """A torch tensor or array-like as a contiguous numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x)


_INPUT_DTYPES = ("float32", "int64", "int32")


def input_dtype(array: np.ndarray) -> str:
    """The dtype a model input keeps in the compiled module (float32, or integer token ids)."""
    if str(array.dtype) not in _INPUT_DTYPES:
        raise QCompileError(f"an example input of dtype {array.dtype}: inputs must be float32 "
                            "(activations) or int64/int32 (token ids, masks)")
    return str(array.dtype)


def model_contract(model, numerics: str | None) -> Contract:
    """The contract to compile `model` under: `numerics`, or the default for its kind when None
    (PT2E graphs: inductor for uint8 activations (X86InductorQuantizer), else pt2e; eager, FX
    and TorchScript models: fbgemm).  A contract applies to one kind of model: a PT2E graph runs
    in PyTorch as its float Q/DQ program, not on an engine."""
    from ..frontend.pt2e_import import activation_dtype, is_pt2e_graph

    kind = PT2E if is_pt2e_graph(model) else EAGER
    if numerics is None:
        return default_contract(kind, activation_dtype(model) if kind == PT2E else None)
    contract = get_contract(numerics)
    if contract.models != kind:
        default = default_contract(kind)
        if kind == PT2E:
            raise QCompileError(
                f"{type(model).__name__} is a PT2E model (quantized_decomposed Q/DQ ops): "
                f"PyTorch runs it as a float Q/DQ program, not as {numerics!r} numerics do "
                f"({contract.reference.description}); compile it with "
                f"numerics='{default.name}' (the default for PT2E models)")
        raise QCompileError(
            f"numerics {numerics!r} is the arithmetic of PT2E models (torchao convert_pt2e); "
            f"this model is eager/fx quantized: use "
            f"{', '.join(c.name for c in contracts_for(kind))}")
    return contract


def compile_model(model, example_inputs, target="x86", numerics=None, threads=None,
                  verbose=False, probe=False, tune_logs=True) -> CompiledModel:
    """Quantized torch model -> CompiledModel (see qcompile.compile)."""
    from ..tuning import choice, logs

    contract = model_contract(model, numerics)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    examples = [as_numpy(x) for x in example_inputs]
    shapes, dtypes = input_specs(examples)
    family = resolve_family(target)
    tvm_target = family.tvm_target()
    timings = {}
    t0 = time.perf_counter()
    integer, probes, out_qp = integer_module(model, examples, contract, threads, family, probe)
    timings["frontend_passes_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    log_dirs, skipped = logs.resolve_tune_logs(tune_logs, family.tune_logs_of or family.name,
                                               runs_here=not family.is_cross())
    databases = logs.open_databases(log_dirs)
    schedules_used = {}
    pipeline = build_pipeline(tvm_target, family, schedules_used,
                              tune_logs=choice.TuneLogs(databases) if databases else None)
    executable = tvm.compile(integer, tvm_target, relax_pipeline=pipeline)
    timings["build_s"] = time.perf_counter() - t0
    kernels = {how: sorted(n for n, h in schedules_used.items() if h == how)
               for how in KERNEL_SOURCES}
    meta = {"numerics": contract.name, "threads": threads, "target": str(target),
            "target_family": family.name, "tune_logs": log_dirs, "tune_logs_skipped": skipped,
            "kernels": {how: len(names) for how, names in kernels.items()},
            "kernel_schedules": dict(sorted(schedules_used.items())),
            "input_shapes": [list(s) for s in shapes], "input_dtypes": dtypes,
            "model": type(model).__name__, "probes": probes,
            "output_qparams": None if out_qp is None else [float(out_qp[0]), int(out_qp[1])]}
    if verbose:
        print(f"compiled {meta['model']} for {target} ({family.name}, {contract.name} numerics): "
              + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        print(schedule_summary(kernels, log_dirs, skipped))
    return CompiledModel(executable, meta, integer, timings)


# how compile() scheduled each kernel (meta["kernel_schedules"]): from tune logs (exactly, or
# recorded for other quantization constants), the default tensorized schedule kept over a tuned
# record not faster than it or not compared with it (tuning.choice), AMX tiles, the tensorized
# default, window (depthwise, pools), generic
KERNEL_SOURCES = ("tuned", "tuned_near", "kept_default", "unmeasured_default", "amx",
                  "tensorized", "window", "generic")


def schedule_summary(kernels: dict, log_dirs: list, skipped: list = ()) -> str:
    """How the kernels were scheduled (KERNEL_SOURCES), and the shipped logs `skipped` (tuned
    on another CPU family)."""
    from ..tuning import choice, logs

    count = {how: len(kernels.get(how, ())) for how in KERNEL_SOURCES}
    total = sum(count.values())
    amx = f"{count['amx']} dense on AMX tiles, " if count["amx"] else ""
    tuned = count["tuned"] + count["tuned_near"]
    near = (f"; {count['tuned_near']} of them recorded for other quantization constants"
            if count["tuned_near"] else "")
    default = count["tensorized"] + count["kept_default"] + count["unmeasured_default"]
    lines = [f"kernels: {tuned} of {total} from tune logs ({len(log_dirs)} database(s){near}), "
             f"{amx}{default} tensorized by default, {count['window']} window (depthwise, "
             f"pools), {count['generic']} generic"]
    if count["kept_default"]:
        lines.append(f"  {count['kept_default']} kept the default schedule: their tuned records "
                     f"measured less than {choice.MIN_GAIN:.0%} faster than it")
    if count["unmeasured_default"]:
        lines.append(f"  {count['unmeasured_default']} kept the default schedule: their logs hold "
                     "no measurement of it to compare with (`qcompile tune` on the same work "
                     f"dir measures it): {logs.few_names(kernels['unmeasured_default'])}")
    untuned = kernels.get("tensorized", [])
    if log_dirs and untuned:
        lines.append(f"  not tuned in the logs: {logs.few_names(untuned)}"
                     + (" (`qcompile tune` records them)"
                        if len(untuned) > logs.SHOWN_NAMES else ""))
    if skipped:
        where = sorted({logs.tuned_on(d) for d in skipped})
        lines.append(f"  {len(skipped)} shipped tune log(s) not applied: tuned on "
                     f"{', '.join(where)}, this CPU is {logs.cpu_signature()}; "
                     f"`--tune-logs {os.path.dirname(skipped[0])}` applies them anyway")
    return "\n".join(lines)


def load(path: str) -> CompiledModel:
    """Load a library written by CompiledModel.export (its JSON sidecar gives the shapes)."""
    if not os.path.exists(path):
        raise QCompileError(f"no such library: {path}")
    meta_path = path + _META_SUFFIX
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    family = _family_of(meta)
    if family.is_cross():
        raise QCompileError(
            f"{path} is compiled for {family.name} ({family.arch}); this machine cannot load it. "
            f"Run it on the device (`qcompile package {path} -o bundle.tar.gz`) or under "
            f"emulation (`qcompile verify MODEL --target {family.name} --emulate`)")
    return CompiledModel(tvm.runtime.load_module(path), meta)
