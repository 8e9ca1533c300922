"""Small synthetic rootfs trees for the image and initrd tests.

A tree has what the builders look at: /sbin/init for systemd or agent-init mode, the agent, a
systemd dummy, osbuilder.yaml, usr-merged symlinks (/lib -> usr/lib), files of many sizes (empty,
around a block, larger), short and long symlinks, hard links, a large directory (indexed by e2fsck
-D), a FIFO, and mtimes on both sides of the build epoch.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

EPOCH = 1_700_000_000  # the SOURCE_DATE_EPOCH the tests build with
OLD = 1_600_000_000  # mtimes older than the epoch are kept
NEW = 1_900_000_000  # newer ones are clamped

OSBUILDER_YAML = """\
---
osbuilder:
  url: "https://github.com/kata-containers/kata-containers/tools/osbuilder"
  version: "4.1.0-test"
rootfs-creation-time: "2023-11-14T22:13:20.000000000+0000Z"
description: "osbuilder rootfs"
file-format-version: "0.0.2"
architecture: "x86_64"
base-distro:
  name: "test"
  version: "1"
  packages:
    default:
      - "busybox"
    extra:
agent:
  url: "https://github.com/kata-containers/kata-containers"
  name: "kata-agent"
  version: "4.1.0"
  agent-is-init-daemon: "{agent_init}"
"""


def _binary(seed: int, size: int) -> bytes:
    """Bytes that look like a static ELF executable (the builders never run them)."""
    rng = random.Random(seed)
    return b"\x7fELF\x02\x01\x01" + bytes(rng.getrandbits(8) for _ in range(size - 7))


def _write(path: Path, data: bytes, mode: int = 0o644, mtime: int = OLD) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))


def make_rootfs(root: Path, *, agent_init: bool = False, machine_id: bytes | None = b"0123456789abcdef\n",
                large_directory: int = 300, extra_bytes: int = 0) -> Path:
    """Create a bootable-looking tree at `root` and return it. `extra_bytes` adds one more file of
    that size (to make sizing matter)."""
    rng = random.Random(42)
    for directory in ("usr/bin", "usr/sbin", "usr/lib/systemd/system", "etc", "var/lib/osbuilder", "dev", "proc",
                      "sys", "run", "tmp", "root", "home/user", "usr/share/many"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    for name, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        os.symlink(target, root / name)
    agent = _binary(1, 60_000)
    _write(root / "usr/bin/kata-agent", agent, 0o755)
    _write(root / "usr/lib/systemd/systemd", _binary(2, 30_000), 0o755)
    if agent_init:
        _write(root / "usr/sbin/init", agent, 0o755)
    else:
        os.symlink("/lib/systemd/systemd", root / "usr/sbin/init")
    _write(root / "usr/bin/busybox", _binary(3, 100_000), 0o755)
    for applet in ("sh", "ls", "cat", "mount"):
        os.symlink("busybox", root / "usr/bin" / applet)
    # A symlink too long for the inode (ext4 keeps targets up to 59 bytes inline).
    os.symlink("/usr/share/many/" + "x" * 80, root / "usr/bin/long-link")
    _write(root / "var/lib/osbuilder/osbuilder.yaml",
           OSBUILDER_YAML.replace("{agent_init}", "yes" if agent_init else "no").encode())
    _write(root / "etc/hostname", b"guest\n")
    _write(root / "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    _write(root / "etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640)
    _write(root / "etc/new-file", b"newer than the epoch\n", mtime=NEW)
    if machine_id is not None:
        _write(root / "etc/machine-id", machine_id, 0o444)
    _write(root / "usr/lib/systemd/system/kata-agent.service", b"[Service]\nExecStart=/usr/bin/kata-agent\n")
    for size in (0, 1, 4095, 4096, 4097, 65536, 1 << 20):
        _write(root / f"usr/share/size-{size}", bytes(rng.getrandbits(8) for _ in range(min(size, 4096))) * (size // 4096)
               + bytes(rng.getrandbits(8) for _ in range(size % 4096)))
    _write(root / "usr/share/sparse-zeros", bytes(200_000))
    _write(root / "usr/share/setuid", b"#!/bin/sh\n", 0o4755)
    # Hard links: two names in one directory, one in another.
    _write(root / "usr/bin/hard-a", _binary(4, 5000), 0o755)
    os.link(root / "usr/bin/hard-a", root / "usr/bin/hard-b")
    os.link(root / "usr/bin/hard-a", root / "usr/share/hard-c")
    for index in range(large_directory):
        _write(root / f"usr/share/many/file-with-a-longish-name-{index:04d}", f"{index}\n".encode())
    os.mkfifo(root / "run/initctl")
    if extra_bytes:
        _write(root / "usr/share/extra", bytes(rng.getrandbits(8) for _ in range(4096)) * (extra_bytes // 4096))
    for directory in sorted(root.rglob("*"), reverse=True):
        if directory.is_dir() and not directory.is_symlink():
            os.utime(directory, (OLD, OLD))
    os.utime(root, (OLD, OLD))
    return root


def tree_paths(root: Path) -> set[str]:
    """Every path in the tree, relative, without a leading ./ ("" for the root excluded)."""
    paths = set()
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            paths.add(os.path.relpath(os.path.join(directory, name), root))
    return paths
