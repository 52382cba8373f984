"""x86-64 with AMX-INT8 (Sapphire Rapids and later): dense layers on tdpbusd tiles
(schedules.amx), everything else the AVX-512 VNNI family's code, whose tune logs apply."""

from .. import x86_intrinsics as intrinsics
from . import x86_avx512_vnni as vnni
from .family import TargetFamily
from .machines import X86_64

CPU_FLAGS = vnni.CPU_FLAGS + ("amx_tile", "amx_int8")


def target() -> dict:
    """The VNNI family's target dict with the AMX features."""
    return {**vnni.target(), "mattr": [*vnni.NOT_ON_ICELAKE, "+amx-tile", "+amx-int8"]}


FAMILY = TargetFamily(
    "x86-amx", "x86-64 with AMX-INT8 (Sapphire Rapids and later): dense layers on tdpbusd "
    "tiles, everything else as x86-avx512-vnni",
    target, intrinsics.VNNI_16x4_LOCAL, 16, 4, X86_64, CPU_FLAGS, acc_registers=16,
    pixel_intrinsic=intrinsics.VNNI_PIXELS_16x4_LOCAL, activation_block=16, amx=True,
    tune_logs_of=vnni.FAMILY.name, depthwise_quads=True,
    narrow_intrinsics=((8, intrinsics.VNNI_8x4_LOCAL), (4, intrinsics.VNNI_4x4_LOCAL)))
