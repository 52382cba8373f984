"""The architectures families run on, as this host sees them (Machine): x86-64 is the host;
aarch64 code is linked with Debian's cross toolchain, run under qemu-user and given the TVM
runtime of PyPI's aarch64 wheels.  Both are shared by several families; a family for
another architecture may define its Machine in its own module."""

from .family import Machine

X86_64 = Machine("x86_64")
# Debian's cross toolchain and qemu-user; the runtime from PyPI's aarch64 wheels
AARCH64 = Machine("aarch64", wheel_platform="manylinux_2_28_aarch64",
                  cross_compiler="aarch64-linux-gnu-g++", emulator="qemu-aarch64",
                  sysroot="/usr/aarch64-linux-gnu", packages=("g++-aarch64-linux-gnu", "qemu-user"))
