"""A rootfs as an ordered list of tar members: read from a base tar, edited in memory, written anew.

Provisioning edits this model instead of a directory, which needs no privileges: ownership, modes
and device numbers are just numbers in tar headers, whoever runs osbuilder. Only the edits are held
in memory; unchanged file contents are copied from the base tar when the new tar is written. A tree
can also be read from a directory (from_directory, as root), edited the same way, and the edits
applied back to that directory (apply_to), so that it equals the tarball written from the model.

Paths are relative to the rootfs, without a leading "./" ("" is the top directory), and are
resolved through the tree's own symlinks, so `lib/systemd/system/x` on a merged-/usr system is the
member `usr/lib/systemd/system/x`, as it is at run time in the guest.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from osbuilder.errors import BuildError
from osbuilder.tree import MAX_SYMLINK_HOPS

REG = tarfile.REGTYPE
DIR = tarfile.DIRTYPE
SYM = tarfile.SYMTYPE
LNK = tarfile.LNKTYPE
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*")  # no tar wildcard characters
_TYPE_NAMES = {REG: "file", DIR: "directory", SYM: "symlink", LNK: "hard link", tarfile.CHRTYPE: "character device",
               tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}


def normalise(name: str) -> str:
    """'./usr/bin/' -> 'usr/bin'; './' -> ''."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return "/".join(parts)


@dataclass
class Entry:
    path: str
    type: bytes
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    linkname: str = ""  # symlink target as written; for hard links the (normalised) target path
    source: tarfile.TarInfo | None = None  # header and data in the base tar
    data: bytes | None = None  # new content
    host_file: Path | None = None  # new content, read from the host when the tar is written
    pax: dict[str, str] = field(default_factory=dict)
    devmajor: int = 0
    devminor: int = 0
    dirty: bool = True  # differs from the base it was read from (new, edited or re-moded)

    @property
    def kind(self) -> str:
        return _TYPE_NAMES.get(self.type, "member")

    @property
    def executable(self) -> bool:
        return self.mode & 0o111 != 0


