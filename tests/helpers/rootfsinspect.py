"""Looking at a built rootfs with independent tools (dpkg-query, find)."""

from __future__ import annotations

import hashlib
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
