"""virtiofsd, the vhost-user daemon that exports the sandbox's shared directory over virtio-fs.

Two implementations with different options: QEMU's C virtiofsd (Debian 12 ships it in
qemu-system-common as /usr/lib/qemu/virtiofsd; `-o source=DIR -o cache=auto`) and the newer Rust
one (`--shared-dir DIR --cache auto`, Kata's default). A Rust one is preferred when one is found; the
kind is told from `--help`. As the Kata runtime does, osbuilder creates the listening socket itself
and hands it over as file descriptor 3 (`--fd=3`; runner.spawn's pass_fds), so that the socket
exists before QEMU connects.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from osbuilder import runner
from osbuilder.errors import OsbuilderError, UsageError
from osbuilder.hosttools import find_tool

# Where the daemons are installed: the Rust one (Debian trixie, Fedora, Kata's /opt/kata/libexec),
# and QEMU's C one (Debian 12's qemu-system-common).
SEARCH_PATHS = ("/usr/libexec/virtiofsd", "/opt/kata/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
RUST, QEMU_C = "rust", "qemu-c"
SOCKET_FD = runner.FIRST_PASSED_FD  # the listening socket: the first descriptor after stdio, as Kata passes it


@dataclass(frozen=True)
class Virtiofsd:
    path: str
    kind: str  # RUST | QEMU_C
    version: str

    def argv(self, shared_dir: Path, *, cache: str = "auto", fd: int = SOCKET_FD) -> list[str]:
        """The runtime's options: cache mode, one request thread, submounts announced to the guest."""
        if self.kind == RUST:
            return [self.path, f"--fd={fd}", f"--shared-dir={shared_dir}", f"--cache={_rust_cache(cache)}",
                    "--thread-pool-size=1", "--announce-submounts"]
        return [self.path, f"--fd={fd}", "-o", f"source={shared_dir}", "-o", f"cache={_c_cache(cache)}",
                "--thread-pool-size=1", "-o", "announce_submounts"]


def _rust_cache(mode: str) -> str:
    return {"none": "never"}.get(mode, mode)


def _c_cache(mode: str) -> str:
    return {"never": "none", "metadata": "auto"}.get(mode, mode)


@functools.lru_cache(maxsize=16)
def identify(path: str) -> Virtiofsd | None:
    """The daemon at `path`, or None when it is not a virtiofsd that runs here."""
    try:
        helped = runner.run([path, "--help"], check=False, timeout=10, what=f"{path} --help")
        versioned = runner.run([path, "--version"], check=False, timeout=10, what=f"{path} --version")
    except (OSError, OsbuilderError):
        return None
    text = helped.stdout + helped.stderr
    version = (versioned.stdout or versioned.stderr).strip().splitlines()
    first = version[0].strip() if version else ""
    if "--shared-dir" in text:
        return Virtiofsd(path, RUST, first)
    if "source=PATH" in text:
        return Virtiofsd(path, QEMU_C, first)
    return None


def _candidates(preferred: Path | None) -> list[str]:
    found = [str(preferred)] if preferred is not None and preferred.is_file() else []
    on_path = find_tool("virtiofsd")
    if on_path:
        found.append(on_path)
    found.extend(path for path in SEARCH_PATHS if os.access(path, os.X_OK))
    return list(dict.fromkeys(os.path.realpath(path) for path in found))


def require_virtiofsd(path: Path, where: str = "--virtiofsd") -> Virtiofsd:
    """The daemon a user named: it must be a virtiofsd that runs here."""
    daemon = identify(str(path)) if path.is_file() else None
    if daemon is None:
        raise UsageError(problem=f"{path} is not a virtiofsd that runs here (its --help names neither "
                                 "--shared-dir nor -o source=PATH)", where=f"{where} {path}",
                         fix="give the Rust virtiofsd or QEMU's /usr/lib/qemu/virtiofsd")
    return daemon


def find_virtiofsd(preferred: Path | None = None) -> Virtiofsd:
    """`preferred` (a configuration's virtio_fs_daemon) when it runs here, else a Rust virtiofsd,
    else QEMU's C one."""
    daemons = [daemon for daemon in map(identify, _candidates(preferred)) if daemon is not None]
    if preferred is not None and daemons and daemons[0].path == os.path.realpath(preferred):
        return daemons[0]
    rust = [daemon for daemon in daemons if daemon.kind == RUST]
    if rust or daemons:
        return (rust or daemons)[0]
    raise UsageError(problem="no virtiofsd found (needed to share the container's root over virtio-fs)",
                     where="--shared-fs virtio-fs",
                     fix="apt-get install qemu-system-common (its /usr/lib/qemu/virtiofsd), install a Rust "
                         "virtiofsd, or use --shared-fs virtio-9p")
