"""QEMU for boot checks: the command line the Kata runtime would use, and a console reader.

The VM gets the kernel and either an initrd, or the image as an NVDIMM backed read-only by the
file (nvdimm=on; DAX) or as a virtio-blk disk. The agent channel is vsock (production) or a
virtio-serial port whose host end is a unix socket (no vhost-vsock on these machines).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from osbuilder import runner
from osbuilder.arch import Arch

AGENT_PORT_NAME = "agent.channel.0"
SHARED_FS_TAG = "kataShared"  # the tag the runtime gives the shared directory; the agent mounts it by this name
SHARED_FS_KINDS = ("virtio-fs", "virtio-9p")


@dataclass(frozen=True)
class SharedFs:
    """The directory shared with the guest, as the runtime attaches it: virtio-fs through a
    vhost-user socket that virtiofsd serves (the guest RAM must then be shared memory), or 9p, which
    QEMU serves from `directory` itself."""

    kind: str  # "virtio-fs" | "virtio-9p"
    socket: Path | None = None  # virtio-fs: virtiofsd's vhost-user socket
    directory: Path | None = None  # virtio-9p: the exported directory
    tag: str = SHARED_FS_TAG


@dataclass(frozen=True)
class VmSpec:
    arch: Arch
    kernel: Path
    cmdline: str
    accel: str  # "kvm" | "tcg"
    initrd: Path | None = None
    image: Path | None = None
    nvdimm: bool = True
    transport: str = "serial"  # "serial" | "vsock"
    agent_socket: Path | None = None  # serial transport: QEMU listens here
    vsock_cid: int = 3
    port_name: str = AGENT_PORT_NAME
    memory_mb: int = 2048
    cpus: int = 1
    qemu: str | None = None
    shared_fs: SharedFs | None = None
    name: str = "osbuilder-boot"  # QEMU's -name: what tests and users find it by in the process list
    # Run QEMU through this command (e.g. nsenter into the sandbox's mount namespace).
    wrapper: tuple[str, ...] = ()


def qemu_binary(spec: VmSpec) -> str:
    return spec.qemu or f"qemu-system-{spec.arch.qemu}"


def qemu_argv(spec: VmSpec) -> list[str]:
    x86 = spec.arch.name == "x86_64"
    nvdimm = spec.image is not None and spec.nvdimm
    machine = "q35" if x86 else "virt,gic-version=max"
    machine += f",accel={spec.accel}"
    if nvdimm:
        machine += ",nvdimm=on"
    argv = [
        *spec.wrapper, qemu_binary(spec), "-name", spec.name, "-machine", machine,
        "-cpu", "host" if spec.accel == "kvm" else "max",
        "-smp", str(spec.cpus),
        # An NVDIMM needs memory slots and headroom above RAM, as the runtime configures.
        "-m", f"{spec.memory_mb}M,slots=2,maxmem={spec.memory_mb + 2048}M" if nvdimm else f"{spec.memory_mb}M",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-display", "none",
        "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
        "-kernel", str(spec.kernel), "-append", spec.cmdline,
    ]
    if spec.initrd is not None:
        argv += ["-initrd", str(spec.initrd)]
    if spec.image is not None:
        size = spec.image.stat().st_size
        if nvdimm:
            argv += [
                "-object", f"memory-backend-file,id=mem0,share=on,readonly=on,mem-path={spec.image},size={size}",
                "-device", "nvdimm,id=nv0,memdev=mem0,unarmed=on",
            ]
        else:
            argv += [
                "-drive", f"file={spec.image},if=none,id=disk0,format=raw,readonly=on",
                "-device", "virtio-blk-pci,drive=disk0",
            ]
    if spec.transport == "serial":
        assert spec.agent_socket is not None
        argv += [
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=agent0,path={spec.agent_socket},server=on,wait=off",
            "-device", f"virtserialport,bus=vser0.0,chardev=agent0,name={spec.port_name}",
        ]
    else:
        argv += ["-device", f"vhost-vsock-pci,id=vsock0,guest-cid={spec.vsock_cid}"]
    if spec.shared_fs is not None:
        argv += shared_fs_argv(spec.shared_fs, spec.memory_mb)
    return argv


def shared_fs_argv(shared: SharedFs, memory_mb: int) -> list[str]:
    """The runtime's devices for the shared directory."""
    if shared.kind == "virtio-fs":
        assert shared.socket is not None
        return [
            # vhost-user needs the guest RAM in memory the daemon can map: a shared file backend.
            "-object", f"memory-backend-file,id=dimm1,size={memory_mb}M,mem-path=/dev/shm,share=on",
            "-numa", "node,memdev=dimm1",
            "-chardev", f"socket,id=char-{shared.tag},path={shared.socket}",
            "-device", f"vhost-user-fs-pci,chardev=char-{shared.tag},tag={shared.tag},queue-size=1024",
        ]
    if shared.kind == "virtio-9p":
        assert shared.directory is not None
        fsdev = f"extra-9p-{shared.tag}"
        return [
            "-device", f"virtio-9p-pci,disable-modern=false,fsdev={fsdev},mount_tag={shared.tag}",
            "-fsdev", f"local,id={fsdev},path={shared.directory},security_model=none,multidevs=remap",
        ]
    raise ValueError(f"unknown shared filesystem {shared.kind!r}")


@dataclass
class ConsoleLine:
    at: float  # seconds since QEMU started
    text: str


@dataclass
class RunningVm:
    """A started QEMU whose console is read line by line, with times relative to the start."""

    process: subprocess.Popen[bytes]
    started: float
    lines: list[ConsoleLine] = field(default_factory=list)
    log_file: Path | None = None
    _reader: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        log = self.log_file.open("ab") if self.log_file else None
        try:
            for raw in iter(self.process.stdout.readline, b""):
                if log:
                    log.write(raw)
                    log.flush()
                line = ConsoleLine(time.monotonic() - self.started,
                                   raw.decode(errors="replace").rstrip("\r\n").replace("\r", ""))
                with self._lock:
                    self.lines.append(line)
        finally:
            if log:
                log.close()

    def snapshot(self) -> list[ConsoleLine]:
        with self._lock:
            return list(self.lines)

    def first(self, predicate: Callable[[str], bool]) -> ConsoleLine | None:
        return next((line for line in self.snapshot() if predicate(line.text)), None)

    def exited(self) -> bool:
        return self.process.poll() is not None

    def wait_exit(self, timeout: float) -> float | None:
        """Seconds since start when QEMU exited, or None if it is still running after timeout."""
        try:
            self.process.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(timeout=5)
        return time.monotonic() - self.started

    def stop(self) -> None:
        runner.terminate(self.process, grace=2)
        if self._reader is not None:
            self._reader.join(timeout=5)


def start_vm(spec: VmSpec, console_log: Path | None = None) -> RunningVm:
    argv = qemu_argv(spec)
    if console_log is not None:
        console_log.write_bytes(b"")
    started = time.monotonic()
    process = runner.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, die_with_parent=True)
    vm = RunningVm(process, started, log_file=console_log)
    vm.start_reader()
    return vm


def kvm_usable_device() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)
