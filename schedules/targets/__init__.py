"""The target families (one module each) and the `--target` names that select them.

Importing a family's module registers its tensor intrinsics (also in MetaSchedule's builder
processes, which import this package).  `python -m qcompile.schedules.targets packages ARCH`
prints the Debian packages a host needs to cross-compile and emulate ARCH; `missing ARCH` prints
them only when a tool is not installed (`make setup-arm`).
"""

from __future__ import annotations

import shutil
import sys

import tvm

from . import aarch64_dotprod, aarch64_neon, x86_amx, x86_avx2, x86_avx512_vnni
from .family import Machine, TargetFamily, cpu_flags

FAMILIES = {m.FAMILY.name: m.FAMILY for m in (
    x86_avx512_vnni, x86_amx, x86_avx2, aarch64_dotprod, aarch64_neon)}

# `--target` names: a family, or "x86" for the best family this host runs
TARGETS = ["x86", *FAMILIES]
_X86_PREFERENCE = ("x86-amx", "x86-avx512-vnni", "x86-avx2")


def _host_x86() -> TargetFamily:
    for name in _X86_PREFERENCE[:-1]:
        if FAMILIES[name].runs_here():
            return FAMILIES[name]
    return FAMILIES[_X86_PREFERENCE[-1]]


def resolve_family(name) -> TargetFamily:
    """A `--target` name as its TargetFamily."""
    from qcompile.errors import QCompileError

    if name == "x86":
        return _host_x86()
    if name not in FAMILIES:
        raise QCompileError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    return FAMILIES[name]


def resolve_target(name) -> tvm.target.Target:
    """A `--target` name (or a TVM target dict) as a tvm Target."""
    if isinstance(name, dict):
        return tvm.target.Target(name)
    return resolve_family(name).tvm_target()


def machines(arch: str | None = None) -> list[Machine]:
    """The distinct machines of the families (those of `arch` only, when given)."""
    found = []
    for family in FAMILIES.values():
        if family.machine not in found and arch in (None, family.arch):
            found.append(family.machine)
    return found


def main(argv=None) -> int:
    """`packages ARCH`: the Debian packages ARCH's machine needs on this host, space-separated;
    `missing ARCH`: the same when its cross compiler or emulator is not on PATH, else nothing."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("packages", "missing"):
        print("usage: python -m qcompile.schedules.targets packages|missing ARCH", file=sys.stderr)
        return 2
    wanted = [m for m in machines(args[1])
              if args[0] == "packages" or not all(shutil.which(tool) for tool in (
                  m.cross_compiler, m.emulator) if tool)]
    print(" ".join(p for m in wanted for p in m.packages))
    return 0


__all__ = ["FAMILIES", "TARGETS", "Machine", "TargetFamily", "cpu_flags", "machines",
           "resolve_family", "resolve_target"]
