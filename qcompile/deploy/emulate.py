"""Run a library compiled for another architecture under qemu-user, with the C++ loader.

Emulation proves the generated code right (the same bits as on the board); its timings mean
nothing.  `qcompile verify MODEL --target aarch64-dotprod --emulate` uses this.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import QCompileError
from .runtime import build_loader, runtime_libs

_TIMEOUT_S = 3600


class EmulatedModel:
    """A cross-compiled model library, called like a CompiledModel but run under qemu-user."""

    def __init__(self, library: str, meta: dict, family, verbose: bool = True):
        machine = family.machine
        if machine.emulator is None:
            raise QCompileError(f"no emulator known for {family.arch}")
        self.library, self.meta, self.family = str(library), meta, family
        self._qemu = machine.require_tool(machine.emulator, "--emulate")
        self._loader = build_loader(family, verbose)
        self._libs = runtime_libs(machine, verbose)

    def command(self, loader_args: list) -> list:
        """The qemu command line running the loader with `loader_args`."""
        sysroot = self.family.machine.sysroot
        cpu = ["-cpu", self.family.qemu_cpu] if self.family.qemu_cpu else []
        return [self._qemu, "-L", sysroot, *cpu, str(self._loader), *loader_args]

    def description(self) -> str:
        """How the library runs, e.g. "qemu-aarch64 -cpu cortex-a76"."""
        cpu = f" -cpu {self.family.qemu_cpu}" if self.family.qemu_cpu else ""
        return f"{Path(self._qemu).name}{cpu}"

    def run_many(self, inputs: list) -> list:
        """Run every input (a list of arrays, or one array) in one emulated process; return
        each run's outputs as a tuple of arrays."""
        threads = self.meta.get("threads")
        with tempfile.TemporaryDirectory(prefix="qcompile-emulate-") as tmp:
            args = ["--threads", str(threads)] if threads else []
            args.append(self.library)
            for i, xs in enumerate(inputs):
                xs = xs if isinstance(xs, (list, tuple)) else [xs]
                paths = []
                for j, x in enumerate(xs):
                    paths.append(os.path.join(tmp, f"in{i}_{j}.npy"))
                    np.save(paths[-1], _as_numpy(x))
                args += [",".join(paths), os.path.join(tmp, f"out{i}.npy")]
            env = dict(os.environ, LD_LIBRARY_PATH=str(self._libs))
            done = subprocess.run(self.command(args), capture_output=True, text=True, env=env,
                                  timeout=_TIMEOUT_S)
            if done.returncode != 0:
                raise QCompileError(f"the emulated run failed (exit {done.returncode}):\n"
                                    f"{(done.stderr or done.stdout)[-2000:]}")
            return [_read_outputs(os.path.join(tmp, f"out{i}.npy")) for i in range(len(inputs))]

    def __call__(self, *inputs):
        outs = self.run_many([list(inputs)])[0]
        return outs[0] if len(outs) == 1 else outs


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x)


def _read_outputs(path: str) -> tuple:
    if os.path.exists(path):
        return (np.load(path),)
    stem, outs = path[:-4], []
    while os.path.exists(f"{stem}.{len(outs)}.npy"):
        outs.append(np.load(f"{stem}.{len(outs)}.npy"))
    if not outs:
        raise QCompileError(f"the emulated run wrote no output {path}")
    return tuple(outs)


def emulate(compiled, work_dir: str | None = None, verbose: bool = True) -> EmulatedModel:
    """Export a CompiledModel for another architecture and return it as an EmulatedModel."""
    family = compiled.family
    if not family.is_cross():
        raise QCompileError(f"--emulate is for libraries compiled for another architecture; "
                            f"{family.name} runs natively here")
    work_dir = work_dir or tempfile.mkdtemp(prefix="qcompile-")
    library = compiled.export(str(Path(work_dir) / "model.so"))
    return EmulatedModel(library, compiled.meta, family, verbose)
