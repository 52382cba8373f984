"""Per-target-family choices: target dicts, default schedules, tensor intrinsics.

- targets/: the target families, one module each (target dict, intrinsic, packed weight tile,
  register budget, the machine the code runs on), and the `--target` names
- common.py: what the schedules share (finding blocks, an epilogue fused per tile, PrimFunc
  passes)
- default_cpu.py: the schedule every untuned PrimFunc gets (dispatches to the two below)
- packed.py: tensorized schedules of the packed conv2d / dense kernels (tiles searchable)
- amx.py: packed dense kernels on AMX tiles (x86-amx), their intrinsic and permission request
- depthwise.py: the schedule of fbgemm's depthwise kernel
- rows.py: row kernels (softmax, LayerNorm) computed a row at a time
- tuning.py: the MetaSchedule design space (which kernels are tuned, over what)
- dot_product.py: the description all our int8 dot-product intrinsics share
- x86_intrinsics.py: our VNNI 16x4 (the shipped one fails LLVM 22) and exact AVX2 8x2 intrinsics
- arm_intrinsics.py: aarch64 4x4 sdot (dotprod) and smull/saddlp (NEON) on i8-shifted activations

Nothing outside this package spells an `mcpu` or an intrinsic name.
"""

from .targets import FAMILIES, TARGETS, TargetFamily, resolve_family, resolve_target

__all__ = ["FAMILIES", "TARGETS", "TargetFamily", "resolve_family", "resolve_target"]
