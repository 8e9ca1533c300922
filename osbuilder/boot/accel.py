"""Choosing the accelerator: KVM only when a probe guest makes progress, else TCG.

/dev/kvm can exist and answer its ioctls while a nested guest hangs right after the firmware, so
its presence proves nothing. The probe boots the kernel with no root and waits for the kernel's
first console line; the answer is remembered for this host boot (boot_id) and QEMU binary.
"""

from __future__ import annotations

import json
import logging
import selectors
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from osbuilder import runner
from osbuilder.arch import Arch
from osbuilder.boot.qemu import kvm_usable_device
from osbuilder.cache import Cache, content_key
from osbuilder.kernelcmdline import serial_console
from osbuilder.outputs import write_atomically

log = logging.getLogger(__name__)

PROBE_SECONDS = 10.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe_kvm(kernel: Path, arch: Arch, qemu: str | None = None, seconds: float = PROBE_SECONDS) -> bool:
    if not kvm_usable_device():
        return False
    binary = qemu or f"qemu-system-{arch.qemu}"
    machine = "q35,accel=kvm" if arch.name == "x86_64" else "virt,accel=kvm"
    console = serial_console(arch.name)
    argv = [binary, "-machine", machine, "-cpu", "host", "-m", "256M", "-nodefaults", "-no-user-config",
            "-nographic", "-no-reboot", "-display", "none", "-chardev", "stdio,id=console,signal=off",
            "-serial", "chardev:console", "-kernel", str(kernel), "-append", f"console={console} panic=-1"]
    process = runner.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    deadline = time.monotonic() + seconds
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        seen = b""
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
                continue
            chunk = process.stdout.read1(4096)  # type: ignore[attr-defined]
            if not chunk:
                return False  # QEMU exited without guest output: KVM is not usable
            seen = (seen + chunk)[-4096:]
            if b"Linux version" in seen:  # the kernel itself ran, not just the firmware
                return True
        return False
    finally:
        runner.terminate(process, grace=1)


def _recorded(record: Path) -> bool | None:
    """An earlier probe's answer; None when there is none (or it cannot be read: probe again)."""
    try:
        return bool(json.loads(record.read_text())["kvm"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


KvmProbe = Callable[[Path, Arch, str | None], bool]


def choose_accel(requested: str, kernel: Path, arch: Arch, cache: Cache | None, qemu: str | None = None, *,
                 probe: KvmProbe = probe_kvm, device_usable: Callable[[], bool] = kvm_usable_device) -> str:
    """"kvm" or "tcg" for --accel auto|kvm|tcg. `probe` and `device_usable` are injectable (tests)."""
    if requested in ("kvm", "tcg"):
        return requested
    if not device_usable():
        return "tcg"
    key = content_key({"boot_id": _boot_id(), "qemu": shutil.which(qemu or f"qemu-system-{arch.qemu}"),
                       "arch": arch.name})
    record = cache.path("probes") / f"kvm-{key[:24]}.json" if cache else None
    known = _recorded(record) if record is not None else None
    if known is not None:
        usable = known
    else:
        log.info("probing KVM (a guest must show progress within %.0f s)", PROBE_SECONDS)
        usable = probe(kernel, arch, qemu)
        if record is not None:  # atomically: another boot may be reading it
            write_atomically(record, (json.dumps({"kvm": usable}) + "\n").encode())
    log.debug("accelerator: %s", "kvm" if usable else "tcg (KVM did not make progress)")
    return "kvm" if usable else "tcg"
