"""What a target family is: the facts the compiler and the deploy side need of one kind of CPU.

A family names the TVM target dict, the int8 dot-product intrinsic the packed kernels are
tensorized with, and the weight tile it reads (`out_block` x `in_block`, what
qcompile.passes.pack_layout packs to).  Its `machine` says how code for it is linked, run and
emulated on this host.  Each family is one module of this package (x86_avx512_vnni, ...);
nothing outside schedules/ spells an `mcpu` or an intrinsic name.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from typing import Callable

import tvm


@dataclass(frozen=True)
class Machine:
    """An architecture as this host sees it: how its libraries are linked and run here."""

    arch: str                          # `uname -m` of the machine the code runs on
    wheel_platform: str | None = None  # PyPI platform tag of its apache-tvm runtime wheels
    cross_compiler: str | None = None  # C++ compiler linking its .so on another host
    emulator: str | None = None        # qemu-user binary running its code on another host
    sysroot: str | None = None         # where that emulator finds the dynamic loader and libc
    packages: tuple = ()               # Debian packages providing cross_compiler and emulator

    def require_tool(self, tool: str, what: str) -> str:
        """Path of `tool` on PATH, or a QCompileError saying how to install it."""
        from qcompile.errors import QCompileError

        path = shutil.which(tool)
        if path is None:
            hint = (f"`make setup-arm` installs them (Debian: apt-get install "
                    f"{' '.join(self.packages)})" if self.packages else "install it")
            raise QCompileError(f"{what} needs {tool}, which is not installed: {hint}")
        return path

    def is_host(self) -> bool:
        """True when this machine is the host's architecture."""
        return platform.machine() == self.arch


@dataclass(frozen=True)
class TargetFamily:
    name: str
    summary: str
    target: Callable[[], dict]       # the TVM target dict (computed late: it may read the host)
    dot_intrinsic: str | None        # tensor intrinsic for the packed tile; None: not tensorized
    out_block: int                   # packed weight tile: outputs x reduction elements
    in_block: int
    machine: Machine                 # the architecture the code runs on
    cpu_flags: tuple = ()            # /proc/cpuinfo flags the host needs to run this code
    acc_registers: int = 16          # vector registers a tile may keep accumulators in
    signed_activations: bool = False  # the intrinsic takes i8 activations (u8 shifted by -128)
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
    # (lanes, intrinsic) of the same dot product on fewer outputs than out_block: grouped convs
    # whose groups have fewer output channels tile by one of them (pack_layout, group_lanes)
    narrow_intrinsics: tuple = ()

    @property
    def arch(self) -> str:
        return self.machine.arch

    @property
    def group_lanes(self) -> tuple:
        """The output-tile widths of channel-lane kernels, widest first (out_block, then the
        narrow intrinsics'): what a grouped conv's per-group tile may be."""
        return tuple(sorted({self.out_block, *(n for n, _ in self.narrow_intrinsics)},
                            reverse=True))

    def dot_intrinsic_for(self, lanes: int) -> str:
        """The channel-lane intrinsic of a tile `lanes` outputs wide."""
        if lanes == self.out_block:
            return self.dot_intrinsic
        for n, name in self.narrow_intrinsics:
            if n == lanes:
                return name
        raise ValueError(f"{self.name} has no {lanes}-lane dot-product intrinsic")

    def tvm_target(self) -> tvm.target.Target:
        return tvm.target.Target(self.target())

    def runs_here(self) -> bool:
        """True when this machine can run code compiled for the family."""
        return self.machine.is_host() and all(flag in cpu_flags() for flag in self.cpu_flags)

    def is_cross(self) -> bool:
        """True when the code is for another architecture than this machine's."""
        return not self.machine.is_host()

    def export_library(self, module, path: str) -> str:
        """Write a built TVM module as a shared library this family's machine loads (linked
        with the machine's cross compiler when that is another architecture)."""
        if not self.is_cross():
            module.export_library(path)
            return path
        from tvm.support import cc

        compiler = self.machine.cross_compiler
        if compiler is None:
            from qcompile.errors import QCompileError

            raise QCompileError(f"no cross compiler known for {self.arch} on this host")
        self.machine.require_tool(compiler, f"exporting for {self.name}")
        module.export_library(path, fcompile=cc.cross_compiler(compiler))
        return path


def cpu_flags() -> set:
    """The host CPU's feature flags (/proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):  # x86, aarch64
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def host_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
