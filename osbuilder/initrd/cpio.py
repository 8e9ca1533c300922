"""newc cpio archives written with libarchive, reproducibly.

Entries come in the tree's sorted order ("." first, then "./path" as `find .` names them, which is
what Kata's initrds contain). Owners are the guest's (through the IdMapping), mtimes are clamped to
the epoch, inode numbers are synthetic (1, 2, ... in archive order, never the host's), device
numbers of the archive entries are 0. Hard links stay hard links: every name of an inode carries the
same inode number and the link count within the archive, and the data goes with the last name, as
newc readers (the kernel, GNU cpio, libarchive) expect.
"""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from libarchive import ffi

from osbuilder import runner
from osbuilder.errors import BuildError
from osbuilder.idmap import IdMapping
from osbuilder.tree import BLOCK, CHAR, DIR, FIFO, FILE, SOCKET, SYMLINK, Entry, TreeScan

_TYPE_BITS = {DIR: stat.S_IFDIR, FILE: stat.S_IFREG, SYMLINK: stat.S_IFLNK, CHAR: stat.S_IFCHR,
              BLOCK: stat.S_IFBLK, FIFO: stat.S_IFIFO, SOCKET: stat.S_IFSOCK}
CHUNK = 1 << 20

_entry_p = ffi.c_archive_entry_p
for _name, _args in (("entry_set_ino64", [_entry_p, ctypes.c_int64]), ("entry_set_nlink", [_entry_p, ctypes.c_uint]),
                     ("entry_set_dev", [_entry_p, ctypes.c_uint64]), ("entry_copy_symlink", [_entry_p, ctypes.c_char_p])):
    if not hasattr(ffi, _name):
        ffi.ffi(_name, _args, None)


@dataclass(frozen=True)
class Member:
    """One archive entry: an entry of the tree, or a synthetic one (the /init symlink)."""

    name: str  # as stored: "." or "./path"
    kind: str
    mode: int  # permission bits
    uid: int  # guest ids
    gid: int
    mtime: int
    source: Path | None = None  # where a regular file's data comes from
    size: int = 0  # bytes of data in this entry
    target: str = ""
    rdev: int = 0
    nlink: int = 1
    ino: int = 0


@dataclass(frozen=True)
class ArchiveStats:
    entries: int
    data_bytes: int
    archive_bytes: int


def members(scan: TreeScan, mapping: IdMapping, epoch: int, extra: Iterable[Entry] = ()) -> list[Member]:
    """The archive's entries in order: the tree's (sorted), with `extra` entries (synthetic, relative
    paths, guest ids) merged in by name."""
    entries = list(scan.entries)
    extras = {entry.path: entry for entry in extra}
    if extras:
        # Extras are top-level names here (/init); they go where a sorted walk would have found them.
        merged = [entries[0]]
        pending = sorted(extras.values(), key=lambda e: os.fsencode(e.path))
        for entry in entries[1:]:
            top = entry.path.split("/", 1)[0]
            while pending and os.fsencode(pending[0].path) < os.fsencode(top):
                merged.append(pending.pop(0))
            merged.append(entry)
        merged.extend(pending)
        entries = merged
    # Hard-link groups: how many names each inode has inside the archive, and which name is last.
    names_per_inode: dict[tuple[int, int], int] = {}
    last_name: dict[tuple[int, int], str] = {}
    for entry in entries:
        if entry.hardlinked and entry.path not in extras:
            key = (entry.dev, entry.ino)
            names_per_inode[key] = names_per_inode.get(key, 0) + 1
            last_name[key] = entry.path
    subdirectories: dict[str, int] = {}
    for entry in entries[1:]:
        if entry.kind == DIR:
            parent = entry.path.rpartition("/")[0]
            subdirectories[parent] = subdirectories.get(parent, 0) + 1
    inode_numbers: dict[tuple[int, int], int] = {}
    result = []
    next_ino = 1
    for entry in entries:
        synthetic = entry.path in extras
        key = (entry.dev, entry.ino)
        linked = entry.hardlinked and not synthetic and names_per_inode.get(key, 1) > 1
        if linked and key in inode_numbers:
            ino = inode_numbers[key]
        else:
            ino = next_ino
            next_ino += 1
            if linked:
                inode_numbers[key] = ino
        nlink = names_per_inode[key] if linked else 1
        if entry.kind == DIR:
            nlink = 2 + subdirectories.get(entry.path, 0)
        carries_data = entry.kind == FILE and (not linked or last_name[key] == entry.path)
        uid = entry.uid if synthetic else mapping.guest_uid(entry.uid)
        gid = entry.gid if synthetic else mapping.guest_gid(entry.gid)
        result.append(Member(
            name="./" + entry.path if entry.path else ".", kind=entry.kind, mode=entry.mode, uid=uid, gid=gid,
            mtime=min(entry.mtime, epoch), source=scan.root / entry.path if carries_data else None,
            size=entry.size if carries_data else 0, target=entry.target, rdev=entry.rdev, nlink=nlink, ino=ino))
    return result


