"""x86-64 with AVX-512 VNNI (Zen 4, Ice Lake and later): packed kernels on vpdpbusd, 16x4 tile;
1x1 convs and stems with pixels as lanes; depthwise sums four taps per instruction."""

from .. import x86_intrinsics as intrinsics
from .family import TargetFamily, host_cores
from .machines import X86_64

# Zen 4's instruction scheduling, minus the instructions Intel's AVX-512 VNNI parts lack: LLVM
# emits SSE4A insertq/extrq for byte shuffles under plain znver4 (a SIGILL on Intel), and the
# rest are AMD-only or newer than Ice Lake.  tests/test_targets.py holds the family to that.
NOT_ON_ICELAKE = ["-sse4a", "-avx512bf16", "-clzero", "-mwaitx", "-rdpru", "-shstk"]
# /proc/cpuinfo names of what the family's code may use (Ice Lake server and Zen 4 have all)
CPU_FLAGS = ("avx512f", "avx512bw", "avx512dq", "avx512cd", "avx512vl", "avx512_vnni",
             "avx512vbmi", "avx512_vbmi2", "avx512ifma", "avx512_bitalg", "avx512_vpopcntdq",
             "gfni", "vaes", "vpclmulqdq")


def target() -> dict:
    """The TVM target dict (LLVM znver4 without the AMD-only features; every core)."""
    return {"kind": "llvm", "mcpu": "znver4", "mattr": list(NOT_ON_ICELAKE),
            "num-cores": host_cores()}


FAMILY = TargetFamily(
    "x86-avx512-vnni", "x86-64 with AVX-512 VNNI (Zen 4, Ice Lake and later): vpdpbusd",
    target, intrinsics.VNNI_16x4_LOCAL, 16, 4, X86_64, CPU_FLAGS, acc_registers=16,
    pixel_intrinsic=intrinsics.VNNI_PIXELS_16x4_LOCAL, activation_block=16, depthwise_quads=True,
    narrow_intrinsics=((8, intrinsics.VNNI_8x4_LOCAL), (4, intrinsics.VNNI_4x4_LOCAL)))
