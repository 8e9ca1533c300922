"""How a builder sees the ownership of a rootfs tree: the seam between builders and user namespaces.

A rootfs tree on the host is owned by host ids; the guest must see guest ids. The builders (image,
initrd) never decide this themselves: they take an `IdMapping`, which

- wraps an argv so that an external tool (mkfs.ext4 -d, mkfs.erofs) reads the tree with guest
  ownership (`wrap`),
- maps a host id to the guest id for Python readers such as the cpio writer (`guest_uid`/`guest_gid`),
- says which host owners a wrapped tool is root over (`covers`): their files are read whatever their
  mode; the cpio writer reads such a file through `wrap(["cat", path])` when it cannot open it.

Two mappings live here: identity (root, or any caller whose tree already carries guest ids) and
`CallerAsRoot` (an unprivileged caller whose tree is owned by themselves, as after an unprivileged
extraction: like fakeroot, the caller becomes 0:0 via `unshare --map-root-user`). A mapping for trees
owned by subordinate ids (/etc/subuid ranges) plugs in through the same protocol.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

# What the kernel shows for an id that has no mapping in a user namespace.
OVERFLOW_ID = 65534


@runtime_checkable
class IdMapping(Protocol):
    """Host → guest ownership, for external tools (`wrap`) and Python readers (`guest_*`)."""

    @property
    def name(self) -> str: ...

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """argv, run so that the tool sees the tree with guest ownership."""
        ...

    def guest_uid(self, uid: int) -> int: ...

    def guest_gid(self, gid: int) -> int: ...

    def covers(self, uid: int) -> bool:
        """Whether a wrapped tool is root over files of this host uid (it reads them whatever
        their mode); files it does not cover must be readable by the caller."""
        ...


@dataclass(frozen=True)
class IdentityMapping:
    """Ids are already the guest's (the caller is root, or the tree carries guest ids)."""

    @property
    def name(self) -> str:
        return "identity"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def guest_uid(self, uid: int) -> int:
        return uid

    def guest_gid(self, gid: int) -> int:
        return gid

    def covers(self, uid: int) -> bool:
        return os.geteuid() == 0


@dataclass(frozen=True)
class CallerAsRoot:
    """The caller's uid/gid become 0:0; any other id is unmapped (the overflow id), as in
    `unshare --map-root-user`, so Python readers and external tools see the same owners."""

    uid: int
    gid: int
    unshare: str = "unshare"

    @property
    def name(self) -> str:
        return f"caller-as-root ({self.uid}:{self.gid} -> 0:0)"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return [self.unshare, "--user", "--map-root-user", "--", *argv]

    def guest_uid(self, uid: int) -> int:
        return 0 if uid == self.uid else OVERFLOW_ID

    def guest_gid(self, gid: int) -> int:
        return 0 if gid == self.gid else OVERFLOW_ID

    def covers(self, uid: int) -> bool:
        return uid == self.uid


IDENTITY = IdentityMapping()


def default_id_mapping(tree: Path) -> IdMapping:
    """Root: identity. An unprivileged caller who owns the tree: the caller becomes root.
    Otherwise identity (the tree keeps its ids; unreadable files are reported before any work)."""
    if os.geteuid() == 0:
        return IDENTITY
    try:
        owner = tree.lstat().st_uid
    except OSError:
        return IDENTITY
    if owner == os.geteuid():
        return CallerAsRoot(os.geteuid(), os.getegid())
    return IDENTITY