class RootfsTree:
    def __init__(self, base: Path | None = None, *, mtime: int = 0) -> None:
        self.mtime = mtime  # for everything added or changed (SOURCE_DATE_EPOCH)
        self.entries: dict[str, Entry] = {}
        self.directory: Path | None = None  # set by from_directory(): the tree on disk
        self.origin: dict[str, bool] = {}  # path -> is a directory, for everything read from disk
        # Held open for the tree's lifetime: unchanged contents are copied from it on write().
        self._base = tarfile.open(base, "r:", errors="surrogateescape") if base else None  # noqa: SIM115
        if self._base is None:
            self.entries[""] = Entry("", DIR, 0o755, mtime=mtime)
            return
        for info in self._base.getmembers():
            path = normalise(info.name)
            self.entries[path] = Entry(
                path, info.type if info.type != tarfile.AREGTYPE else REG, info.mode, info.uid, info.gid,
                int(info.mtime), normalise(info.linkname) if info.type == LNK else info.linkname,
                source=info, pax=dict(info.pax_headers), devmajor=info.devmajor, devminor=info.devminor,
                dirty=False)
        if "" not in self.entries:
            raise BuildError(problem=f"{base} has no top directory entry ('./')", where=str(base),
                             fix="the bootstrap output is not a rootfs tarball")

    def close(self) -> None:
        if self._base is not None:
            self._base.close()

    def __enter__(self) -> RootfsTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_directory(cls, root: Path, *, mtime: int, clamp: int | None = None) -> RootfsTree:
        """A tree read from disk (mmdebstrap's directory output, as root). Contents stay on disk
        and are read when the tarball is written; apply_to() makes the disk match the model. Times
        later than `clamp` (SOURCE_DATE_EPOCH) become `clamp`, as mmdebstrap does for tarballs.
        Device nodes, fifos and sockets are left out (and removed by apply_to)."""
        tree = cls(None, mtime=mtime)
        tree.entries.clear()
        tree.directory = root
        first_names: dict[tuple[int, int], str] = {}

        def visit(path: str, full: Path) -> None:
            info = full.lstat()
            kind = info.st_mode
            tree.origin[path] = stat.S_ISDIR(kind)
            when = int(info.st_mtime) if clamp is None else min(int(info.st_mtime), clamp)
            entry = Entry(path, DIR, stat.S_IMODE(kind), info.st_uid, info.st_gid, when, dirty=False)
            if stat.S_ISLNK(kind):
                entry.type, entry.linkname = SYM, os.readlink(full)
            elif stat.S_ISREG(kind):
                identity = (info.st_dev, info.st_ino)
                if info.st_nlink > 1 and identity in first_names:
                    entry.type, entry.linkname = LNK, first_names[identity]
                else:
                    entry.type, entry.host_file = REG, full
                    first_names.setdefault(identity, path)
            elif not stat.S_ISDIR(kind):
                return  # a device node, fifo or socket
            entry.pax = _xattrs(full)
            tree.entries[path] = entry
            if entry.type == DIR:
                for name in sorted(os.listdir(full)):
                    visit(f"{path}/{name}" if path else name, full / name)

        visit("", root)
        return tree

    # --- lookups ------------------------------------------------------------------------------

    def resolve(self, path: str, *, follow_last: bool = True) -> str:
        """The member path that `path` names inside the guest, following the tree's symlinks."""
        pending = [part for part in path.split("/") if part not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/".join([*resolved, part])
            entry = self.entries.get(candidate)
            if entry is not None and entry.type == SYM and (pending or follow_last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise BuildError(problem=f"too many levels of symlinks resolving /{path}", where=f"/{path}",
                                     fix="the rootfs has a symlink loop")
                if entry.linkname.startswith("/"):
                    resolved = []
                pending = [p for p in entry.linkname.split("/") if p not in ("", ".")] + pending
                continue
            resolved.append(part)
        return "/".join(resolved)

    def get(self, path: str, *, follow: bool = False) -> Entry | None:
        return self.entries.get(self.resolve(path, follow_last=follow))

    def exists(self, path: str, *, follow: bool = False) -> bool:
        return self.get(path, follow=follow) is not None

    def read(self, path: str) -> bytes:
        entry = self.get(path, follow=True)
        if entry is None:
            raise BuildError(problem=f"/{path} does not exist in the rootfs", where=f"/{path}")
        return self._content(entry)

    def _content(self, entry: Entry) -> bytes:
        if entry.type == LNK:
            return self._content(self.entries[entry.linkname])
        if entry.type != REG:
            raise BuildError(problem=f"/{entry.path} is a {entry.kind}, not a file", where=f"/{entry.path}")
        if entry.data is not None:
            return entry.data
        if entry.host_file is not None:
            return entry.host_file.read_bytes()
        assert self._base is not None and entry.source is not None
        handle = self._base.extractfile(entry.source)
        assert handle is not None
        return handle.read()

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.read(path)).hexdigest()

    # --- edits --------------------------------------------------------------------------------

    def _place(self, path: str) -> str:
        """Where a new member named `path` goes: its parent resolved, missing parents created."""
        parts = normalise(path).rsplit("/", 1)
        name = parts[-1]
        if not name or name == "..":
            raise BuildError(problem=f"invalid rootfs path '{path}'", where=path)
        parent = self.mkdirs(parts[0]) if len(parts) == 2 else ""
        return f"{parent}/{name}" if parent else name

    def mkdirs(self, path: str, mode: int = 0o755) -> str:
        """Create the directory and its missing parents (root-owned); return its member path."""
        current = ""
        for part in normalise(path).split("/"):
            if not part:
                continue
            current = self.resolve(f"{current}/{part}" if current else part)
            entry = self.entries.get(current)
            if entry is None:
                self.entries[current] = Entry(current, DIR, mode, mtime=self.mtime)
            elif entry.type != DIR:
                raise BuildError(problem=f"/{current} is a {entry.kind}, where a directory is needed",
                                 where=f"/{current}", fix="the rootfs layout is unexpected")
        return current

    def _store(self, entry: Entry) -> None:
        old = self.entries.get(entry.path)
        if old is not None and old.type == DIR and entry.type != DIR:
            self.remove(entry.path)
        elif old is not None and old.type == REG:
            self._detach_links({entry.path})
        self.entries[entry.path] = entry  # a replaced member keeps its place

    def put_file(self, path: str, content: bytes | Path, *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> str:
        target = self._place(path)
        entry = Entry(target, REG, mode, uid, gid, self.mtime)
        if isinstance(content, Path):
            entry.host_file = content
        else:
            entry.data = content
        self._store(entry)
        return target

    def put_symlink(self, path: str, target: str, *, uid: int = 0, gid: int = 0) -> str:
        where = self._place(path)
        self._store(Entry(where, SYM, 0o777, uid, gid, self.mtime, linkname=target))
        return where

    def put_hardlink(self, path: str, existing: str) -> str:
        resolved = self.resolve(existing)
        target = self.entries.get(resolved)
        if target is None or target.type != REG:
            raise BuildError(problem=f"hard link target /{existing} is not a file", where=f"/{path}")
        where = self._place(path)
        self._store(Entry(where, LNK, target.mode, target.uid, target.gid, self.mtime, linkname=resolved))
        return where

    def put_dir(self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> str:
        where = self.resolve(path)
        existing = self.entries.get(where)
        if existing is not None and existing.type == DIR:
            if (existing.mode, existing.uid, existing.gid) != (mode, uid, gid):
                existing.mode, existing.uid, existing.gid, existing.dirty = mode, uid, gid, True
            return where
        where = self._place(path)
        self._store(Entry(where, DIR, mode, uid, gid, self.mtime))
        return where

    def chmod(self, path: str, mode: int) -> None:
        entry = self.get(path, follow=True)
        if entry is None:
            raise BuildError(problem=f"/{path} does not exist in the rootfs", where=f"/{path}")
        if entry.mode != mode:
            entry.mode, entry.dirty = mode, True

    def update(self, path: str, edit: Callable[[str], str]) -> bool:
        """Rewrite a text file as `sed -i` would (a new file at that path, same owner and mode);
        False if it does not exist."""
        entry = self.get(path, follow=True)
        if entry is None or entry.type not in (REG, LNK):
            return False
        text = self._content(entry).decode("utf-8", errors="surrogateescape")
        if entry.type == LNK:
            entry.type, entry.linkname = REG, ""
        else:
            self._detach_links({entry.path})
        entry.data = edit(text).encode("utf-8", errors="surrogateescape")
        entry.host_file = None
        entry.mtime = self.mtime
        entry.dirty = True
        return True

    def remove(self, path: str) -> list[str]:
        """Remove a member (not following a final symlink) and everything below it."""
        where = self.resolve(path, follow_last=False)
        if where == "" or where not in self.entries:
            return []
        prefix = f"{where}/"
        doomed = [name for name in self.entries if name == where or name.startswith(prefix)]
        self._forget(doomed)
        return doomed

    def remove_matching(self, predicate: Callable[[Entry], bool]) -> list[str]:
        """Remove every member (and what is below it) for which predicate is true."""
        chosen = [name for name, entry in self.entries.items() if name and predicate(entry)]
        doomed: list[str] = []
        for name in chosen:
            prefix = f"{name}/"
            doomed.extend(other for other in self.entries if other == name or other.startswith(prefix))
        unique = list(dict.fromkeys(doomed))
        self._forget(unique)
        return unique

    def _forget(self, names: list[str]) -> None:
        self._detach_links({name for name in names if self.entries[name].type == REG}, set(names))
        for name in names:
            del self.entries[name]

    def _detach_links(self, paths: set[str], doomed: set[str] | None = None) -> None:
        """Before files go away or change, the first surviving hard link to each takes over its
        old content and the other links point to that one (what unlinking does on a filesystem)."""
        if not paths:
            return
        doomed = doomed or set()
        groups: dict[str, list[Entry]] = {}
        for entry in self.entries.values():
            if entry.type == LNK and entry.linkname in paths and entry.path not in doomed:
                groups.setdefault(entry.linkname, []).append(entry)
        for target, links in groups.items():
            original = self.entries[target]
            heir = links[0]
            heir.type, heir.linkname = REG, ""
            heir.source, heir.data, heir.host_file = original.source, original.data, original.host_file
            if self.directory is not None and original.host_file == self.directory / original.path:
                heir.host_file = self.directory / heir.path  # on disk: the same inode, under its own name
            for other in links[1:]:
                other.linkname = heir.path

    def split_point(self, minimum: int = 1000) -> str | None:
        """A directory whose subtree holds about half of the entries (at least a fifth) and shares
        no hard link with the rest, so that the two parts can be unpacked independently; None for
        small trees and where no such directory exists."""
        total = len(self.entries)
        if total < minimum:
            return None
        counts: dict[str, int] = {}
        for path in self.entries:
            parts = path.split("/") if path else []
            for depth in range(1, min(len(parts), 3) + 1):
                prefix = "/".join(parts[:depth])
                counts[prefix] = counts.get(prefix, 0) + 1
        links = [(entry.path, entry.linkname) for entry in self.entries.values() if entry.type == LNK]
        candidates = sorted((abs(total - 2 * count), path) for path, count in counts.items()
                            if self.entries.get(path) is not None and self.entries[path].type == DIR
                            and _PLAIN_NAME.fullmatch(path) and min(count, total - count) >= total // 5)
        for _imbalance, path in candidates:
            prefix = f"{path}/"
            if all(link.startswith(prefix) == target.startswith(prefix) for link, target in links):
                return path
        return None

    # --- back to disk ---------------------------------------------------------------------------

    def apply_to(self) -> None:
        """Make the directory this tree was read from (from_directory) match the model: remove what
        is gone, write what is new or edited, then set every time. Needs the privileges of the
        tree's owner (root for mmdebstrap's root mode)."""
        root = self.directory
        if root is None:
            raise ValueError("apply_to() needs a tree read from a directory")
        gone = [path for path, was_dir in self.origin.items()
                if path not in self.entries or (self.entries[path].type == DIR) != was_dir]
        for path in sorted(gone, reverse=True):  # children before their directories
            full = root / path
            if self.origin[path] and not full.is_symlink():
                shutil.rmtree(full)
            else:
                full.unlink(missing_ok=True)
        for entry in self.ordered():
            if entry.dirty:
                self._write_entry(root, entry)
        for entry in self.entries.values():
            full = root / entry.path if entry.path else root
            if full.lstat().st_mtime_ns != entry.mtime * 1_000_000_000:
                os.utime(full, ns=(entry.mtime * 1_000_000_000,) * 2, follow_symlinks=False)

    def _write_entry(self, root: Path, entry: Entry) -> None:
        full = root / entry.path if entry.path else root
        if entry.type == DIR:
            if not full.is_dir() or full.is_symlink():
                full.unlink(missing_ok=True)
                full.mkdir()
            os.lchown(full, entry.uid, entry.gid)
            full.chmod(entry.mode)
            return
        if entry.type == REG:
            if entry.data is None and entry.host_file == full:  # same content, new mode or owner
                os.lchown(full, entry.uid, entry.gid)
                full.chmod(entry.mode)
                return
            temporary = full.with_name(f".{full.name}.osbuilder-new")
            if entry.data is not None:
                temporary.write_bytes(entry.data)
            else:
                shutil.copyfile(self._content_path(entry), temporary)
            os.lchown(temporary, entry.uid, entry.gid)
            temporary.chmod(entry.mode)
            os.replace(temporary, full)  # a new inode: other hard links keep the old content
            return
        if full.is_symlink() or full.exists():
            full.unlink()
        if entry.type == SYM:
            os.symlink(entry.linkname, full)
            os.lchown(full, entry.uid, entry.gid)
        elif entry.type == LNK:
            os.link(root / entry.linkname, full)
        else:
            raise BuildError(problem=f"cannot create the {entry.kind} /{entry.path} on disk", where=f"/{entry.path}")

    def _content_path(self, entry: Entry) -> Path:
        if entry.host_file is None:
            raise BuildError(problem=f"/{entry.path} has no content to write", where=f"/{entry.path}")
        return entry.host_file

    # --- output -------------------------------------------------------------------------------

    def write(self, destination: Path | BinaryIO, progress: Callable[[int], object] | None = None) -> None:
        """Write the tree as a PAX tar, in tree order, with numeric ids and no user names."""
        if isinstance(destination, Path):
            with destination.open("wb") as handle:
                self._write(handle, progress)
        else:
            self._write(destination, progress)

    def ordered(self) -> list[Entry]:
        """Depth-first by name, each directory's members together (so tar restores a directory's
        mtime after filling it), and each hard-linked file's content with the first of its names."""
        order = sorted(self.entries.values(), key=lambda entry: entry.path.split("/") if entry.path else [])
        position = {entry.path: index for index, entry in enumerate(order)}
        groups: dict[str, list[Entry]] = {}
        for entry in order:
            if entry.type == LNK:
                groups.setdefault(entry.linkname, []).append(entry)
        for target_path, links in groups.items():
            first = min(links, key=lambda link: position[link.path])
            if position[first.path] > position[target_path]:
                continue
            target = self.entries[target_path]
            # The first name in output order carries the content; the rest link to it.
            first.type, first.linkname = REG, ""
            first.source, first.data, first.host_file = target.source, target.data, target.host_file
            target.type, target.linkname = LNK, first.path
            target.source, target.data, target.host_file = None, None, None
            for link in links:
                if link is not first:
                    link.linkname = first.path
        return order

    def _write(self, handle: BinaryIO, progress: Callable[[int], object] | None) -> None:
        with tarfile.open(fileobj=handle, mode="w|", format=tarfile.PAX_FORMAT,
                          errors="surrogateescape") as out:
            for entry in self.ordered():
                info = self._header(entry)
                if entry.type != REG:
                    out.addfile(info)
                elif entry.data is not None:
                    out.addfile(info, io.BytesIO(entry.data))
                elif entry.host_file is not None:
                    with entry.host_file.open("rb") as data:
                        out.addfile(info, data)
                else:
                    assert self._base is not None and entry.source is not None
                    out.addfile(info, self._base.extractfile(entry.source))
                if progress is not None:
                    progress(1)

    def _header(self, entry: Entry) -> tarfile.TarInfo:
        if entry.source is not None:
            info = copy.copy(entry.source)
            info.pax_headers = dict(entry.pax)
        else:
            info = tarfile.TarInfo()
            info.pax_headers = dict(entry.pax)
        info.name = f"./{entry.path}" if entry.path else "./"
        info.type = entry.type
        info.mode = entry.mode
        info.uid, info.gid = entry.uid, entry.gid
        info.uname = info.gname = ""
        info.mtime = entry.mtime
        info.devmajor, info.devminor = entry.devmajor, entry.devminor
        if entry.type == LNK:
            info.linkname = f"./{entry.linkname}"
        elif entry.type == SYM:
            info.linkname = entry.linkname
        else:
            info.linkname = ""
        if entry.type == REG:
            if entry.data is not None:
                info.size = len(entry.data)
            elif entry.host_file is not None:
                info.size = entry.host_file.stat().st_size
        else:
            info.size = 0
        return info

    def __len__(self) -> int:
        return len(self.entries)



def _xattrs(path: Path) -> dict[str, str]:
    """Extended attributes as tar's PAX headers name them (file capabilities, ACLs)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    headers = {}
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        headers[f"SCHILY.xattr.{name}"] = value.decode("utf-8", errors="surrogateescape")
    return headers
