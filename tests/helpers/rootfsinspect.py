"""Looking at a built rootfs with independent tools (dpkg-query, find)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path


def dpkg_packages(rootfs: Path) -> dict[str, str]:
    """name -> version of the installed packages, as dpkg-query reads the rootfs's database."""
    output = subprocess.run(["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W",
                             "-f=${db:Status-Abbrev} ${Package} ${Version}\n"], capture_output=True, text=True,
                            check=True).stdout
    return {fields[1]: fields[2] for fields in (line.split() for line in output.splitlines()) if fields[0] == "ii"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_listing(rootfs: Path) -> str:
    """Every path with its type, mode, owner, size (of files), link target and mtime, sorted (what
    `find -printf` sees; a directory's size depends on its history, not its content)."""
    output = subprocess.run(["find", ".", "-printf", "%p %y %m %U %G %s %l %T@\n"], cwd=rootfs,
                            capture_output=True, text=True, check=True).stdout
    lines = []
    for line in output.splitlines():
        fields = line.split(" ")
        if fields[1] == "d":
            fields[5] = "-"
        lines.append(" ".join(fields))
    return "\n".join(sorted(lines))


def disk_state(root: Path) -> dict[str, tuple[object, ...]]:
    """path -> (kind, mode, uid, gid, mtime ns, content or target, hard-link group)."""
    state: dict[str, tuple[object, ...]] = {}
    groups: dict[tuple[int, int], str] = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        name = path.relative_to(root).as_posix() if path != root else ""
        if path.is_symlink():
            detail: object = os.readlink(path)
            kind = "link"
        elif path.is_dir():
            detail, kind = None, "dir"
        else:
            detail, kind = path.read_bytes(), "file"
        group = groups.setdefault((info.st_dev, info.st_ino), name) if kind == "file" else None
        state[name] = (kind, info.st_mode & 0o7777, info.st_uid, info.st_gid, info.st_mtime_ns, detail, group)
    return state
