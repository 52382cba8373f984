"""Where a measurement comes from: the CPU, the libraries, the code and the command line.
Every bench and garden JSON carries it, so figures from different machines can be told apart."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import subprocess
import sys

from qcompile.schedules.targets.family import cpu_flags, host_cores

from .tuning.logs import cpu_signature, cpuinfo

# the CPU features int8 speed depends on (x86 and aarch64 spellings)
_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
          "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm")
_PACKAGES = ("qcompile", "torch", "apache-tvm", "torchao", "onnxruntime", "openvino")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _commit() -> str | None:
    """The qcompile checkout's commit (with "+dirty" for uncommitted changes), None outside one."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def provenance(threads: int | None = None) -> dict:
    """This run's machine, library versions, qcompile commit, UTC time and command line."""
    info = cpuinfo()
    return {
        "cpu": info.get("model name"), "cpu_signature": cpu_signature(),
        "cpu_flags": sorted(set(_FLAGS) & cpu_flags()), "cores": host_cores(),
        "threads": threads, "versions": {p: _version(p) for p in _PACKAGES},
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
