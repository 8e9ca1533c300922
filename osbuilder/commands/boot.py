"""osbuilder boot: boot a kernel with an image or an initrd under QEMU and check the agent."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbuilder.arch import host_arch, parse_arch
from osbuilder.boot.accel import choose_accel
from osbuilder.boot.kernelparams import RootSpec, kernel_params, parse_verity, serial_console
from osbuilder.boot.qemu import AGENT_PORT_NAME, VmSpec
from osbuilder.boot.runtimeconfig import RuntimeBoot, read_runtime_config
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.errors import UsageError
from osbuilder.image.layout import FS_TYPES, VerityLine

if TYPE_CHECKING:
    from osbuilder.boot.check import BootReport


def configure(parser: argparse.ArgumentParser) -> None:
    assets = parser.add_argument_group("what to boot")
    assets.add_argument("--kernel", type=Path, help="guest kernel (vmlinux or bzImage)")
    what = assets.add_mutually_exclusive_group()
    what.add_argument("--image", type=Path, help="rootfs disk image")
    what.add_argument("--initrd", type=Path, help="initrd (the agent is init)")
    assets.add_argument("--config", type=Path, metavar="TOML",
                        help="Kata runtime configuration: kernel, image or initrd, kernel_params, rootfs_type, "
                             "disable_image_nvdimm, kernel_verity_params")
    assets.add_argument("--bundle", type=Path, metavar="TARBALL",
                        help="a release bundle: boot its image and its initrd with its configuration-qemu.toml")
    how = parser.add_argument_group("how to boot")
    how.add_argument("--no-dax", action="store_true", help="attach the image as virtio-blk instead of an NVDIMM")
    how.add_argument("--fs-type", choices=FS_TYPES, help="rootfs filesystem type (default: ext4, or the config's)")
    how.add_argument("--verity", metavar="LINE|FILE",
                     help="kernel_verity_params of a measured image, or the root_hash file written next to it")
    how.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                     help="auto: KVM only if a probe guest makes progress, else TCG")
    how.add_argument("--transport", choices=("auto", "vsock", "serial"), default="auto",
                     help="agent channel; auto: vsock when /dev/vhost-vsock exists, else virtio-serial")
    how.add_argument("--port-name", default=AGENT_PORT_NAME, help="virtio-serial port name of the agent")
    how.add_argument("--kernel-params", default="", metavar="PARAMS", help="extra kernel parameters")
    how.add_argument("--verbosity", choices=("quiet", "normal", "debug"), default="normal",
                     help="quiet/debug: the runtime's kernel parameters for those modes")
    how.add_argument("--memory", type=int, metavar="MB", help="guest memory (default 2048)")
    how.add_argument("--cpus", type=int, help="guest vCPUs (default 1)")
    how.add_argument("--arch", help="guest architecture (default: the host's)")
    how.add_argument("--qemu", metavar="PATH", help="QEMU binary (default qemu-system-<arch>)")
    checks = parser.add_argument_group("checks")
    checks.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="deadline for the whole boot check, from QEMU's start (default 300)")
    checks.add_argument("--expect-agent-version", metavar="VERSION",
                        help="fail unless the agent's Health/Version reports this version")
    checks.add_argument("--console-log", type=Path, metavar="FILE", help="write the guest console here")
    checks.add_argument("--no-budgets", action="store_true",
                        help="do not fail when the agent answers later than versions.yaml's agent-ready budget")


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


@contextlib.contextmanager
def _bundle_configs(bundle: Path) -> Iterator[tuple[str, list[tuple[str, RuntimeBoot]]]]:
    """Extract a bundle into a temporary directory: its VERSION and its QEMU configurations."""
    from osbuilder.bundle.extract import extract_bundle, qemu_configs

    workdir = Path(tempfile.mkdtemp(prefix="osb-bundle-"))
    try:
        root = extract_bundle(bundle, workdir)
        version = (root / "opt/kata/VERSION").read_text().strip() if (root / "opt/kata/VERSION").is_file() else ""
        yield version, [(label, read_runtime_config(path, root=root)) for label, path in qemu_configs(root)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _plan(args: argparse.Namespace) -> tuple[RuntimeBoot | None, Path, Path | None, Path | None]:
    from_config = read_runtime_config(args.config) if args.config else None
    kernel = args.kernel or (from_config.kernel if from_config else None)
    image = args.image if (args.image or args.initrd) else (from_config.image if from_config else None)
    initrd = args.initrd if (args.image or args.initrd) else (from_config.initrd if from_config else None)
    if kernel is None:
        raise UsageError(problem="no kernel to boot", where="--kernel", fix="pass --kernel or --config")
    if image is None and initrd is None:
        raise UsageError(problem="nothing to boot the kernel with", where="--image/--initrd",
                         fix="pass --image, --initrd, --config or --bundle")
    for path, option in ((kernel, "--kernel"), (image, "--image"), (initrd, "--initrd")):
        _require_file(path, option)
    return from_config, kernel, image, initrd


def boot_one(context: Context, args: argparse.Namespace, from_config: RuntimeBoot | None, kernel: Path,
             image: Path | None, initrd: Path | None) -> BootReport:
    arch = parse_arch(args.arch) if args.arch else host_arch()
    fs_type = args.fs_type or (from_config.rootfs_type if from_config else "ext4")
    nvdimm = image is not None and not args.no_dax and (from_config.nvdimm if from_config else True)
    verity = _verity(args.verity) or (from_config.verity if from_config and image is not None else None)
    spec = RootSpec("image" if image is not None else "initrd", fs_type, nvdimm, verity)
    extra = " ".join(part for part in (from_config.kernel_params if from_config else "", args.kernel_params) if part)
    console = serial_console(arch.name)
    cmdline = kernel_params(spec, arch=arch.name, console=console, extra=extra, verbosity=args.verbosity)
    transport = args.transport
    if transport == "auto":
        transport = "vsock" if Path("/dev/vhost-vsock").exists() else "serial"
    accel = choose_accel(args.accel, kernel, arch, context.cache, args.qemu)
    vm = VmSpec(arch=arch, kernel=kernel, cmdline=cmdline, accel=accel, initrd=initrd, image=image, nvdimm=nvdimm,
                transport=transport, port_name=args.port_name,
                memory_mb=args.memory or (from_config.memory_mb if from_config and from_config.memory_mb else 2048),
                cpus=args.cpus or (from_config.vcpus if from_config and from_config.vcpus else 1), qemu=args.qemu)
    # Imported here: the agent client needs a recent protobuf, which the other commands (a rootless
    # build-rootfs on a host's system Python, for one) must not depend on.
    from osbuilder.boot.check import CheckOptions, boot_check

    options = CheckOptions(timeout=args.timeout, expect_agent_version=args.expect_agent_version,
                           console_log=args.console_log, expect_dax=spec.dax(arch.name))
    report = boot_check(vm, options)
    if report.ok and not args.no_budgets:  # evidence hook (budgets): the agent-ready time budget
        from osbuilder.evidence.budgets import check_boot

        over = check_boot(context.versions, arch.name, report.kind, report.accel, report.timings.get("agent_ready"))
        if over is not None:
            report.ok = False
            report.error = over
            report.checks.append({"check": "budget", "ok": False, "detail": over})
    return report


def _render(label: str, report: BootReport) -> str:
    lines = [f"{label}: {'ok' if report.ok else 'FAILED'} ({report.kind}, accel {report.accel}, "
             f"transport {report.transport})"]
    for check in report.checks:
        lines.append(f"  {'ok  ' if check['ok'] else 'FAIL'} {check['check']}: {check['detail']}")
    timings = ", ".join(f"{key} {value:.2f}s" for key, value in report.timings.items() if value is not None)
    if timings:
        lines.append(f"  timings from QEMU start: {timings}")
    if report.error:
        lines.append(f"  error: {report.error}")
        if report.console_tail:
            lines.append("  console:")
            lines.extend(f"    | {text}" for text in report.console_tail)
    return "\n".join(lines)


def run(context: Context, args: argparse.Namespace) -> Outcome:
    if args.bundle is not None:
        _require_file(args.bundle, "--bundle")
        reports: list[tuple[str, BootReport]] = []
        with _bundle_configs(args.bundle) as (version, configs):
            # What ships must match: the agent in every asset answers with the bundle's version.
            args.expect_agent_version = args.expect_agent_version or version or None
            for label, config in configs:
                reports.append((label, boot_one(context, args, config, config.kernel, config.image, config.initrd)))
        ok = all(report.ok for _, report in reports)
        data: dict[str, Any] = {"ok": ok, "bundle": str(args.bundle),
                                "boots": [{"config": label, **report.to_json()} for label, report in reports]}
        text = "\n".join(_render(label, report) for label, report in reports)
        return Outcome(data, text, exit_code=0 if ok else 1)
    from_config, kernel, image, initrd = _plan(args)
    report = boot_one(context, args, from_config, kernel, image, initrd)
    label = str(image or initrd)
    return Outcome(report.to_json(), _render(label, report), exit_code=0 if report.ok else 1)


COMMAND = Command("boot", "boot assets under QEMU as the Kata runtime would and check the agent answers", configure,
                  run, order=60)
