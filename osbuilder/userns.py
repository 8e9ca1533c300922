"""Rootfs trees and the ids that own them: how host ownership maps to the guest's, and tools that see it.

A rootfs built as root is owned by real root (the identity map). A rootless build (mmdebstrap's
unshare mode, or our own tar extraction in a user namespace) is owned by the caller's subordinate
ids: host uid `S + n` is guest uid `n`, where `S` starts the caller's /etc/subuid range. A tree
unpacked without any subordinate ids is owned by the caller, who stands for guest root (what
fakeroot and `unshare --map-root-user` do).

`detect(tree)` tells these apart by the owner of the tree's top directory (guest root owns `/`).
`wrap(argv, idmap)` prefixes a command so that it runs as root inside a user namespace with that
mapping: it sees guest ownership, may create files owned by any guest id, and may remove the tree.
Files it creates belong to the mapped guest ids on the host, so create output files as the caller
first and let the wrapped tool write into them when the caller must be able to delete them.
`IdMap.to_guest` maps host ids to guest ids for Python code that reads a tree (a cpio writer), and
`remove_tree` deletes a tree the caller cannot delete directly.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from osbuilder import runner
from osbuilder.errors import BuildError, OsbuilderError
from osbuilder.hosttools import find_tool

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")

IDENTITY_KIND = "identity"  # real ids: a tree made by root
SUBID_KIND = "subid"  # the caller's /etc/subuid and /etc/subgid ranges stand for guest ids 0..N-1
SELF_KIND = "self"  # the caller stands for guest root; no other ids exist


@dataclass(frozen=True)
class IdRange:
    """`count` ids starting at `inner` in the guest are `outer`... on the host."""

    inner: int
    outer: int
    count: int

    def host_to_guest(self, host_id: int) -> int | None:
        offset = host_id - self.outer
        return self.inner + offset if 0 <= offset < self.count else None

    def guest_to_host(self, guest_id: int) -> int | None:
        offset = guest_id - self.inner
        return self.outer + offset if 0 <= offset < self.count else None


@dataclass(frozen=True)
class IdMap:
    kind: str
    uids: tuple[IdRange, ...] = ()
    gids: tuple[IdRange, ...] = ()

    def to_guest(self, uid: int, gid: int) -> tuple[int, int]:
        """Guest (uid, gid) of a file owned by host (uid, gid); ids outside the map become 65534."""
        if self.kind == IDENTITY_KIND:
            return uid, gid
        return _translate(self.uids, uid, to_guest=True), _translate(self.gids, gid, to_guest=True)

    def to_host(self, uid: int, gid: int) -> tuple[int, int]:
        """Host (uid, gid) that stands for guest (uid, gid); unmapped guest ids become 65534."""
        if self.kind == IDENTITY_KIND:
            return uid, gid
        return _translate(self.uids, uid, to_guest=False), _translate(self.gids, gid, to_guest=False)

    # The image and initrd builders' IdMapping protocol (osbuilder/idmap.py): an IdMap from
    # detect() can be handed to them as it is.

    @property
    def name(self) -> str:
        if self.kind == SUBID_KIND:
            return f"subordinate ids ({self.uids[0].outer}+ -> 0+)"
        if self.kind == SELF_KIND:
            return f"caller-as-root ({self.uids[0].outer}:{self.gids[0].outer} -> 0:0)"
        return "identity"

    def wrap(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        return wrap(argv, self)

    def guest_uid(self, uid: int) -> int:
        return self.to_guest(uid, 0)[0]

    def guest_gid(self, gid: int) -> int:
        return self.to_guest(0, gid)[1]

    def covers(self, uid: int) -> bool:
        """Whether a tool run through wrap() is root over files of this host uid (reads them whatever
        their mode): every id the namespace maps, the caller included."""
        if self.kind == IDENTITY_KIND:
            return os.geteuid() == 0
        return uid == os.geteuid() or any(r.host_to_guest(uid) is not None for r in self.uids)


IDENTITY = IdMap(IDENTITY_KIND)
OVERFLOW_ID = 65534


def _translate(ranges: tuple[IdRange, ...], value: int, *, to_guest: bool) -> int:
    for id_range in ranges:
        mapped = id_range.host_to_guest(value) if to_guest else id_range.guest_to_host(value)
        if mapped is not None:
            return mapped
    return OVERFLOW_ID


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def subid_range(kind: str = "uid", uid: int | None = None, path: Path | None = None) -> IdRange | None:
    """The first /etc/subuid (kind "uid") or /etc/subgid ("gid") range of a user, as guest 0.. .

    Entries name the user or its numeric uid, as newuidmap accepts both.
    """
    uid = os.geteuid() if uid is None else uid
    file = path or (SUBUID if kind == "uid" else SUBGID)
    names = {str(uid)}
    name = _user_name(uid)
    if name:
        names.add(name)
    try:
        lines = file.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in names:
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count > 0:
            return IdRange(0, start, count)
    return None


def subid_map(uid: int | None = None) -> IdMap | None:
    uids, gids = subid_range("uid", uid), subid_range("gid", uid)
    if uids is None or gids is None:
        return None
    return IdMap(SUBID_KIND, (uids,), (gids,))


def caller_as_root(uid: int, gid: int) -> IdMap:
    """uid:gid become 0:0 (like fakeroot); every other id is unmapped."""
    return IdMap(SELF_KIND, (IdRange(0, uid, 1),), (IdRange(0, gid, 1),))


def self_map() -> IdMap:
    return caller_as_root(os.geteuid(), os.getegid())


def unshare_problem() -> str | None:
    """Why this caller cannot build rootless with subordinate ids (None: it can, or it is root)."""
    if os.geteuid() == 0:
        return None
    missing = [tool for tool in ("newuidmap", "newgidmap", "unshare") if find_tool(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install uidmap util-linux)"
    name = _user_name(os.geteuid()) or str(os.geteuid())
    if subid_range("uid") is None or subid_range("gid") is None:
        return f"no /etc/subuid and /etc/subgid range for user {name}"
    return user_namespace_problem()


def user_namespace_problem() -> str | None:
    """Why this caller cannot create a user namespace with `unshare --user` (None: it can)."""
    try:
        probe = runner.run(["unshare", "--user", "--map-root-user", "true"], check=False, timeout=10,
                           what="create a user namespace")
    except OsbuilderError as exc:
        return f"cannot create a user namespace: {exc.problem}"
    if probe.returncode != 0:
        detail = probe.stderr.strip().splitlines()
        return "unprivileged user namespaces are disabled here" + (f" ({detail[-1]})" if detail else "")
    return None


def caller_map() -> IdMap:
    """The map of a tree this caller creates: identity as root, else subordinate ids, else itself."""
    if os.geteuid() == 0:
        return IDENTITY
    return subid_map() or self_map()


def detect(tree: Path) -> IdMap:
    """The id map of a rootfs tree, from the owner of its top directory (guest root)."""
    owner = tree.lstat().st_uid
    if owner == 0:
        return IDENTITY
    subids = subid_map()
    if subids is not None and owner == subids.uids[0].outer:
        return subids
    if owner == os.geteuid():
        return self_map()
    raise BuildError(
        problem=f"{tree} is owned by uid {owner}, which is neither root, the caller, "
                "nor the start of the caller's /etc/subuid range",
        where=str(tree),
        fix="build the tree as this user (or as root), or process it as the user who built it",
    )


def wrap(argv: Sequence[str | os.PathLike[str]], idmap: IdMap) -> list[str]:
    """argv prefixed so that it runs as root in a user namespace with `idmap` (unchanged when the
    map is the identity, or when the caller is already who the map says guest root is).

    With subordinate ids the caller itself is also mapped (to guest id N, just past the range), so
    the wrapped tool may still write to the caller's own files and directories.
    """
    args = [os.fspath(arg) for arg in argv]
    if idmap.kind == IDENTITY_KIND:
        return args
    unshare = runner.require_tool("unshare", "run a tool in a user namespace")
    if idmap.kind == SELF_KIND:
        if os.geteuid() == idmap.uids[0].outer == 0:
            return args
        return [unshare, "--user", "--map-root-user", "--", *args]
    uids, gids = idmap.uids[0], idmap.gids[0]
    # util-linux 2.38: --map-users/--map-groups take outer,inner,count and call new[ug]idmap;
    # --map-user/--map-group add the caller (punching a hole at the top of the range), and
    # --setuid/--setgid make the command guest root rather than the caller's unmapped id.
    return [
        unshare,
        f"--map-users={uids.outer},{uids.inner},{uids.count}",
        f"--map-groups={gids.outer},{gids.inner},{gids.count}",
        f"--map-user={uids.inner + uids.count}",
        f"--map-group={gids.inner + gids.count}",
        "--setuid=0",
        "--setgid=0",
        "--",
        *args,
    ]


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below path (a chroot a killed bootstrap left mounted)."""
    prefix = os.path.realpath(path)
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")  # octal escapes such as \040
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def remove_tree(path: Path, idmap: IdMap | None = None) -> None:
    """Delete a tree, entering its user namespace when the caller may not delete it directly.
    A tree with something mounted inside is left alone: deleting it would reach into the mounts."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    mounted = mounts_below(path)
    if mounted:
        raise BuildError(problem=f"{path} still has file systems mounted in it: {', '.join(mounted[:4])}",
                         where=str(path), fix=f"unmount them (umount -R {mounted[0]}), then remove {path}")
    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        pass
    mapping = idmap or detect(path)
    if mapping.kind == IDENTITY_KIND and os.geteuid() != 0:
        raise BuildError(problem=f"cannot remove {path}: it belongs to root", where=str(path),
                         fix=f"remove it as root: sudo rm -rf {path}")
    runner.run(wrap(["rm", "-rf", "--", path], mapping), what=f"remove {path}")


def remove_staging(path: Path) -> None:
    """Delete a staging entry that may hold a tree of other owners: a rootless rootfs (subordinate
    ids) inside the caller's own directory is removed in its namespace first."""
    if path.is_dir() and not path.is_symlink():
        owner = path.lstat().st_uid
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink() and child.lstat().st_uid != owner:
                remove_tree(child)
    remove_tree(path)
