"""One sorted walk over a rootfs tree: what the image and initrd builders need to know about it.

The walk is depth-first with the entries of each directory sorted by their bytes (the order mke2fs
-d and a sorted `find` use), so everything derived from it (sizes, identifiers, cpio order) is the
same for the same tree wherever it lives. Symlinks are never followed on the host; `resolve_in_root`
follows them inside the tree, the way the guest will see them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from osbuilder.errors import UsageError
from osbuilder.idmap import IdMapping

DIR, FILE, SYMLINK, CHAR, BLOCK, FIFO, SOCKET = "d", "f", "l", "c", "b", "p", "s"

_KINDS = {
    stat.S_IFDIR: DIR, stat.S_IFREG: FILE, stat.S_IFLNK: SYMLINK, stat.S_IFCHR: CHAR,
    stat.S_IFBLK: BLOCK, stat.S_IFIFO: FIFO, stat.S_IFSOCK: SOCKET,
}
MAX_SYMLINK_HOPS = 40


class Entry(NamedTuple):
    """One inode of the tree as lstat saw it (a tuple: the walk makes thousands of them)."""

    path: str  # relative to the tree, "/"-separated; "" is the tree's root directory
    kind: str  # one of DIR FILE SYMLINK CHAR BLOCK FIFO SOCKET
    mode: int  # permission bits including setuid/setgid/sticky
    uid: int  # host ids, as stat reports them
    gid: int
    size: int
    mtime: int
    nlink: int
    dev: int
    ino: int
    rdev: int
    target: str = ""  # symlink target

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def hardlinked(self) -> bool:
        return self.kind != DIR and self.nlink > 1


@dataclass
class TreeScan:
    root: Path
    entries: list[Entry]
    by_path: dict[str, Entry] = field(default_factory=dict)
    _unique: list[Entry] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.by_path:
            self.by_path = {entry.path: entry for entry in self.entries}

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def get(self, path: str) -> Entry | None:
        return self.by_path.get(path.strip("/"))

    @property
    def max_mtime(self) -> int:
        return max((entry.mtime for entry in self.entries), default=0)

    def unique_inodes(self) -> list[Entry]:
        """One entry per inode (hard links counted once), the root directory excluded."""
        if self._unique is not None:
            return self._unique
        seen: set[tuple[int, int]] = set()
        unique = []
        for entry in self.entries[1:]:
            if entry.hardlinked:
                key = (entry.dev, entry.ino)
                if key in seen:
                    continue
                seen.add(key)
            unique.append(entry)
        self._unique = unique
        return unique

    def total_file_bytes(self) -> int:
        return sum(entry.size for entry in self.unique_inodes() if entry.kind == FILE)

    def digest(self, epoch: int, mapping: IdMapping) -> str:
        """sha256 over the tree's metadata as the guest will see it (names, types, modes, guest
        owners, sizes, clamped mtimes, link targets, device numbers, hard-link groups).

        File contents are not read (that would cost as much as the build); the identifiers derived
        from this digest only need to be stable for the same tree and differ between trees."""
        groups: dict[tuple[int, int], str] = {}
        guest_uid, guest_gid = mapping.guest_uid, mapping.guest_gid
        lines = []
        for entry in self.entries:
            link = groups.setdefault((entry.dev, entry.ino), entry.path) if entry.hardlinked else ""
            lines.append(f"{entry.kind}\0{entry.path}\0{entry.mode:o}\0{guest_uid(entry.uid)}:{guest_gid(entry.gid)}\0"
                         f"{entry.size if entry.kind == FILE else 0}\0{min(entry.mtime, epoch)}\0{entry.target}\0"
                         f"{entry.rdev}\0{link}\n")
        digest = hashlib.sha256(os.fsencode("".join(lines)))
        return digest.hexdigest()


def _entry(path: str, st: os.stat_result, full: str) -> Entry:
    kind = _KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        raise UsageError(problem=f"unsupported file type {stat.S_IFMT(st.st_mode):o}", where=full)
    target = os.readlink(full) if kind == SYMLINK else ""
    return Entry(path, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size, int(st.st_mtime),
                 st.st_nlink, st.st_dev, st.st_ino, st.st_rdev if kind in (CHAR, BLOCK) else 0, target)


def _sorted_children(directory: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as iterator:
            return sorted(iterator, key=lambda child: os.fsencode(child.name))
    except PermissionError:
        raise UsageError(problem="cannot read this directory", where=directory,
                         fix="run as root, or give a tree you own (osbuilder then maps you to root)") from None


def scan_tree(root: Path) -> TreeScan:
    """Walk `root` in sorted pre-order without following symlinks."""
    root_str = os.fspath(root)
    try:
        root_stat = os.lstat(root_str)
    except FileNotFoundError:
        raise UsageError(problem="the rootfs directory does not exist", where=root_str,
                         fix="build the rootfs first (make rootfs) or give its path") from None
    if not stat.S_ISDIR(root_stat.st_mode):
        raise UsageError(problem="the rootfs is not a directory", where=root_str,
                         fix="give the directory that contains the guest's /sbin/init")
    entries = [_entry("", root_stat, root_str)]
    # A stack of (relative path, remaining children) gives pre-order (a directory's subtree comes
    # right after it) without recursion limits.
    stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = [("", iter(_sorted_children(root_str)))]
    while stack:
        relative, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        child_relative = f"{relative}/{child.name}" if relative else child.name
        entry = _entry(child_relative, child.stat(follow_symlinks=False), child.path)
        entries.append(entry)
        if entry.kind == DIR:
            stack.append((child_relative, iter(_sorted_children(child.path))))
    return TreeScan(root, entries)


def follow_links(path: str, lookup: Callable[[str], tuple[bool, str | None]]) -> str | None:
    """Resolve `path` the way the guest will: `lookup(relative)` says whether a path exists and,
    if it is a symlink, its target. Absolute targets restart at the tree's root and `..` stops
    there. None when the path does not exist or loops."""
    pending = [part for part in path.split("/") if part]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        exists, target = lookup("/".join([*resolved, part]))
        if not exists:
            return None
        if target is not None:
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return None
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        resolved.append(part)
    return "/".join(resolved)


def resolve_in_root(root: Path, path: str) -> tuple[str, Entry] | None:
    """Follow `path` inside the tree on disk; the final relative path and its entry."""
    base = os.fspath(root)

    def lookup(relative: str) -> tuple[bool, str | None]:
        full = os.path.join(base, relative)
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            return False, None
        return True, os.readlink(full) if stat.S_ISLNK(st.st_mode) else None

    relative = follow_links(path, lookup)
    if relative is None:
        return None
    full = os.path.join(base, relative) if relative else base
    try:
        return relative, _entry(relative, os.lstat(full), full)
    except FileNotFoundError:
        return None


def parse_epoch(value: str, where: str) -> int:
    try:
        epoch = int(value)
    except ValueError:
        raise UsageError(problem=f"not a number of seconds: {value!r}", where=where,
                         fix="give seconds since 1970-01-01 UTC, e.g. $(git log -1 --format=%ct)") from None
    if epoch < 0 or epoch >= 1 << 32:
        raise UsageError(problem=f"out of range: {epoch}", where=where, fix="give a time between 1970 and 2106")
    return epoch


def environment_epoch(environment: Mapping[str, str] | None = None) -> int | None:
    """$SOURCE_DATE_EPOCH (of `environment`, default: ours), checked; None when it is unset or empty."""
    value = (os.environ if environment is None else environment).get("SOURCE_DATE_EPOCH")
    return parse_epoch(value, "SOURCE_DATE_EPOCH") if value else None


def source_date_epoch(explicit: int | None, scan: TreeScan) -> tuple[int, str]:
    """The time that clamps every timestamp: the option, else $SOURCE_DATE_EPOCH, else the newest
    mtime in the tree (so that the same tree gives the same bytes even without the variable; never
    "now", which would differ between builds)."""
    if explicit is not None:
        return explicit, "--source-date-epoch"
    env = environment_epoch()
    if env is not None:
        return env, "SOURCE_DATE_EPOCH"
    return max(0, min(scan.max_mtime, (1 << 32) - 1)), "the newest mtime in the tree"


def unreadable_entries(scan: TreeScan, mapping: IdMapping) -> list[str]:
    """Entries the build cannot read, for an error before any work: files and directories whose
    owner the mapping does not cover (see IdMapping.covers) and that the caller may not read."""
    if os.geteuid() == 0 and mapping.covers(0):
        return []  # root reads everything (and covers every owner)
    blocked = []
    for entry in scan.entries:
        if entry.kind == FILE:
            wanted = os.R_OK
        elif entry.kind == DIR:
            wanted = os.R_OK | os.X_OK
        else:
            continue
        if mapping.covers(entry.uid):
            continue
        if not os.access(os.path.join(os.fspath(scan.root), entry.path), wanted, follow_symlinks=False):
            blocked.append("/" + entry.path)
    return blocked