def _read_privileged(path: Path, mapping: IdMapping) -> bytes:
    """Read a file the caller owns but may not read (mode 0000): through the id mapping, where
    the caller is root."""
    process = runner.spawn(mapping.wrap(["cat", "--", os.fspath(path)]), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        out, err = process.communicate()
    finally:
        runner.terminate(process)
    if process.returncode != 0:
        raise BuildError(problem=f"cannot read {path}: {err.decode(errors='replace').strip()}", where=os.fspath(path),
                         fix="run as root, or give a tree you own")
    return out


def write(fd: int, items: list[Member], mapping: IdMapping,
          progress: Callable[[int], object] | None = None) -> ArchiveStats:
    """Write the newc archive to `fd` (a file or a compressor's stdin)."""
    archive = ffi.write_new()
    entry = ffi.entry_new()
    data_bytes = 0
    try:
        ffi.write_set_format_cpio_newc(archive)
        ffi.write_set_bytes_per_block(archive, 1 << 16)
        ffi.write_set_bytes_in_last_block(archive, 1)  # no padding to a full block at the end
        ffi.write_open_fd(archive, fd)
        for item in items:
            ffi.entry_clear(entry)
            ffi.entry_copy_pathname(entry, os.fsencode(item.name))
            ffi.entry_set_filetype(entry, _TYPE_BITS[item.kind])
            ffi.entry_set_perm(entry, item.mode)
            ffi.entry_set_uid(entry, item.uid)
            ffi.entry_set_gid(entry, item.gid)
            ffi.entry_set_mtime(entry, item.mtime, 0)
            ffi.entry_set_ino64(entry, item.ino)
            ffi.entry_set_nlink(entry, item.nlink)
            ffi.entry_set_dev(entry, 0)
            if item.kind in (CHAR, BLOCK):
                ffi.entry_set_rdevmajor(entry, os.major(item.rdev))
                ffi.entry_set_rdevminor(entry, os.minor(item.rdev))
            if item.kind == SYMLINK:
                ffi.entry_copy_symlink(entry, os.fsencode(item.target))
            ffi.entry_set_size(entry, item.size)
            ffi.write_header(archive, entry)
            if item.source is not None and item.size:
                data_bytes += _copy_data(archive, item, mapping, progress)
        ffi.write_close(archive)
        archive_bytes = int(ffi.filter_bytes(archive, -1))
    finally:
        ffi.entry_free(entry)
        ffi.write_free(archive)
    return ArchiveStats(len(items), data_bytes, archive_bytes)


def _copy_data(archive: object, item: Member, mapping: IdMapping, progress: Callable[[int], object] | None) -> int:
    assert item.source is not None
    written = 0
    try:
        fd = os.open(item.source, os.O_RDONLY | os.O_NOFOLLOW)
    except PermissionError:
        data = _read_privileged(item.source, mapping)
        if len(data) != item.size:
            raise BuildError(problem="the file changed size during the build", where=os.fspath(item.source)) from None
        ffi.write_data(archive, data, len(data))
        return len(data)
    try:
        while written < item.size:
            chunk = os.read(fd, min(CHUNK, item.size - written))
            if not chunk:
                break
            ffi.write_data(archive, chunk, len(chunk))
            written += len(chunk)
            if progress is not None:
                progress(len(chunk))
    finally:
        os.close(fd)
    if written != item.size:
        raise BuildError(problem=f"the file changed size during the build ({item.size} -> {written} bytes)",
                         where=os.fspath(item.source), fix="do not modify the rootfs while building")
    return written
