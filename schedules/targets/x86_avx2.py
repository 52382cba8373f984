"""x86-64 with AVX2 and no VNNI (Haswell to Skylake): an exact vpmaddwd 8x2 tile."""

from .. import x86_intrinsics as intrinsics
from .family import TargetFamily, host_cores
from .machines import X86_64


def target() -> dict:
    return {"kind": "llvm", "mcpu": "haswell", "num-cores": host_cores()}


FAMILY = TargetFamily(
    "x86-avx2", "x86-64 with AVX2, no VNNI (Haswell-Skylake): exact vpmaddwd, 8x2 tile",
    target, intrinsics.AVX2_8x2_LOCAL, 8, 2, X86_64, ("avx2",), acc_registers=12)
