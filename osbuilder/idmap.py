"""How a builder sees the ownership of a rootfs tree: the seam between builders and user namespaces.

A rootfs tree on the host is owned by host ids; the guest must see guest ids. The builders (image,
initrd) never decide this themselves: they take an `IdMapping`, which

- wraps an argv so that an external tool (mkfs.ext4 -d, mkfs.erofs) reads the tree with guest
  ownership (`wrap`),
- maps a host id to the guest id for Python readers such as the cpio writer (`guest_uid`/`guest_gid`),
- says which host owners a wrapped tool is root over (`covers`): their files are read whatever their
  mode; the cpio writer reads such a file through `wrap(["cat", path])` when it cannot open it.

The implementation is `osbuilder.userns.IdMap`: identity (root, or a tree that already carries guest
ids), caller-as-root (an unprivileged caller whose tree is owned by themselves: like fakeroot, via
`unshare --map-root-user`), and subordinate ids (a tree mmdebstrap made in unshare mode).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from osbuilder import userns
from osbuilder.errors import BuildError

OVERFLOW_ID = userns.OVERFLOW_ID  # what the kernel shows for an id without a mapping


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


def default_id_mapping(tree: Path) -> IdMapping:
    """The map of the tree (osbuilder.userns.detect): identity for root or a root-owned tree, the
    caller's subordinate ids for a tree made rootless by mmdebstrap, caller-as-root for a tree the
    caller owns. A tree owned by someone else keeps its ids (unreadable files are reported before
    any work)."""
    if os.geteuid() == 0:
        return userns.IDENTITY
    try:
        return userns.detect(tree)
    except (BuildError, OSError):
        return userns.IDENTITY
