"""Per-target-family choices: target dicts, default schedules, tensor intrinsics.

- targets.py: the target families (target dict, intrinsic, packed weight tile), `--target` names
- default_cpu.py: the schedule untuned PrimFuncs get (tensorized for packed kernels)
- packed.py: the tensorized default schedules of the packed conv2d / dense kernels
- x86_intrinsics.py: our VNNI 16x4 intrinsic (the shipped one fails LLVM 22)

Nothing outside this package spells an `mcpu` or an intrinsic name.
"""

from .targets import FAMILIES, TARGETS, TargetFamily, resolve_family, resolve_target

__all__ = ["FAMILIES", "TARGETS", "TargetFamily", "resolve_family", "resolve_target"]
