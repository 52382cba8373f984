"""Named targets users pass as `--target`."""

from __future__ import annotations

import os

import tvm


def _host_cpu() -> str:
    try:
        return str(tvm.target.codegen.llvm_get_system_cpu())
    except Exception:  # noqa: BLE001 - older LLVMs: fall back to a generic CPU
        return "x86-64"


def _x86():
    return {"kind": "llvm", "mcpu": _host_cpu(), "num-cores": os.cpu_count() or 1}


# name -> function returning the target dict (host-dependent entries are computed late)
TARGETS = {
    "x86": _x86,
    "x86-avx512-vnni": lambda: {"kind": "llvm", "mcpu": "znver4", "num-cores": 2},
}


def resolve_target(name: str) -> tvm.target.Target:
    """A `--target` name (or a TVM target dict) as a tvm Target."""
    from qcompile.errors import QCompileError

    if isinstance(name, dict):
        return tvm.target.Target(name)
    if name not in TARGETS:
        raise QCompileError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    return tvm.target.Target(TARGETS[name]())
