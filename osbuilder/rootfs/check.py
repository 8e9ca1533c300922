"""Kata's rootfs checks before an image or initrd is built (its `check_rootfs` and initrd checks).

- /sbin/init must be executable or a symlink.
- systemd mode (agent not init): /sbin/init pointing at NVRC is accepted; otherwise
  /usr/lib/systemd/systemd or /lib/systemd/systemd must be executable or a symlink.
- agent-init mode: /sbin/init must be an executable that is not systemd (its bytes differ from both
  systemd paths).
- initrd in systemd mode: /usr/bin/<agent> must be executable (the agent is started by systemd).

Paths are resolved inside the tree (absolute symlinks such as /sbin/init -> /lib/systemd/systemd
point into the rootfs, not at the host), which Kata's shell checks get wrong.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from osbuilder.errors import UsageError
from osbuilder.tree import FILE, resolve_in_root

SYSTEMD_PATHS = ("usr/lib/systemd/systemd", "lib/systemd/systemd")
DEFAULT_AGENT = "kata-agent"


@dataclass(frozen=True)
class RootfsFacts:
    init: str  # "systemd", "agent" or "nvrc"
    init_target: str  # /sbin/init resolved inside the tree ("" if it could not be resolved)
    systemd: str  # the first systemd path present ("" if none)
    agent: str  # where the agent binary is ("" if unknown)


def _lexists_in_root(root: Path, path: str) -> os.stat_result | None:
    """lstat of `path` with its parent directories resolved inside the tree."""
    parent, _, name = path.rpartition("/")
    resolved = resolve_in_root(root, parent) if parent else ("", None)
    if resolved is None:
        return None
    directory = os.path.join(os.fspath(root), resolved[0])
    try:
        return os.lstat(os.path.join(directory, name))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _executable(root: Path, path: str) -> str | None:
    """The resolved relative path if `path` resolves to an executable regular file."""
    resolved = resolve_in_root(root, path)
    if resolved is None:
        return None
    relative, entry = resolved
    if entry.kind == FILE and entry.mode & 0o111:
        return relative
    return None


def _executable_or_symlink(root: Path, path: str) -> bool:
    st = _lexists_in_root(root, path)
    if st is None:
        return False
    return stat.S_ISLNK(st.st_mode) or _executable(root, path) is not None


def _same_bytes(first: Path, second: Path) -> bool:
    if first.stat().st_size != second.stat().st_size:
        return False
    with first.open("rb") as a, second.open("rb") as b:
        while True:
            chunk = a.read(1 << 20)
            if chunk != b.read(1 << 20):
                return False
            if not chunk:
                return True


def check_rootfs(root: Path, *, agent_init: bool, initrd: bool = False, agent_bin: str = DEFAULT_AGENT) -> RootfsFacts:
    """Raise UsageError (exit 2) naming the offending path when the tree cannot boot as asked."""
    where = f"{root}/sbin/init"
    mode = "--agent-init (AGENT_INIT=yes)" if agent_init else "systemd mode (AGENT_INIT=no)"
    if not root.exists():
        raise UsageError(problem="the rootfs directory does not exist", where=str(root),
                         fix="build the rootfs first (make rootfs) or give its path")
    if not root.is_dir():
        raise UsageError(problem="the rootfs is not a directory", where=str(root),
                         fix="give the rootfs directory (make rootfs builds one)")
    init_stat = _lexists_in_root(root, "sbin/init")
    if init_stat is None:
        raise UsageError(problem="the rootfs has no /sbin/init", where=where,
                         fix="build the rootfs with an init (systemd, or the agent as init with --agent-init)")
    init_target = ""
    resolved = resolve_in_root(root, "sbin/init")
    if resolved is not None:
        init_target = resolved[0]
    if not stat.S_ISLNK(init_stat.st_mode) and _executable(root, "sbin/init") is None:
        raise UsageError(problem="/sbin/init is neither executable nor a symlink", where=where,
                         fix="make it executable (chmod +x) or a symlink to the init")
    systemd = next((path for path in SYSTEMD_PATHS if _executable_or_symlink(root, path)), "")

    if agent_init:
        executable = _executable(root, "sbin/init")
        if executable is None:
            raise UsageError(problem=f"in {mode} /sbin/init must be an executable (the agent)", where=where,
                             fix="install the agent as /sbin/init, or drop --agent-init for a systemd rootfs")
        for path in SYSTEMD_PATHS:
            resolved_systemd = resolve_in_root(root, path)
            if resolved_systemd is None or resolved_systemd[1].kind != FILE:
                continue
            if resolved_systemd[0] == executable or _same_bytes(root / executable, root / resolved_systemd[0]):
                raise UsageError(problem=f"in {mode} /sbin/init must not be systemd, but it is /{path}",
                                 where=where,
                                 fix="install the agent as /sbin/init, or build without --agent-init")
        return RootfsFacts("agent", init_target, systemd, executable)

    link = os.readlink(os.path.join(root, "sbin/init")) if stat.S_ISLNK(init_stat.st_mode) else ""
    if "NVRC" in link:
        return RootfsFacts("nvrc", init_target, systemd, _agent(root, agent_bin))
    if not systemd:
        raise UsageError(problem=f"in {mode} the rootfs needs systemd: neither /usr/lib/systemd/systemd nor "
                                 "/lib/systemd/systemd is executable or a symlink",
                         where=str(root),
                         fix="install systemd in the rootfs, or build with --agent-init (AGENT_INIT=yes)")
    agent = _agent(root, agent_bin)
    if initrd and not agent:
        raise UsageError(problem=f"in {mode} /usr/bin/{agent_bin} must be executable", where=f"{root}/usr/bin/{agent_bin}",
                         fix="install the agent in the rootfs, or build with --agent-init (AGENT_INIT=yes)")
    return RootfsFacts("systemd", init_target, systemd, agent)


def _agent(root: Path, agent_bin: str) -> str:
    return _executable(root, f"usr/bin/{agent_bin}") or ""


def lexists_in_root(root: Path, path: str) -> bool:
    """Whether `path` exists in the tree (a dangling symlink counts), parents resolved inside it."""
    return _lexists_in_root(root, path) is not None

