"""Architecture names: osbuilder and Kata use `uname -m` names; Debian, the kernel and QEMU differ."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from osbuilder.errors import UsageError


@dataclass(frozen=True)
class Arch:
    name: str  # uname -m: x86_64, aarch64
    debian: str  # amd64, arm64
    # ARCH= for the kernel's make, also the kernel-configs directory name. x86_64 rather than x86:
    # with ARCH=x86, allnoconfig answers "n" to 64BIT and yields an i386 kernel.
    kernel: str
    qemu: str  # qemu-system-<qemu>
    cross_prefix: str  # CROSS_COMPILE= when building on another architecture
    kernel_image: str  # the compressed boot image, relative to the kernel build dir
    uncompressed_image: str  # what Kata ships as vmlinux-<ver> for this architecture


ARCHES: dict[str, Arch] = {
    "x86_64": Arch("x86_64", "amd64", "x86_64", "x86_64", "x86_64-linux-gnu-",
                   "arch/x86/boot/bzImage", "vmlinux"),
    "aarch64": Arch("aarch64", "arm64", "arm64", "aarch64", "aarch64-linux-gnu-",
                    "arch/arm64/boot/Image.gz", "arch/arm64/boot/Image"),
}
ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def host_arch() -> Arch:
    return parse_arch(platform.machine(), "host")


def parse_arch(value: str, where: str = "--arch") -> Arch:
    name = ALIASES.get(value, value)
    if name not in ARCHES:
        raise UsageError(
            problem=f"unsupported architecture '{value}'",
            where=where,
            fix=f"use one of {', '.join(ARCHES)}",
        )
    return ARCHES[name]
