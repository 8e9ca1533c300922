"""What to boot and how, from the command line, as frozen values; then the boot itself.

    assets = choose_assets(kernel, image, initrd, config)      # or: with bundle_configs(bundle) as ...
    vm, root = plan_vm(VmChoices(...), assets)                  # pure: the VM the runtime would make
    report = boot(vm, root, cache, timeout=..., expect_agent_version=...)

`choose_assets` and `bundle_configs` check each asset before anything starts (a kernel that is not
a kernel, an image without Kata's layout: exit 2, osbuilder.boot.preflight). `plan_vm` decides the
root's kernel parameters (osbuilder.kernelcmdline), memory and CPUs from the options and what a
runtime configuration says; nothing runs and the host is not asked. `prepare_vm` asks the host:
`--accel auto` may run a probe guest (remembered in the cache per host boot) and `--transport auto`
probes for a usable vsock. `boot` prepares and runs the check (osbuilder.boot.check). A bundle's
configurations are read from a temporary extraction that lives while its assets boot. Shared by
`osbuilder boot` and `osbuilder run` (whose sandbox starts the prepared VM).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from osbuilder import staging
from osbuilder.arch import host_arch, parse_arch
from osbuilder.boot.accel import choose_accel
from osbuilder.boot.preflight import check_assets
from osbuilder.boot.qemu import AGENT_PORT_NAME, VmSpec, machine_of
from osbuilder.boot.runtimeconfig import RuntimeBoot, read_runtime_config
from osbuilder.boot.transport import choose_transport
from osbuilder.cache import Cache
from osbuilder.errors import UsageError
from osbuilder.evidence.budgets import check_boot
from osbuilder.kernelcmdline import RootSpec, VerityLine, kernel_params, parse_verity, serial_console
from osbuilder.versions import Versions

if TYPE_CHECKING:
    from osbuilder.boot.check import BootReport

DEFAULT_MEMORY_MB = 2048


@dataclass(frozen=True)
class Assets:
    """A kernel with an image or an initrd, and the runtime configuration they came from."""

    kernel: Path
    image: Path | None
    initrd: Path | None
    config: RuntimeBoot | None = None
    kernel_arch: str | None = None  # what the kernel's header says (None: not known)
    kernel_option: str = "--kernel"  # where the kernel came from, for errors

    @property
    def label(self) -> str:
        return str(self.image or self.initrd)


@dataclass(frozen=True)
class VmChoices:
    """The "how to boot" options (osbuilder.boot.options.HOW)."""

    arch: str | None = None
    fs_type: str | None = None
    no_dax: bool = False
    verity: str | None = None  # the line, or the file holding it
    accel: str = "auto"
    transport: str = "auto"
    port_name: str = AGENT_PORT_NAME
    kernel_params: str = ""
    verbosity: str = "normal"
    memory_mb: int | None = None
    cpus: int | None = None
    qemu: str | None = None


def read_verity(value: str | None) -> VerityLine | None:
    """--verity: the kernel_verity_params line itself, or the root_hash file that holds it."""
    if not value:
        return None
    candidate = Path(value)
    text = candidate.read_text().strip() if candidate.is_file() else value
    return parse_verity(text, f"--verity {value}")


def choose_assets(kernel: Path | None, image: Path | None, initrd: Path | None, config: Path | None) -> Assets:
    """The assets of --kernel/--image/--initrd, completed from --config (the options win over it);
    each one checked to be what it claims."""
    from_config = read_runtime_config(config) if config else None
    kernel_given = kernel is not None
    kernel = kernel or (from_config.kernel if from_config else None)
    if image is None and initrd is None and from_config is not None:
        image, initrd = from_config.image, from_config.initrd
    if kernel is None:
        raise UsageError(problem="no kernel to boot", where="--kernel", fix="pass --kernel, --config or --bundle")
    if image is None and initrd is None:
        raise UsageError(problem="nothing to boot the kernel with", where="--image/--initrd",
                         fix="pass --image, --initrd, --config or --bundle")
    kernel_option = "--kernel" if kernel_given else f"--config {config} (kernel)"
    kernel_arch = check_assets(kernel, image, initrd, kernel_option=kernel_option)
    return Assets(kernel, image, initrd, from_config, kernel_arch, kernel_option)


def _config_assets(config: RuntimeBoot, where: str) -> Assets:
    kernel_arch = check_assets(config.kernel, config.image, config.initrd, kernel_option=f"{where} (kernel)",
                               image_option=f"{where} (image)", initrd_option=f"{where} (initrd)")
    return Assets(config.kernel, config.image, config.initrd, config, kernel_arch, f"{where} (kernel)")


@contextlib.contextmanager
def bundle_configs(bundle: Path, names: tuple[str, ...] = ()) -> Iterator[tuple[str, list[tuple[str, Assets]]]]:
    """A release bundle, extracted into a temporary directory until the block ends: its VERSION and
    the assets of its QEMU configurations (only those in `names`, when given), each checked."""
    from osbuilder.bundle.extract import extract_bundle, qemu_configs

    if not bundle.is_file():
        raise UsageError(problem=f"{bundle} does not exist or is not a file", where=f"--bundle {bundle}",
                         fix="give a kata-static-*.tar.zst made by osbuilder bundle")
    staging.sweep_temporary()  # what a killed run left
    with staging.temporary_directory(None, "bundle") as workdir:
        root = extract_bundle(bundle, workdir)
        version_file = root / "opt/kata/VERSION"
        version = version_file.read_text().strip() if version_file.is_file() else ""
        configs = [(label, path) for label, path in qemu_configs(root) if not names or label in names]
        if not configs:
            raise UsageError(problem=f"the bundle has none of {', '.join(names) or 'configuration-qemu*.toml'}",
                             where=f"--bundle {bundle}", fix="rebuild the bundle with osbuilder bundle")
        yield version, [(label, _config_assets(read_runtime_config(path, root=root), f"{bundle}: {label}"))
                        for label, path in configs]


def plan_vm(choices: VmChoices, assets: Assets) -> tuple[VmSpec, RootSpec]:
    """The VM the runtime would start for these assets, with the accelerator and the transport as
    requested ("auto" is decided by prepare_vm); pure."""
    config = assets.config
    arch = parse_arch(choices.arch) if choices.arch else host_arch()
    if assets.kernel_arch is not None and assets.kernel_arch != arch.name:
        # QEMU would start and the guest never print a line: refused before anything starts.
        raise UsageError(problem=f"{assets.kernel} is an {assets.kernel_arch} kernel, but the VM is "
                                 f"{arch.name} ({'--arch ' + choices.arch if choices.arch else 'this host'})",
                         where=f"{assets.kernel_option} {assets.kernel}",
                         fix=f"pass --arch {assets.kernel_arch}, or an {arch.name} kernel "
                             f"(osbuilder build-kernel --arch {arch.name})")
    fs_type = choices.fs_type or (config.rootfs_type if config else "ext4")
    nvdimm = (assets.image is not None and not choices.no_dax and machine_of(arch).image_nvdimm
              and (config.nvdimm if config else True))
    verity = read_verity(choices.verity) or (config.verity if config and assets.image is not None else None)
    root = RootSpec("image" if assets.image is not None else "initrd", fs_type, nvdimm, verity)
    extra = " ".join(part for part in (config.kernel_params if config else "", choices.kernel_params) if part)
    cmdline = kernel_params(root, arch=arch.name, console=serial_console(arch.name), extra=extra,
                            verbosity=choices.verbosity)
    vm = VmSpec(arch=arch, kernel=assets.kernel, cmdline=cmdline, accel=choices.accel, initrd=assets.initrd,
                image=assets.image, nvdimm=nvdimm, transport=choices.transport, port_name=choices.port_name,
                memory_mb=choices.memory_mb or (config.memory_mb if config and config.memory_mb else DEFAULT_MEMORY_MB),
                cpus=choices.cpus or (config.vcpus if config and config.vcpus else 1), qemu=choices.qemu)
    return vm, root


def prepare_vm(vm: VmSpec, cache: Cache | None) -> VmSpec:
    """The VM with what "auto" left open decided on this host: the accelerator (--accel auto uses
    KVM only after a probe guest made progress, remembered per host boot in the cache) and the
    agent channel (--transport auto: vsock when the host has a usable one)."""
    return dataclasses.replace(vm, accel=choose_accel(vm.accel, vm.kernel, vm.arch, cache, vm.qemu),
                               transport=choose_transport(vm.transport))


def boot(vm: VmSpec, root: RootSpec, cache: Cache | None, *, timeout: float = 300.0,
         expect_agent_version: str | None = None, console_log: Path | None = None,
         budgets: Versions | None = None) -> BootReport:
    """Boot a planned VM under QEMU and check the agent the way the runtime would talk to it; with
    `budgets`, a boot whose agent answers later than its agent-ready budget fails."""
    # Imported here: the agent client needs a recent protobuf, which the other commands (a rootless
    # build-rootfs on a host's system Python, for one) must not depend on.
    from osbuilder.boot.check import CheckOptions, boot_check

    options = CheckOptions(timeout=timeout, expect_agent_version=expect_agent_version, console_log=console_log,
                           expect_dax=root.dax(vm.arch.name))
    report = boot_check(prepare_vm(vm, cache), options)
    if budgets is not None:
        meet_budget(report, budgets, vm.arch.name)
    return report


def meet_budget(report: BootReport, versions: Versions, arch: str) -> None:
    """A passed boot over versions.yaml's agent-ready budget (its kind and accelerator) fails."""
    if not report.ok:
        return
    over = check_boot(versions, arch, report.kind, report.accel, report.timings.get("agent_ready"))
    if over is not None:
        report.ok = False
        report.error = over
        report.checks.append({"check": "budget", "ok": False, "detail": over})
