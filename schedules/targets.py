"""Target families and the `--target` names that select them.

A family names everything target-specific the compiler needs: the TVM target dict, the int8
dot-product intrinsic the packed kernels are tensorized with, and the weight tile it reads
(`out_block` x `in_block`, what qcompile.passes.pack_layout packs to).  Nothing outside
`schedules/` spells an `mcpu` or an intrinsic name.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Callable

import tvm


@dataclass(frozen=True)
class TargetFamily:
    name: str
    summary: str
    target: Callable[[], dict]       # the TVM target dict (computed late: it may read the host)
    dot_intrinsic: str | None        # tensor intrinsic for the packed tile; None: not tensorized
    out_block: int                   # packed weight tile: outputs x reduction elements
    in_block: int
    cpu_flags: tuple = ()            # /proc/cpuinfo flags the host needs to run this code
    acc_registers: int = 16          # vector registers a tile may keep accumulators in
    arch: str = "x86_64"             # the machine the code runs on (`uname -m`)
    signed_activations: bool = False  # the intrinsic takes i8 activations (u8 shifted by -128)
    cross_compiler: str | None = None  # C++ compiler linking the .so when the host is not `arch`
    qemu_cpu: str | None = None      # the CPU qemu-user emulates for `--emulate`
    # intrinsic for convs with pixels as lanes (out_block pixels x in_block channels, the
    # weights broadcast: pack_layout's conv2d_pixels / conv2d_pixel_rows); None: every conv
    # uses the channel-lane dot_intrinsic
    pixel_intrinsic: str | None = None
    # channel-lane convs hand their outputs to each other in [N, C/B, H, W, B] with this B
    # (their accumulator's channels): qcompile.passes.block_activations; None: NCHW throughout
    activation_block: int | None = None
    # packed dense kernels whose shape fits run on AMX tiles (schedules.amx), not dot_intrinsic
    amx: bool = False
    # the family whose shipped tune logs apply (its kernels are this family's); None: its own
    tune_logs_of: str | None = None
    # depthwise sums (fbgemm's pairs, exact int8 taps) run four taps per vpmaddubsw or
    # vpdpbusd (schedules.depthwise_quads: needs AVX-512 BW, VBMI and VNNI); False: their
    # expression vectorized as written
    depthwise_quads: bool = False

    def tvm_target(self) -> tvm.target.Target:
        return tvm.target.Target(self.target())

    def runs_here(self) -> bool:
        """True when this machine can run code compiled for the family."""
        return platform.machine() == self.arch and all(
            flag in _cpu_flags() for flag in self.cpu_flags)

    def is_cross(self) -> bool:
        """True when the code is for another architecture than this machine's."""
        return platform.machine() != self.arch

    def export_library(self, module, path: str) -> str:
        """Write a built TVM module as a shared library this family's machine loads (linked
        with the cross compiler when that is another architecture)."""
        if not self.is_cross():
            module.export_library(path)
            return path
        from tvm.support import cc

        from qcompile.deploy.runtime import require_tool

        require_tool(self.cross_compiler, f"exporting for {self.name}")
        module.export_library(path, fcompile=cc.cross_compiler(self.cross_compiler))
        return path


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):  # x86, aarch64
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Zen 4's instruction scheduling, minus the instructions Intel's AVX-512 VNNI parts lack: LLVM
# emits SSE4A insertq/extrq for byte shuffles under plain znver4 (a SIGILL on Intel), and the
# rest are AMD-only or newer than Ice Lake.  tests/test_targets.py holds the family to that.
_VNNI_NOT_ON_ICELAKE = ["-sse4a", "-avx512bf16", "-clzero", "-mwaitx", "-rdpru", "-shstk"]
# /proc/cpuinfo names of what the family's code may use (Ice Lake server and Zen 4 have all)
_VNNI_CPU_FLAGS = ("avx512f", "avx512bw", "avx512dq", "avx512cd", "avx512vl", "avx512_vnni",
                   "avx512vbmi", "avx512_vbmi2", "avx512ifma", "avx512_bitalg",
                   "avx512_vpopcntdq", "gfni", "vaes", "vpclmulqdq")


