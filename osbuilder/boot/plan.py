"""Boot planning: what to boot and how, from a request, as frozen values; then the boot itself.

    request = BootRequest(kernel=..., image=...)               # the command line (osbuilder.boot.options)
    for target in targets(request):                           # one, or one per configuration of a bundle
        report = boot(plan_boot(request, target), cache)

`plan_boot` is pure: the root's kernel parameters (osbuilder.kernelcmdline), the transport, memory
and CPUs, and the checks, from the request and what a runtime configuration says. `boot` resolves
the accelerator (`--accel auto` may run a probe guest) and runs the check (osbuilder.boot.check).
A bundle's configurations are read from a temporary extraction that lives while its targets boot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from osbuilder import staging
from osbuilder.arch import Arch, host_arch, parse_arch
from osbuilder.boot.accel import choose_accel
from osbuilder.boot.qemu import AGENT_PORT_NAME, VmSpec
from osbuilder.boot.runtimeconfig import RuntimeBoot, read_runtime_config
from osbuilder.cache import Cache
from osbuilder.errors import UsageError
from osbuilder.kernelcmdline import RootSpec, VerityLine, kernel_params, parse_verity, serial_console

if TYPE_CHECKING:
    from osbuilder.boot.check import BootReport, CheckOptions

DEFAULT_MEMORY_MB = 2048
VSOCK_DEVICE = Path("/dev/vhost-vsock")


@dataclass(frozen=True)
class BootRequest:
    """What to boot and how (the option tables of osbuilder.boot.options)."""

    kernel: Path | None = None
    image: Path | None = None
    initrd: Path | None = None
    config: Path | None = None
    bundle: Path | None = None
    no_dax: bool = False
    fs_type: str | None = None
    verity: str | None = None  # the line, or the file holding it
    accel: str = "auto"
    transport: str = "auto"
    port_name: str = AGENT_PORT_NAME
    kernel_params: str = ""
    verbosity: str = "normal"
    memory: int | None = None
    cpus: int | None = None
    arch: str | None = None
    qemu: str | None = None
    timeout: float = 300.0
    expect_agent_version: str | None = None
    console_log: Path | None = None


@dataclass(frozen=True)
class BootTarget:
    """One boot: a kernel with an image or an initrd, and the runtime configuration they came from."""

    label: str
    kernel: Path
    image: Path | None
    initrd: Path | None
    config: RuntimeBoot | None = None
    bundle_version: str | None = None  # the agent in a bundle answers with the bundle's version


@dataclass(frozen=True)
class BootPlan:
    target: BootTarget
    arch: Arch
    root: RootSpec
    vm: VmSpec  # with accel as requested ("auto" until boot() resolves it)
    accel: str
    timeout: float
    expect_agent_version: str | None
    console_log: Path | None

    def check_options(self) -> CheckOptions:
        # Imported here: the agent client needs a recent protobuf, which the other commands (a rootless
        # build-rootfs on a host's system Python, for one) must not depend on.
        from osbuilder.boot.check import CheckOptions

        return CheckOptions(timeout=self.timeout, expect_agent_version=self.expect_agent_version,
                            console_log=self.console_log, expect_dax=self.root.dax(self.arch.name))


def _require_file(path: Path | None, option: str) -> None:
    if path is not None and not path.is_file():
        raise UsageError(problem=f"{path} does not exist or is not a file", where=f"{option} {path}",
                         fix="give the path of a built asset")


def _verity(value: str | None) -> VerityLine | None:
    if not value:
        return None
    candidate = Path(value)
    text = candidate.read_text().strip() if candidate.is_file() else value
    return parse_verity(text, f"--verity {value}")


def single_target(request: BootRequest) -> BootTarget:
    """The target of --kernel with --image/--initrd, or of --config (the options win over it)."""
    from_config = read_runtime_config(request.config) if request.config else None
    kernel = request.kernel or (from_config.kernel if from_config else None)
    given = request.image is not None or request.initrd is not None
    image = request.image if given else (from_config.image if from_config else None)
    initrd = request.initrd if given else (from_config.initrd if from_config else None)
    if kernel is None:
        raise UsageError(problem="no kernel to boot", where="--kernel", fix="pass --kernel or --config")
    if image is None and initrd is None:
        raise UsageError(problem="nothing to boot the kernel with", where="--image/--initrd",
                         fix="pass --image, --initrd, --config or --bundle")
    for path, option in ((kernel, "--kernel"), (image, "--image"), (initrd, "--initrd")):
        _require_file(path, option)
    return BootTarget(str(image or initrd), kernel, image, initrd, from_config)


@contextlib.contextmanager
def bundle_targets(bundle: Path) -> Iterator[list[BootTarget]]:
    """A bundle's QEMU configurations, from a temporary extraction that lives until the block ends."""
    from osbuilder.bundle.extract import extract_bundle, qemu_configs

    _require_file(bundle, "--bundle")
    staging.sweep_temporary()
    workdir = staging.make_directory(Path(tempfile.gettempdir()), "bundle")
    try:
        root = extract_bundle(bundle, workdir)
        version_file = root / "opt/kata/VERSION"
        version = version_file.read_text().strip() if version_file.is_file() else ""
        targets = []
        for label, path in qemu_configs(root):
            config = read_runtime_config(path, root=root)
            targets.append(BootTarget(label, config.kernel, config.image, config.initrd, config, version or None))
        yield targets
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def plan_boot(request: BootRequest, target: BootTarget) -> BootPlan:
    """How to boot a target: pure (the host is only asked whether it has vsock)."""
    config = target.config
    arch = parse_arch(request.arch) if request.arch else host_arch()
    fs_type = request.fs_type or (config.rootfs_type if config else "ext4")
    nvdimm = target.image is not None and not request.no_dax and (config.nvdimm if config else True)
    verity = _verity(request.verity) or (config.verity if config and target.image is not None else None)
    root = RootSpec("image" if target.image is not None else "initrd", fs_type, nvdimm, verity)
    extra = " ".join(part for part in (config.kernel_params if config else "", request.kernel_params) if part)
    cmdline = kernel_params(root, arch=arch.name, console=serial_console(arch.name), extra=extra,
                            verbosity=request.verbosity)
    transport = request.transport
    if transport == "auto":
        transport = "vsock" if VSOCK_DEVICE.exists() else "serial"
    vm = VmSpec(arch=arch, kernel=target.kernel, cmdline=cmdline, accel=request.accel, initrd=target.initrd,
                image=target.image, nvdimm=nvdimm, transport=transport, port_name=request.port_name,
                memory_mb=request.memory or (config.memory_mb if config and config.memory_mb else DEFAULT_MEMORY_MB),
                cpus=request.cpus or (config.vcpus if config and config.vcpus else 1), qemu=request.qemu)
    # What ships must match: the agent in every asset of a bundle answers with the bundle's version.
    expected = request.expect_agent_version or target.bundle_version
    return BootPlan(target, arch, root, vm, request.accel, request.timeout, expected, request.console_log)


def boot(plan: BootPlan, cache: Cache | None) -> BootReport:
    """Boot a plan under QEMU and check the agent; `cache` remembers the KVM probe per host boot."""
    from osbuilder.boot.check import boot_check

    accel = choose_accel(plan.accel, plan.vm.kernel, plan.arch, cache, plan.vm.qemu)
    return boot_check(dataclasses.replace(plan.vm, accel=accel), plan.check_options())
