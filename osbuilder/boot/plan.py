"""What to boot and how, from the command line: the assets (given, from a runtime configuration, or
from a release bundle), checked before anything starts, and the VM the runtime would make of them.

Shared by `osbuilder boot` and `osbuilder run`.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from osbuilder.arch import host_arch, parse_arch
from osbuilder.boot.accel import choose_accel
from osbuilder.boot.kernelparams import RootSpec, kernel_params, parse_verity, serial_console
from osbuilder.boot.preflight import check_assets
from osbuilder.boot.qemu import VmSpec
from osbuilder.boot.runtimeconfig import RuntimeBoot, read_runtime_config
from osbuilder.boot.transport import choose_transport
from osbuilder.cache import Cache
from osbuilder.errors import UsageError
from osbuilder.image.layout import VerityLine

DEFAULT_MEMORY_MB = 2048


@dataclass(frozen=True)
class Assets:
    kernel: Path
    image: Path | None
    initrd: Path | None
    config: RuntimeBoot | None = None  # the runtime configuration they come from

    @property
    def label(self) -> str:
        return str(self.image or self.initrd)


@dataclass(frozen=True)
class VmChoices:
    """The "how to boot" options (osbuilder.boot.options)."""

    arch: str | None = None
    fs_type: str | None = None
    no_dax: bool = False
    verity: str | None = None
    accel: str = "auto"
    transport: str = "auto"
    port_name: str = "agent.channel.0"
    kernel_params: str = ""
    verbosity: str = "normal"
    memory_mb: int | None = None
    cpus: int | None = None
    qemu: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> VmChoices:
        return cls(arch=args.arch, fs_type=args.fs_type, no_dax=args.no_dax, verity=args.verity, accel=args.accel,
                   transport=args.transport, port_name=args.port_name, kernel_params=args.kernel_params,
                   verbosity=args.verbosity, memory_mb=args.memory, cpus=args.cpus, qemu=args.qemu)


def _config_assets(config: RuntimeBoot, where: str) -> Assets:
    check_assets(config.kernel, config.image, config.initrd, kernel_option=f"{where} (kernel)",
                 image_option=f"{where} (image)", initrd_option=f"{where} (initrd)")
    return Assets(config.kernel, config.image, config.initrd, config)


def choose_assets(kernel: Path | None, image: Path | None, initrd: Path | None, config: Path | None) -> Assets:
    """The assets of --kernel/--image/--initrd, completed from --config; each one checked."""
    from_config = read_runtime_config(config) if config else None
    kernel = kernel or (from_config.kernel if from_config else None)
    if not (image or initrd) and from_config is not None:
        image, initrd = from_config.image, from_config.initrd
    if kernel is None:
        raise UsageError(problem="no kernel to boot", where="--kernel", fix="pass --kernel, --config or --bundle")
    if image is None and initrd is None:
        raise UsageError(problem="nothing to boot the kernel with", where="--image/--initrd",
                         fix="pass --image, --initrd, --config or --bundle")
    check_assets(kernel, image, initrd)
    return Assets(kernel, image, initrd, from_config)


@contextlib.contextmanager
def bundle_configs(bundle: Path, names: tuple[str, ...] = ()) -> Iterator[tuple[str, list[tuple[str, Assets]]]]:
    """Extract a release bundle into a temporary directory: its VERSION and the assets of its QEMU
    configurations (only those in `names`, when given), each checked."""
    from osbuilder.bundle.extract import extract_bundle, qemu_configs

    if not bundle.is_file():
        raise UsageError(problem=f"{bundle} does not exist or is not a file", where=f"--bundle {bundle}",
                         fix="give a kata-static-*.tar.zst made by osbuilder bundle")
    workdir = Path(tempfile.mkdtemp(prefix="osb-bundle-"))
    try:
        root = extract_bundle(bundle, workdir)
        version_file = root / "opt/kata/VERSION"
        version = version_file.read_text().strip() if version_file.is_file() else ""
        configs = [(label, path) for label, path in qemu_configs(root) if not names or label in names]
        if not configs:
            raise UsageError(problem=f"the bundle has none of {', '.join(names)}", where=f"--bundle {bundle}",
                             fix="rebuild the bundle with osbuilder bundle")
        yield version, [(label, _config_assets(read_runtime_config(path, root=root), f"{bundle}: {label}"))
                        for label, path in configs]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def read_verity(value: str | None) -> VerityLine | None:
    """--verity: the kernel_verity_params line itself, or the root_hash file that holds it."""
    if not value:
        return None
    candidate = Path(value)
    text = candidate.read_text().strip() if candidate.is_file() else value
    return parse_verity(text, f"--verity {value}")


def plan_vm(choices: VmChoices, assets: Assets, cache: Cache | None) -> tuple[VmSpec, RootSpec]:
    """The VM the runtime would start for these assets (KVM is probed once per host boot)."""
    config = assets.config
    arch = parse_arch(choices.arch) if choices.arch else host_arch()
    fs_type = choices.fs_type or (config.rootfs_type if config else "ext4")
    nvdimm = assets.image is not None and not choices.no_dax and (config.nvdimm if config else True)
    verity = read_verity(choices.verity) or (config.verity if config and assets.image is not None else None)
    root = RootSpec("image" if assets.image is not None else "initrd", fs_type, nvdimm, verity)
    extra = " ".join(part for part in (config.kernel_params if config else "", choices.kernel_params) if part)
    cmdline = kernel_params(root, arch=arch.name, console=serial_console(arch.name), extra=extra,
                            verbosity=choices.verbosity)
    vm = VmSpec(arch=arch, kernel=assets.kernel, cmdline=cmdline,
                accel=choose_accel(choices.accel, assets.kernel, arch, cache, choices.qemu),
                initrd=assets.initrd, image=assets.image, nvdimm=nvdimm,
                transport=choose_transport(choices.transport), port_name=choices.port_name,
                memory_mb=choices.memory_mb or (config.memory_mb if config and config.memory_mb else DEFAULT_MEMORY_MB),
                cpus=choices.cpus or (config.vcpus if config and config.vcpus else 1), qemu=choices.qemu)
    return vm, root
