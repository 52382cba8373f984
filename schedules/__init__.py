"""Per-target-family choices: target dicts, default schedules, tensor intrinsics.

- targets.py: the `--target` names
- default_cpu.py: the schedule untuned PrimFuncs get
- x86_intrinsics.py: our VNNI 16x4 intrinsic (the shipped one fails LLVM 22); not yet used by
  the compile path -- packing and tensorized schedules are the x86 speed issue's work

Nothing outside this package spells an `mcpu` or an intrinsic name.
"""

from .targets import TARGETS, resolve_target

__all__ = ["TARGETS", "resolve_target"]
