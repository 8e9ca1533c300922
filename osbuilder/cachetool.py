"""`osbuilder cache list|prune`: what the cache holds, and making it smaller without breaking a build.

Entries, by kind:
  rootfs, kernel, agent, image, initrd, bundle,      <kind>/<key>/ (Cache.get_or_build)
  kernel-source, kernel-tree
  downloads                                           downloads/sha256/<digest>
  apt-archives                                        apt-archives/<archive>/<suite>/<arch>/ (packages)
  kernel-work                                         kept O= directories (--keep-build-dir)
and, listed but never pruned, what other tools manage or what is tiny: ccache, keyrings, records.

Pruning goes least recently used first (an entry is marked used whenever a build reads it:
osbuilder.cache.mark_used). An entry is removed only with its locks taken exclusively and without
waiting: its use lock (held shared by every reader, osbuilder.cache.Cache.reading/using/hold) and
the lock its builder takes. An entry someone is reading or building is skipped and reported. A
removed entry is first renamed into tmp/, so a reader that comes after finds no entry and rebuilds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from osbuilder import staging, userns
from osbuilder.cache import ENTRY_META, Cache
from osbuilder.errors import UsageError

DOWNLOADS = Cache.DOWNLOADS
APT_ARCHIVES = "apt-archives"  # osbuilder.rootfs.bootstrappers.apt_cache.KIND
KERNEL_WORK = "kernel-work"
RESERVED = frozenset({"downloads", "locks", "tmp", APT_ARCHIVES, KERNEL_WORK})
NEVER_PRUNED = ("ccache", "keyrings", "kernel-records")
DAY = 86400
_SIZE = re.compile(r"(?i)\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*")


@dataclass(frozen=True)
class Entry:
    kind: str
    key: str
    path: Path
    size: int  # bytes on disk
    last_used: float  # epoch seconds
    locks: tuple[str, ...]  # lock names (Cache.lock) to take before removing it; the first is the use lock
    prunable: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "path": str(self.path), "size": self.size,
                "last_used": int(self.last_used), "prunable": self.prunable}


def parse_size(value: str, where: str = "--max-size") -> int:
    """500M, 10G, 1.5GiB (powers of 1024), 2GB (powers of 1000), or bytes."""
    match = _SIZE.fullmatch(value)
    if not match:
        raise UsageError(problem=f"'{value}' is not a size", where=f"{where} {value}",
                         fix="give bytes or a number with K, M, G or T (e.g. 20G)")
    number, unit, suffix = float(match[1]), match[2].lower(), match[3].lower()
    base = 1000 if suffix == "b" and unit else 1024
    return int(number * base ** " kmgt".index(unit or " "))


def disk_usage(path: Path) -> int:
    """Bytes allocated to a file or a tree (hard links counted once, symlinks not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(name: str | Path) -> None:
        nonlocal total
        with contextlib.suppress(OSError):
            info = os.lstat(name)
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512

    add(path)
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                add(os.path.join(root, name))
    return total


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def entries(cache: Cache) -> list[Entry]:
    """Everything in the cache, by kind."""
    root = cache.root
    found: list[Entry] = []
    if not root.is_dir():
        return found
    for kind_dir in sorted(root.iterdir()):
        kind = kind_dir.name
        if not kind_dir.is_dir() or kind in RESERVED:
            continue
        for child in sorted(kind_dir.iterdir()):
            meta = child / ENTRY_META
            if meta.is_file():
                found.append(Entry(kind, child.name, child, disk_usage(child), _mtime(meta),
                                   (f"{kind}-{child.name}.use", f"{kind}-{child.name}.lock")))
            else:  # not an entry of get_or_build: listed, never pruned
                found.append(Entry(kind, child.name, child, disk_usage(child), _mtime(child), (), prunable=False))
    blobs = root / "downloads" / "sha256"
    if blobs.is_dir():
        for blob in sorted(blobs.iterdir()):
            found.append(Entry(DOWNLOADS, blob.name, blob, disk_usage(blob), _mtime(blob),
                               (f"{DOWNLOADS}-{blob.name}.use", f"download-{blob.name}.lock")))
    archives = root / APT_ARCHIVES
    if archives.is_dir():
        for directory in sorted(archives.glob("*/*/*")):
            archive, suite, arch = directory.relative_to(archives).parts
            found.append(Entry(APT_ARCHIVES, f"{archive}/{suite}/{arch}", directory, disk_usage(directory),
                               _mtime(directory), (f"{APT_ARCHIVES}-{archive}-{suite}-{arch}.lock",)))
    work = root / KERNEL_WORK
    if work.is_dir():
        for directory in sorted(work.iterdir()):
            found.append(Entry(KERNEL_WORK, directory.name, directory, disk_usage(directory), _mtime(directory),
                               (f"{KERNEL_WORK}-{directory.name}.lock",)))
    return [replace(entry, locks=(), prunable=False) if entry.kind in NEVER_PRUNED else entry for entry in found]


def summary(found: list[Entry], cache: Cache) -> dict[str, Any]:
    kinds: dict[str, dict[str, int]] = {}
    for entry in found:
        kind = kinds.setdefault(entry.kind, {"entries": 0, "bytes": 0})
        kind["entries"] += 1
        kind["bytes"] += entry.size
    return {"cache_dir": str(cache.root), "total_bytes": sum(entry.size for entry in found), "kinds": kinds}


@contextlib.contextmanager
def _exclusively(cache: Cache, names: tuple[str, ...]) -> Iterator[bool]:
    """All the locks at once, exclusively and without waiting: True if taken (nobody uses the entry)."""
    cache.ensure()
    with contextlib.ExitStack() as stack:
        for name in names:
            handle = stack.enter_context((cache.root / "locks" / name).open("a"))
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                yield False
                return
            stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
        yield True


def _remove(cache: Cache, entry: Entry) -> bool:
    """Remove an entry unless it is in use; True if removed."""
    with _exclusively(cache, entry.locks) as free:
        if not free or not entry.path.exists():
            return False
        # Out of place first (one rename): whoever looks after this finds no entry at all.
        retired = staging.make_directory(cache.root / "tmp", f"pruned-{entry.kind}")
        os.rename(entry.path, retired / "entry")
    try:
        shutil.rmtree(retired)
    except PermissionError:
        userns.remove_tree(retired)  # a tree of subordinate ids (a kept kernel-work is the caller's)
    return True


@dataclass
class Pruned:
    removed: list[Entry]
    in_use: list[Entry]
    kept: list[Entry]

    def to_json(self, cache: Cache) -> dict[str, Any]:
        return {"ok": True, "removed": [entry.to_json() for entry in self.removed],
                "removed_bytes": sum(entry.size for entry in self.removed),
                "in_use": [entry.to_json() for entry in self.in_use], **summary(self.kept, cache)}


def prune(cache: Cache, *, max_size: int | None = None, older_than_days: float | None = None,
          now: float | None = None) -> Pruned:
    """Remove least recently used entries: all unused for longer than older_than_days, then more
    until the cache is at most max_size bytes. Entries in use are skipped."""
    cache.sweep_stale()  # what killed builds left in tmp/ goes first
    found = entries(cache)
    total = sum(entry.size for entry in found)
    moment = time.time() if now is None else now
    removed: list[Entry] = []
    in_use: list[Entry] = []
    for entry in sorted((entry for entry in found if entry.prunable), key=lambda entry: entry.last_used):
        stale = older_than_days is not None and entry.last_used < moment - older_than_days * DAY
        too_big = max_size is not None and total > max_size
        if not stale and not too_big:
            continue
        if _remove(cache, entry):
            removed.append(entry)
            total -= entry.size
        else:
            in_use.append(entry)
    kept = [entry for entry in found if entry not in removed]
    return Pruned(removed, in_use, kept)
