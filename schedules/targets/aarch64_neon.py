"""aarch64 NEON without dotprod (Cortex-A53/A72): smull/saddlp widening multiplies on
i8-shifted activations, 4x4 tile; emulated as a Cortex-A72 (no dotprod: a stray sdot faults)."""

from .. import arm_intrinsics as intrinsics
from .aarch64_dotprod import BOARD_CORES
from .family import TargetFamily
from .machines import AARCH64


def target() -> dict:
    return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
            "mattr": ["+neon"], "num-cores": BOARD_CORES}


FAMILY = TargetFamily(
    "aarch64-neon", "aarch64 NEON without dotprod (Cortex-A53/A72): smull/saddlp widening "
    "multiplies, 4x4 tile",
    target, intrinsics.NEON_4x4_LOCAL, 4, 4, AARCH64, ("asimd",), acc_registers=16,
    signed_activations=True, qemu_cpu="cortex-a72")
