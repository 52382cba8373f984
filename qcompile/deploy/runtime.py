"""The board side of a cross-compiled model: TVM runtime libraries and the C++ loader.

The runtime comes from the aarch64 wheels of the same apache-tvm / apache-tvm-ffi versions
this compiler runs on (a model library needs the runtime it was compiled against), fetched
with `pip download` from the package registry and cached under $QCOMPILE_CACHE (default
~/.cache/qcompile).  The loader (qcompile_run.cc) is cross-compiled against the tvm-ffi
headers of the installed tvm_ffi package (they do not depend on the architecture).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from ..errors import QCompileError

LOADER_SOURCE = Path(__file__).with_name("qcompile_run.cc")
PYTHON_LOADER = Path(__file__).with_name("run_model.py")
RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")


def cache_root() -> Path:
    """Where fetched runtimes and built loaders are kept."""
    return Path(os.environ.get("QCOMPILE_CACHE", Path.home() / ".cache" / "qcompile"))


def tvm_versions() -> dict:
    """{"apache-tvm": version, "apache-tvm-ffi": version} of the running compiler."""
    return {name: metadata.version(name) for name in ("apache-tvm", "apache-tvm-ffi")}


def runtime_libs(machine, verbose: bool = True) -> Path:
    """Directory holding libtvm_runtime.so and libtvm_ffi.so for `machine` (a
    schedules.targets Machine; fetched once from its PyPI wheels)."""
    arch = machine.arch
    if machine.wheel_platform is None:
        raise QCompileError(f"no runtime wheels known for {arch}")
    versions = tvm_versions()
    tag = "-".join(f"{k}{v}" for k, v in versions.items())
    target = cache_root() / f"runtime-{arch}-{tag}"
    if all((target / lib).exists() for lib in RUNTIME_LIBS):
        return target
    specs = [f"{name}=={version}" for name, version in versions.items()]
    if verbose:
        print(f"fetching the {arch} TVM runtime ({', '.join(specs)}; about 100 MB, once) ...",
              flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--platform", machine.wheel_platform, "--python-version",
               f"{sys.version_info.major}.{sys.version_info.minor}", "--dest", tmp, *specs]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise QCompileError(f"could not fetch the {arch} runtime wheels ({' '.join(specs)}): "
                                f"{done.stderr.strip()[-400:]}")
        cache_root().mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache_root(), prefix=".fetch-"))
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as zf:
                for member in zf.namelist():
                    if Path(member).name in RUNTIME_LIBS and "/lib/" in member:
                        with zf.open(member) as src, open(staging / Path(member).name, "wb") as dst:
                            shutil.copyfileobj(src, dst)
        missing = [lib for lib in RUNTIME_LIBS if not (staging / lib).exists()]
        if missing:
            shutil.rmtree(staging)
            raise QCompileError(f"the {arch} wheels hold no {', '.join(missing)}")
        for lib in RUNTIME_LIBS:
            (staging / lib).chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # complete or absent: an interrupted fetch leaves no half cache
    return target


def ffi_include_dirs() -> list[Path]:
    """The tvm-ffi C++ headers (and dlpack) of the installed tvm_ffi package."""
    import tvm_ffi

    root = Path(tvm_ffi.__file__).parent
    dirs = [root / "include", root / "3rdparty" / "dlpack" / "include"]
    if not (dirs[0] / "tvm" / "ffi" / "function.h").exists():
        raise QCompileError(f"the installed tvm_ffi has no C++ headers under {dirs[0]}")
    return dirs


def runtime_files(family, verbose: bool = True) -> list[Path]:
    """libtvm_runtime.so and libtvm_ffi.so for the family's machine: the installed ones when
    that is this machine, else fetched (runtime_libs)."""
    if family.is_cross():
        return [runtime_libs(family.machine, verbose) / lib for lib in RUNTIME_LIBS]
    import tvm
    import tvm_ffi

    found = []
    for package, lib in zip((tvm, tvm_ffi), RUNTIME_LIBS):
        path = Path(package.__file__).parent / "lib" / lib
        if not path.exists():
            raise QCompileError(f"the installed {package.__name__} has no {path}")
        found.append(path)
    return found


def build_loader(family, verbose: bool = True) -> Path:
    """The C++ loader compiled for the family's machine (cross-compiled for another
    architecture); built once per source and runtime, kept in the cache."""
    compiler = family.machine.require_tool(
        family.machine.cross_compiler if family.is_cross() else "g++",
        f"building the {family.arch} loader")
    lib_dirs = sorted({str(p.parent) for p in runtime_files(family, verbose)})
    digest = hashlib.sha256(LOADER_SOURCE.read_bytes() + compiler.encode()
                            + "".join(lib_dirs).encode()).hexdigest()[:12]
    out = cache_root() / f"qcompile_run-{family.arch}-{digest}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(f"building the {family.arch} loader (qcompile_run) ...", flush=True)
    tmp = out.with_suffix(".tmp")
    cmd = [compiler, "-std=c++17", "-O2", *[f"-I{d}" for d in ffi_include_dirs()],
           str(LOADER_SOURCE), "-o", str(tmp), *[f"-L{d}" for d in lib_dirs], "-Wl,--no-as-needed",
           "-ltvm_runtime", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN/lib:$ORIGIN"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise QCompileError(f"building the loader failed:\n{done.stderr[-2000:]}")
    tmp.rename(out)
    return out


def main() -> None:
    """Fetch the runtime of every other architecture a family runs on (`make setup-arm`)."""
    from ..schedules.targets import machines

    for machine in machines():
        if not machine.is_host() and machine.wheel_platform is not None:
            print(runtime_libs(machine))


if __name__ == "__main__":
    main()
