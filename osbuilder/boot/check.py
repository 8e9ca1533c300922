"""The boot check: boot the assets as the runtime would and talk to the agent.

Checks, in order: Health/Check returns SERVING; Health/Version (compared when an expected version
is given); AgentService/GetGuestDetails; DAX on the root mount when the image is an NVDIMM (from the
agent's console line); DestroySandbox; the VM powers off by itself before the deadline. QEMU is
stopped in every case (success, failed check, timeout, Ctrl-C); runner.spawn ties it to our
lifetime so even a SIGKILLed osbuilder leaves none behind.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osbuilder import staging
from osbuilder.boot import guest
from osbuilder.boot.guest import GuestFailed
from osbuilder.boot.qemu import RunningVm, VmSpec, start_vm
from osbuilder.ttrpc.client import TtrpcClient, TtrpcError

log = logging.getLogger(__name__)

KERNEL_STARTED = re.compile(r"Linux version \d")
KERNEL_ROOT = re.compile(r"VFS: Mounted root|EXT4-fs \(\S+\): mounted filesystem|erofs.*mounted|"
                         r"XFS \(\S+\): Ending clean mount|Run /init as init process|Run /sbin/init")


@dataclass
class BootReport:
    ok: bool = False
    accel: str = ""
    transport: str = ""
    kind: str = ""  # image | initrd
    nvdimm: bool | None = None
    agent: dict[str, Any] = field(default_factory=dict)
    guest_details: dict[str, Any] | None = None
    dax: bool | None = None
    root: dict[str, str] | None = None
    timings: dict[str, float | None] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    console_tail: list[str] = field(default_factory=list)
    cmdline: str = ""
    qemu_exit: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckOptions:
    timeout: float = 300.0
    expect_agent_version: str | None = None
    console_log: Path | None = None
    poll_interval: float = 1.0
    # RootSpec.dax(): True when the root must be mounted with DAX, False when the command line does
    # not ask for it (dm-verity, non-x86 NVDIMMs), None when there is no NVDIMM root to check.
    expect_dax: bool | None = None


def boot_check(spec: VmSpec, options: CheckOptions) -> BootReport:
    report = BootReport(accel=spec.accel, transport=spec.transport, cmdline=spec.cmdline,
                        kind="initrd" if spec.image is None else "image",
                        nvdimm=None if spec.image is None else spec.nvdimm)
    staging.sweep_temporary()  # what a killed boot left (its QEMU died with it: PR_SET_PDEATHSIG)
    with staging.temporary_directory(None, "boot") as workdir:  # short: sockets have 108 bytes
        spec = _with_socket(spec, workdir)
        vm: RunningVm | None = None
        deadline = time.monotonic() + options.timeout
        try:
            vm = start_vm(spec, options.console_log)
            deadline = vm.started + options.timeout
            client = guest.connect(_open_channel(spec), vm, deadline)
            try:
                _run_checks(client, vm, spec, options, report, deadline)
            finally:
                client.close()
            powered_off = vm.wait_exit(deadline - time.monotonic())
            if powered_off is None:
                raise guest.failure(f"the VM did not power off after DestroySandbox within the {options.timeout:.0f} s "
                                    "deadline", vm)
            report.timings["powered_off"] = round(powered_off, 3)
            report.qemu_exit = vm.process.returncode
            _add(report, "powered_off", True, f"QEMU exited with status {vm.process.returncode}")
            report.ok = True
        except GuestFailed as failure:
            report.error = str(failure)
        finally:
            if vm is not None:
                vm.stop()
                if report.qemu_exit is None:
                    report.qemu_exit = vm.process.returncode
                _fill_console(report, vm)
    return report


def _with_socket(spec: VmSpec, workdir: Path) -> VmSpec:
    if spec.transport != "serial":
        return spec
    return dataclasses.replace(spec, agent_socket=workdir / "agent.sock")


def _open_channel(spec: VmSpec) -> Callable[[], TtrpcClient]:
    if spec.transport == "serial":
        assert spec.agent_socket is not None
        path = str(spec.agent_socket)
        return lambda: TtrpcClient.connect_unix(path, timeout=2)
    return lambda: TtrpcClient.connect_vsock(spec.vsock_cid, timeout=2)


def _run_checks(client: TtrpcClient, vm: RunningVm, spec: VmSpec, options: CheckOptions, report: BootReport,
                deadline: float) -> None:
    guest.wait_serving(client, vm, deadline, poll_interval=options.poll_interval,
                       deadline_text=f"the {options.timeout:.0f} s deadline")
    report.timings["agent_ready"] = round(time.monotonic() - vm.started, 3)
    report.agent["status"] = "SERVING"
    _add(report, "check", True, "Health/Check returned SERVING")

    version = _call(lambda: client.version(timeout=_left(deadline)), "Health/Version")
    report.agent.update(version=version.agent_version, grpc_version=version.grpc_version)
    if options.expect_agent_version is not None and version.agent_version != options.expect_agent_version:
        _add(report, "version", False, f"agent version {version.agent_version}, expected "
                                      f"{options.expect_agent_version}")
        raise GuestFailed(f"the agent reports version {version.agent_version!r} but "
                          f"{options.expect_agent_version!r} was expected (--expect-agent-version)")
    _add(report, "version", True, f"agent version {version.agent_version}")

    details = _call(lambda: client.guest_details(timeout=_left(deadline)), "AgentService/GetGuestDetails")
    report.guest_details = asdict(details)
    _add(report, "guest_details", True, f"agent {details.agent_version}, init_daemon={details.init_daemon}")

    _check_root(report, vm, options.expect_dax, deadline)

    _call(lambda: client.destroy_sandbox(timeout=_left(deadline)), "AgentService/DestroySandbox")
    _add(report, "destroy_sandbox", True, "DestroySandbox acknowledged")


def _check_root(report: BootReport, vm: RunningVm, expect_dax: bool | None, deadline: float) -> None:
    root = guest.agent_root(vm, max(min(deadline - time.monotonic(), 5), 0))
    kernel_root = vm.first(lambda text: KERNEL_ROOT.search(text) is not None)
    if root is not None:
        report.root = root.to_json()
        report.agent.setdefault("console_version", root.agent_version)
        report.timings["root_mounted"] = round(root.at if kernel_root is None else min(kernel_root.at, root.at), 3)
    elif kernel_root is not None:
        report.timings["root_mounted"] = round(kernel_root.at, 3)
    if expect_dax is None:
        report.dax = None
        return
    if root is None:
        _add(report, "dax", False, "no root-mount line from the agent")
        raise GuestFailed("DAX could not be confirmed: the agent printed no root-mount line")
    if not expect_dax:
        # e.g. a verity root: a device-mapper device on the pmem partitions, where DAX does not apply.
        report.dax = None
        _add(report, "dax", True, f"root on {root.device} without DAX, as the command line asks")
        return
    report.dax = root.dax
    if not report.dax:
        _add(report, "dax", False, f"root {root.device} mounted with {root.options}")
        raise GuestFailed(f"the root filesystem is not mounted with DAX ({root.device}: {root.options})")
    _add(report, "dax", True, f"root {root.device} ({root.fstype}) mounted with DAX")


def _call(function: Any, name: str) -> Any:
    try:
        return function()
    except TtrpcError as exc:
        raise GuestFailed(f"{name} failed: {exc}") from exc


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _add(report: BootReport, name: str, ok: bool, detail: str) -> None:
    report.checks.append({"check": name, "ok": ok, "detail": detail})


def _fill_console(report: BootReport, vm: RunningVm) -> None:
    lines = vm.snapshot()
    started = next((line for line in lines if KERNEL_STARTED.search(line.text)), None)
    if started is None and lines:
        started = lines[0]
    report.timings.setdefault("kernel_started", round(started.at, 3) if started else None)
    for key in ("root_mounted", "agent_ready", "powered_off"):
        report.timings.setdefault(key, None)
    report.timings = {key: report.timings[key] for key in
                      ("kernel_started", "root_mounted", "agent_ready", "powered_off")}
    if not report.ok:
        report.console_tail = guest.relevant_console(lines)
