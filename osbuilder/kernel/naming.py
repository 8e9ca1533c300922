"""Kata's names for the kernel outputs (tools/packaging/kernel/build-kernel.sh install).

  vmlinux-<version>-<config_version><suffix>      x86_64: the vmlinux ELF; arm64: arch/arm64/boot/Image
  vmlinuz-<version>-<config_version><suffix>      x86_64: bzImage; arm64: Image.gz
  config-<version>-<config_version><suffix>       the final .config
  System.map-<version>-<config_version><suffix>
  vmlinux<suffix>.container -> vmlinux-...        the names the runtime configuration points at
  vmlinuz<suffix>.container -> vmlinuz-...
plus osbuilder's build record, kernel-<version>-<config_version><suffix>.json.

The suffix is -debug for a debug kernel, then -<build type>; confidential and measured kernels add
none (as in Kata).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAMED = re.compile(r"^(?:vmlinux|vmlinuz|config|System\.map|kernel)-(?P<base>.+?)(?:\.json)?$")


def kernel_suffix(debug: bool, build_type: str | None) -> str:
    """Kata's output-name suffix: -debug, then -<build type>; confidential/measured add none."""
    return ("-debug" if debug else "") + (f"-{build_type}" if build_type else "")


@dataclass(frozen=True)
class OutputNames:
    base: str  # <version>-<config_version><suffix>
    suffix: str

    @property
    def vmlinux(self) -> str:
        return f"vmlinux-{self.base}"

    @property
    def vmlinuz(self) -> str:
        return f"vmlinuz-{self.base}"

    @property
    def config(self) -> str:
        return f"config-{self.base}"

    @property
    def system_map(self) -> str:
        return f"System.map-{self.base}"

    @property
    def record(self) -> str:
        return f"kernel-{self.base}.json"

    @property
    def vmlinux_link(self) -> str:
        return f"vmlinux{self.suffix}.container"

    @property
    def vmlinuz_link(self) -> str:
        return f"vmlinuz{self.suffix}.container"

    def files(self) -> tuple[str, ...]:
        return (self.vmlinux, self.vmlinuz, self.config, self.system_map, self.record)

    def links(self) -> tuple[tuple[str, str], ...]:
        return ((self.vmlinux_link, self.vmlinux), (self.vmlinuz_link, self.vmlinuz))


def output_names(version: str, config_version: str, suffix: str = "") -> OutputNames:
    return OutputNames(f"{version}-{config_version}{suffix}", suffix)


def base_of(file_name: str) -> str | None:
    """'6.12.107-1-debug' from 'vmlinux-6.12.107-1-debug' (or config-, vmlinuz-, kernel-*.json)."""
    match = _NAMED.match(file_name)
    return match.group("base") if match else None
