"""Running another architecture's programs on this host: qemu-user registered with binfmt_misc.

mmdebstrap runs a foreign rootfs's maintainer scripts through the kernel's binfmt_misc handler for
that architecture (Debian's qemu-user-static, registered by binfmt-support) and refuses a foreign
--arch without `arch-test`. Each missing piece has its own fix, and a host without systemd misses
one more: nothing mounts binfmt_misc there. The handler must carry the F flag (the kernel opens the
interpreter when it is registered), or it cannot run inside mmdebstrap's chroot, where the host's
/usr/bin/qemu-*-static does not exist. The same F flag lets the docker backend's builder container
use the host's registration: there mmdebstrap and arch-test are the builder image's, so the host
needs only the registered handler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from osbuilder.arch import Arch, host_arch
from osbuilder.errors import UsageError
from osbuilder.hosttools import find_tool

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
PACKAGES = ("qemu-user-static", "binfmt-support", "arch-test")
MOUNT = f"mount -t binfmt_misc binfmt_misc {BINFMT_DIR}"


@dataclass(frozen=True)
class Emulation:
    """What this host has for running `arch`'s programs; `problem` and `fix` are empty when all is well."""

    arch: str
    handler: Path  # /proc/sys/fs/binfmt_misc/qemu-<arch>
    problem: str
    fix: str

    @property
    def ok(self) -> bool:
        return not self.problem

    def to_json(self) -> dict[str, str | bool]:
        return {"arch": self.arch, "handler": str(self.handler), "ok": self.ok, "problem": self.problem,
                "fix": self.fix}


def _handler_state(handler: Path) -> tuple[bool, str]:
    """(enabled, flags) of a registered handler, from its file in binfmt_misc."""
    lines = handler.read_text(errors="replace").splitlines()
    enabled = bool(lines) and lines[0].strip() == "enabled"
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    return enabled, flags


def emulation(arch: Arch, binfmt_dir: Path | None = None, *,
              find: Callable[[str], str | None] | None = None, in_container: bool = False) -> Emulation:
    """The state of `arch`'s emulation on this host (nothing to do for the host's own architecture).
    `in_container`: mmdebstrap runs in a builder container, which brings its own arch-test."""
    binfmt_dir = binfmt_dir or BINFMT_DIR
    find = find or find_tool
    handler = binfmt_dir / f"qemu-{arch.qemu}"
    if arch.name == host_arch().name:
        return Emulation(arch.name, handler, "", "")
    needed = [(f"qemu-{arch.qemu}-static", "qemu-user-static"), ("update-binfmts", "binfmt-support")]
    if not in_container:
        needed.append(("arch-test", "arch-test"))
    missing = [package for tool, package in needed if find(tool) is None]
    install = f"apt-get install {' '.join(missing)}" if missing else ""
    if not (binfmt_dir / "register").exists():
        steps = [step for step in (install, MOUNT, "update-binfmts --enable") if step]
        return Emulation(arch.name, handler, f"binfmt_misc is not mounted at {binfmt_dir} (no systemd mounts it "
                         "on this host), so no qemu-user emulation can be registered", "; then ".join(steps))
    if not handler.exists():
        steps = [step for step in (install, f"update-binfmts --enable qemu-{arch.qemu}") if step]
        return Emulation(arch.name, handler, f"qemu-user emulation for {arch.name} is not registered "
                         f"({handler} does not exist)", "; then ".join(steps))
    enabled, flags = _handler_state(handler)
    if not enabled:
        return Emulation(arch.name, handler, f"the {arch.name} emulation {handler} is disabled",
                         f"update-binfmts --enable qemu-{arch.qemu}")
    if "F" not in flags:
        return Emulation(arch.name, handler, f"the {arch.name} emulation {handler} lacks the F flag (flags: "
                         f"'{flags}'), so it cannot run inside a chroot",
                         "apt-get install qemu-user-static (Debian's registers qemu with the F flag), then "
                         f"update-binfmts --disable qemu-{arch.qemu} && update-binfmts --enable qemu-{arch.qemu}")
    # A registered, enabled handler with the F flag is all a builder container needs; the host's own
    # mmdebstrap needs arch-test too, and the packages that keep the handler registered.
    if install and not in_container:
        reason = " (mmdebstrap needs arch-test for a foreign --arch)" if "arch-test" in missing else ""
        return Emulation(arch.name, handler, f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                         f"installed{reason}", install)
    return Emulation(arch.name, handler, "", "")


def require_emulation(arch: Arch, where: str, binfmt_dir: Path | None = None, *, in_container: bool = False) -> None:
    """Bad input (exit 2) unless this host can run `arch`'s programs: checked before any work starts."""
    state = emulation(arch, binfmt_dir, in_container=in_container)
    if not state.ok:
        raise UsageError(problem=f"building for {arch.name} on this {host_arch().name} host needs qemu-user "
                                 f"emulation: {state.problem}",
                         where=where, fix=f"{state.fix} (or build on an {arch.name} host)")
