"""Per-target-family choices: target dicts, default schedules, tensor intrinsics.

- targets.py: the target families (target dict, intrinsic, packed weight tile, register
  budget) and the `--target` names
- default_cpu.py: the schedule every untuned PrimFunc gets (dispatches to the two below)
- packed.py: tensorized schedules of the packed conv2d / dense kernels (tiles searchable)
- depthwise.py: the schedule of fbgemm's depthwise kernel
- tuning.py: the MetaSchedule design space (which kernels are tuned, over what)
- x86_intrinsics.py: our VNNI 16x4 (the shipped one fails LLVM 22) and exact AVX2 8x2 intrinsics

Nothing outside this package spells an `mcpu` or an intrinsic name.
"""

from .targets import FAMILIES, TARGETS, TargetFamily, resolve_family, resolve_target

__all__ = ["FAMILIES", "TARGETS", "TargetFamily", "resolve_family", "resolve_target"]
