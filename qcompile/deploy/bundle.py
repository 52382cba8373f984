"""`qcompile package model.so -o bundle.tar.gz`: everything a board needs to run the model.

    <name>/model.so, model.so.json     the library and its sidecar (shapes, numerics, target)
    <name>/qcompile_run                the C++ loader, built for the board (rpath: lib/)
    <name>/qcompile_run.cc             its source, to rebuild on the board
    <name>/run_model.py                the loader for boards with Python and apache-tvm
    <name>/lib/libtvm_runtime.so, lib/libtvm_ffi.so   the TVM runtime the library needs
    <name>/README.md                   how to run it there
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from qcompile.schedules import resolve_family

from ..errors import QCompileError
from ..numerics.contracts import EAGER, default_contract, get_contract
from .runtime import LOADER_SOURCE, PYTHON_LOADER, build_loader, runtime_files, tvm_versions

_README = """# {name}: a qcompile model for {family}

{summary}

Compiled with qcompile for `{family}` ({arch}), `{numerics}` numerics, input(s):
{inputs}
TVM runtime: apache-tvm {tvm}, apache-tvm-ffi {ffi} (in `lib/`; the library needs exactly these).

## Run it (no Python needed)

    tar xzf {name}.tar.gz && cd {name}
    ./qcompile_run model.so input.npy output.npy

`qcompile_run` finds `lib/` through its rpath.  `input.npy` is a NumPy file (float32, C order)
of the shape above (several inputs: `a.npy,b.npy`); the output is written as `output.npy`
(several outputs: `output.0.npy`, ...).  More inferences in one process:
`./qcompile_run model.so in0.npy out0.npy in1.npy out1.npy ...`.

Latency on the board (median of 50 runs after one warm-up call):

    ./qcompile_run --threads {threads} --repeat 50 model.so input.npy output.npy

## Rebuild the loader on the board

With a C++17 compiler and the tvm-ffi headers (`pip download --no-deps apache-tvm-ffi=={ffi}`,
unzip, use its `tvm_ffi/include` and `tvm_ffi/3rdparty/dlpack/include`):

    g++ -std=c++17 -O2 -I$FFI/include -I$FFI/3rdparty/dlpack/include qcompile_run.cc \\
        -o qcompile_run -Llib -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi -Wl,-rpath,'$ORIGIN/lib'

## With Python

    pip install apache-tvm=={tvm} apache-tvm-ffi=={ffi} numpy
    python3 run_model.py model.so input.npy output.npy --repeat 50

## Check it against the reference

`{numerics}` numerics are measured against {reference}; the outputs are {promise}.
On the host, `qcompile verify MODEL --target {family} --emulate` runs this code under qemu and
compares it with that reference.  On the board, compare `output.npy` with the reference's
output for the same input.
"""


def _model_meta(library: Path) -> dict:
    sidecar = Path(str(library) + ".json")
    if not sidecar.exists():
        raise QCompileError(f"{library} has no sidecar {sidecar.name}: package a library "
                            "written by `qcompile compile` (or CompiledModel.export)")
    with open(sidecar) as f:
        return json.load(f)


def package(library: str, output: str, verbose: bool = True) -> str:
    """Write the board bundle (see the module docstring) of `library` to `output`."""
    library = Path(library)
    if not library.exists():
        raise QCompileError(f"no such library: {library}")
    meta = _model_meta(library)
    family = resolve_family(meta.get("target_family", "x86"))
    runtime = runtime_files(family, verbose)
    loader = build_loader(family, verbose)
    name = Path(output).name
    for suffix in (".tar.gz", ".tgz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    versions = tvm_versions()
    contract = get_contract(meta.get("numerics") or default_contract(EAGER).name)
    shapes = meta.get("input_shapes", [])
    readme = _README.format(
        name=name, family=family.name, arch=family.arch, summary=family.summary,
        numerics=contract.name, threads=meta.get("threads") or 4,
        inputs="".join(f"- input {i}: float32 {tuple(s)}\n" for i, s in enumerate(shapes)),
        tvm=versions["apache-tvm"], ffi=versions["apache-tvm-ffi"],
        reference=contract.reference.description, promise=contract.tolerance.description)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        (root / "lib").mkdir(parents=True)
        shutil.copy(library, root / "model.so")
        shutil.copy(str(library) + ".json", root / "model.so.json")
        shutil.copy(loader, root / "qcompile_run")
        shutil.copy(LOADER_SOURCE, root / "qcompile_run.cc")
        shutil.copy(PYTHON_LOADER, root / "run_model.py")
        for lib in runtime:
            shutil.copy(lib, root / "lib" / lib.name)
        (root / "README.md").write_text(readme)
        for exe in (root / "qcompile_run", root / "run_model.py"):
            exe.chmod(0o755)
        os.makedirs(Path(output).resolve().parent, exist_ok=True)
        with tarfile.open(output, "w:gz") as tar:
            tar.add(root, arcname=name)
    if verbose:
        size_mb = os.path.getsize(output) / 1e6
        print(f"bundle {output}: {family.name} library, loaders, runtime ({size_mb:.1f} MB)")
    return output
