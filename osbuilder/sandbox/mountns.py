"""The sandbox's host directories, in a private mount namespace that dies with osbuilder.

The Kata runtime shares a container with the guest through a per-sandbox directory:
`<run>/shared/sandboxes/<sid>/mounts` (made a shared mount) is bind-mounted read-only as a slave
onto `<run>/shared/sandboxes/<sid>/shared`, which virtiofsd (or QEMU's 9p server) exports; a
container's root bound at `mounts/<cid>/rootfs` then appears under `shared` as well, and in the
guest under /run/kata-containers/shared/containers/<cid>/rootfs.

osbuilder does the same, but every mount lives in a private mount namespace of its own
(osbuilder.runner.MountNamespace: a holder tied to osbuilder's life), on a tmpfs over `<run>`;
mounts are made in it, and QEMU and virtiofsd run in it. The host never sees a mount or a socket of
the sandbox, and when osbuilder dies, even by SIGKILL, the namespace and everything in it go away
with the last of its processes. osbuilder itself reaches files inside through /proc/<holder>/root.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder import runner
from osbuilder.errors import UsageError

log = logging.getLogger(__name__)

RUN_DIR_VARIABLE = "OSBUILDER_RUN_DIR"  # where the sandboxes live (default /run/osbuilder)
GUEST_SHARED_DIR = "/run/kata-containers/shared/containers"  # where the agent mounts the share


@dataclass(frozen=True)
class SandboxPaths:
    """The runtime's directories for one sandbox, as QEMU and virtiofsd see them (in the namespace)."""

    run: Path
    sandbox_id: str

    @property
    def sandbox_dir(self) -> Path:
        return self.run / "shared" / "sandboxes" / self.sandbox_id

    @property
    def mounts(self) -> Path:
        return self.sandbox_dir / "mounts"

    @property
    def shared(self) -> Path:
        return self.sandbox_dir / "shared"

    @property
    def vm_dir(self) -> Path:
        return self.run / "vm" / self.sandbox_id

    @property
    def agent_socket(self) -> Path:
        return self.vm_dir / "agent.sock"

    @property
    def virtiofsd_socket(self) -> Path:
        return self.vm_dir / "vhost-fs.sock"

    def container_rootfs(self, container_id: str) -> Path:
        return self.mounts / container_id / "rootfs"


def default_run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_VARIABLE) or "/run/osbuilder")


def guest_rootfs(container_id: str) -> str:
    return f"{GUEST_SHARED_DIR}/{container_id}/rootfs"


def guest_shared(name: str) -> str:
    return f"{GUEST_SHARED_DIR}/{name}"


def require_root() -> None:
    if os.geteuid() != 0:
        raise UsageError(problem="running a container needs root: the runtime's host side mounts the container's "
                                 "root into the shared directory and runs virtiofsd",
                         where="osbuilder run", fix="run it as root (sudo osbuilder run ...)")


class SandboxNamespace:
    """The sandboxes' run directory (a tmpfs) in a private mount namespace; use as a context manager."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.namespace = runner.MountNamespace("run a container")

    @property
    def enter(self) -> tuple[str, ...]:
        """The argv prefix that runs a command in the namespace."""
        return self.namespace.enter

    def host_path(self, path: Path) -> Path:
        """The path by which osbuilder, outside the namespace, reaches `path` inside it."""
        return self.namespace.host_path(path)

    def start(self) -> SandboxNamespace:
        require_root()
        self.run.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.namespace.start()
        self.command(["mount", "-t", "tmpfs", "-o", "mode=0700,nosuid,nodev", "osbuilder-run", str(self.run)],
                     "mount the sandbox tmpfs")
        return self

    def command(self, argv: list[str], what: str) -> None:
        self.namespace.run(argv, what=what)

    def spawn(self, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        return self.namespace.spawn(argv, **options)

    def makedirs(self, path: Path) -> None:
        self.host_path(path).mkdir(parents=True, exist_ok=True)

    def prepare(self, paths: SandboxPaths) -> None:
        """The runtime's layout: mounts (shared) → shared (read-only slave), and the VM's directory."""
        for directory in (paths.mounts, paths.shared, paths.vm_dir):
            self.makedirs(directory)
        mounts, shared = str(paths.mounts), str(paths.shared)
        self.command(["mount", "--bind", mounts, mounts], "bind the sandbox's mounts directory")
        self.command(["mount", "--make-shared", mounts], "make the mounts directory shared")
        self.command(["mount", "--bind", "-o", "ro", mounts, shared], "bind mounts onto shared, read-only")
        self.command(["mount", "--make-slave", shared], "make the shared directory a slave")

    def bind(self, source: Path, target: Path, *, readonly: bool = False) -> None:
        """Bind a host path (directory or file) into the namespace at `target` (under mounts/)."""
        inside = self.host_path(target)
        if source.is_dir():
            inside.mkdir(parents=True, exist_ok=True)
        else:
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.touch(exist_ok=True)
        self.command(["mount", "--bind", *(["-o", "ro"] if readonly else []), str(source), str(target)],
                     f"bind {source} into the sandbox")
        # As the runtime does: later mounts under the host path do not follow into the guest.
        self.command(["mount", "--make-private", str(target)], f"make {target} private")

    def unbind(self, target: Path) -> None:
        self.command(["umount", "--lazy", str(target)], f"unmount {target}")

    def close(self) -> None:
        """End the namespace: it goes with the last process in it (QEMU, virtiofsd stop first)."""
        self.namespace.close()

    def __enter__(self) -> SandboxNamespace:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
