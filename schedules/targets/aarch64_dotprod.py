"""aarch64 with the dotprod extension (Armv8.2+: Cortex-A55/A76, Neoverse-N1): sdot on
i8-shifted activations, 4x4 tile; cross-linked, emulated as a Cortex-A76."""

from .. import arm_intrinsics as intrinsics
from .machines import AARCH64
from .family import TargetFamily

# A board's core count is not known here: 4 (the usual edge board) only sizes MetaSchedule's
# search; the thread count at run time is the loader's.
BOARD_CORES = 4


def target() -> dict:
    return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76",
            "mattr": ["+neon", "+dotprod"], "num-cores": BOARD_CORES}


FAMILY = TargetFamily(
    "aarch64-dotprod", "aarch64 with the dotprod extension (Cortex-A55/A76, Neoverse-N1): "
    "sdot on i8-shifted activations, 4x4 tile",
    target, intrinsics.SDOT_4x4_LOCAL, 4, 4, AARCH64, ("asimd", "asimddp"), acc_registers=24,
    signed_activations=True, qemu_cpu="cortex-a76")