def _x86_vnni() -> dict:
    return {"kind": "llvm", "mcpu": "znver4", "mattr": list(_VNNI_NOT_ON_ICELAKE),
            "num-cores": _cores()}


# AMX-INT8 adds tile registers to the VNNI family's CPUs (Sapphire Rapids and later)
_AMX_CPU_FLAGS = _VNNI_CPU_FLAGS + ("amx_tile", "amx_int8")


def _x86_amx() -> dict:
    return {**_x86_vnni(), "mattr": [*_VNNI_NOT_ON_ICELAKE, "+amx-tile", "+amx-int8"]}


def _x86_avx2() -> dict:
    return {"kind": "llvm", "mcpu": "haswell", "num-cores": _cores()}


# A board's core count is not known here: 4 (the usual edge board) only sizes MetaSchedule's
# search; the thread count at run time is the loader's.
_ARM_CORES = 4


def _aarch64_dotprod() -> dict:
    return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76",
            "mattr": ["+neon", "+dotprod"], "num-cores": _ARM_CORES}


def _aarch64_neon() -> dict:
    return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
            "mattr": ["+neon"], "num-cores": _ARM_CORES}


def _families() -> dict:
    from .arm_intrinsics import NEON_4x4_LOCAL, SDOT_4x4_LOCAL
    from .x86_intrinsics import AVX2_8x2_LOCAL, VNNI_16x4_LOCAL, VNNI_PIXELS_16x4_LOCAL

    arm = {"arch": "aarch64", "signed_activations": True, "cross_compiler": "aarch64-linux-gnu-g++"}

    return {
        "x86-avx512-vnni": TargetFamily(
            "x86-avx512-vnni", "x86-64 with AVX-512 VNNI (Zen 4, Ice Lake and later): vpdpbusd",
            _x86_vnni, VNNI_16x4_LOCAL, 16, 4, _VNNI_CPU_FLAGS, acc_registers=16,
            pixel_intrinsic=VNNI_PIXELS_16x4_LOCAL, activation_block=16, depthwise_quads=True),
        "x86-amx": TargetFamily(
            "x86-amx", "x86-64 with AMX-INT8 (Sapphire Rapids and later): dense layers on tdpbusd "
            "tiles, everything else as x86-avx512-vnni",
            _x86_amx, VNNI_16x4_LOCAL, 16, 4, _AMX_CPU_FLAGS, acc_registers=16,
            pixel_intrinsic=VNNI_PIXELS_16x4_LOCAL, activation_block=16, amx=True,
            tune_logs_of="x86-avx512-vnni", depthwise_quads=True),
        "x86-avx2": TargetFamily(
            "x86-avx2", "x86-64 with AVX2, no VNNI (Haswell-Skylake): exact vpmaddwd, 8x2 tile",
            _x86_avx2, AVX2_8x2_LOCAL, 8, 2, ("avx2",), acc_registers=12),
        "aarch64-dotprod": TargetFamily(
            "aarch64-dotprod", "aarch64 with the dotprod extension (Cortex-A55/A76, Neoverse-N1): "
            "sdot on i8-shifted activations, 4x4 tile",
            _aarch64_dotprod, SDOT_4x4_LOCAL, 4, 4, ("asimd", "asimddp"), acc_registers=24,
            qemu_cpu="cortex-a76", **arm),
        "aarch64-neon": TargetFamily(
            "aarch64-neon", "aarch64 NEON without dotprod (Cortex-A53/A72): smull/saddlp widening "
            "multiplies, 4x4 tile",
            _aarch64_neon, NEON_4x4_LOCAL, 4, 4, ("asimd",), acc_registers=16,
            qemu_cpu="cortex-a72", **arm),  # no dotprod: an sdot would fault under emulation
    }


FAMILIES = _families()


def _host_x86() -> TargetFamily:
    for name in ("x86-amx", "x86-avx512-vnni"):
        if FAMILIES[name].runs_here():
            return FAMILIES[name]
    return FAMILIES["x86-avx2"]


# `--target` names: a family, or "x86" for the best family this host runs
TARGETS = ["x86", *FAMILIES]


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
