"""Compile a quantized torch model to a Relax VM executable; export and load `.so` files."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from schedules import resolve_family
from schedules.default_cpu import default_schedule

from .. import frontend, passes
from ..errors import QCompileError
from ..numerics import check_contract

_META_SUFFIX = ".json"


def build_pipeline(target: tvm.target.Target, family=None,
                   report: dict | None = None) -> tvm.transform.Pass:
    """Relax's CPU pipeline with our default schedule between fusion and lowering.

    `family` (schedules.TargetFamily) picks the tensorized schedules; `report` collects how
    each PrimFunc was scheduled."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0, name="qcompile.BuildPipeline")
    def _pipeline(mod, _ctx):
        with target:
            seq = tvm.transform.Sequential(
                cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
                + [default_schedule(family, report)] + cpu.dataflow_lower_passes(target)
                + cpu.finalize_passes(target))
            return seq(mod)

    return _pipeline


def fuse(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalize and fuse as the build does (for inspecting the fused PrimFuncs)."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    with target:
        return tvm.transform.Sequential(cpu.legalize_passes(target))(mod)


@dataclass
class CompiledModel:
    """A compiled model: call it on torch tensors or numpy arrays; `.export(path)` writes a .so."""

    executable: object
    meta: dict
    integer_module: tvm.IRModule | None = None
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        self._vm = relax.VirtualMachine(self.executable, tvm.cpu())
        threads = self.meta.get("threads")
        if threads:
            # big-core affinity mode (1) with `threads` workers, what TVM itself starts with
            tvm.get_global_func("runtime.config_threadpool")(1, int(threads))

    @property
    def input_shapes(self):
        return [tuple(s) for s in self.meta["input_shapes"]]

    def __call__(self, *inputs):
        arrays = [_as_numpy(x) for x in inputs]
        self._check_inputs(arrays)
        out = self._vm["main"](*[tvm.runtime.tensor(a) for a in arrays])
        if isinstance(out, tvm.runtime.Tensor):
            return out.numpy()
        return tuple(o.numpy() for o in out)

    def _check_inputs(self, arrays):
        shapes = self.input_shapes
        if len(arrays) != len(shapes):
            raise QCompileError(f"the model takes {len(shapes)} inputs, got {len(arrays)}")
        for i, (a, s) in enumerate(zip(arrays, shapes)):
            if tuple(a.shape) != s or a.dtype != np.float32:
                raise QCompileError(f"input {i}: expected float32 of shape {s}, got "
                                    f"{a.dtype} of shape {tuple(a.shape)}")

    def export(self, path: str) -> str:
        """Write the library (loadable by tvm.runtime.load_module) and a JSON sidecar."""
        self.executable.export_library(path)
        with open(path + _META_SUFFIX, "w") as f:
            json.dump(self.meta, f, indent=1)
        return path


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x)


def compile_model(model, example_inputs, target="x86", numerics="fbgemm", threads=None,
                  verbose=False, probe=False) -> CompiledModel:
    """Quantized torch model -> CompiledModel (see qcompile.compile)."""
    check_contract(numerics)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    shapes = [tuple(int(d) for d in _as_numpy(x).shape) for x in example_inputs]
    family = resolve_family(target)
    tvm_target = family.tvm_target()
    timings = {}
    t0 = time.perf_counter()
    probes = []
    if probe:
        mod, probes = frontend.import_model(model, shapes, probe=True)
    else:
        mod = frontend.import_model(model, shapes)
    timings["import_s"] = time.perf_counter() - t0
    out_qp = mod.attrs.get("qcompile.output_qparams") if mod.attrs is not None else None
    t0 = time.perf_counter()
    integer = passes.lower(mod, numerics, threads)
    integer = passes.pack_layout(integer, family.out_block, family.in_block)
    timings["passes_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    schedules_used = {}
    executable = tvm.compile(integer, tvm_target,
                             relax_pipeline=build_pipeline(tvm_target, family, schedules_used))
    timings["build_s"] = time.perf_counter() - t0
    meta = {"numerics": numerics, "threads": threads, "target": str(target),
            "target_family": family.name,
            "input_shapes": [list(s) for s in shapes], "model": type(model).__name__, "probes": probes,
            "output_qparams": None if out_qp is None else [float(out_qp[0]), int(out_qp[1])]}
    if verbose:
        tensorized = sum(how == "tensorized" for how in schedules_used.values())
        print(f"compiled {meta['model']} for {target} ({family.name}, {numerics} numerics): "
              + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
              + f"; {tensorized} of {len(schedules_used)} kernels tensorized")
    return CompiledModel(executable, meta, integer, timings)


def load(path: str) -> CompiledModel:
    """Load a library written by CompiledModel.export (its JSON sidecar gives the shapes)."""
    if not os.path.exists(path):
        raise QCompileError(f"no such library: {path}")
    lib = tvm.runtime.load_module(path)
    meta_path = path + _META_SUFFIX
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    return CompiledModel(lib, meta)
