"""What every bootstrapper does: make the base tree of a distribution from a package set.

A bootstrapper is chosen while planning (osbuilder.rootfs.bootstrappers.choose) and is a frozen
value: its `identity` (the tool and its version, or the builder image) is part of the rootfs cache
key. `prepare` fetches what it needs (an archive keyring, a builder image) before the build and
returns the bootstrapper holding it; `bootstrap` writes the base tree: a directory in place of the output when it runs as root on this
host, else a tarball that the build edits as tar members. `finish` takes out of the tree what the
bootstrap itself put there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from osbuilder.arch import Arch
from osbuilder.cache import Cache
from osbuilder.fetch import Fetcher
from osbuilder.modes import BuildMode
from osbuilder.recipes import Recipe, Release
from osbuilder.rootfs.tree import RootfsTree
from osbuilder.versions import Versions


@dataclass(frozen=True)
class Job:
    """The package set to bootstrap, the same for every backend."""

    recipe: Recipe
    release: Release
    arch: Arch
    packages: tuple[str, ...]
    mirror: str | None  # None: the tool's default mirrors for the suite
    variant: str  # mmdebstrap's --variant: the recipe's, or minbase for a container root
    trims: tuple[str, ...]  # paths not to unpack after the essential set (guest roots only)
    source_date_epoch: int | None
    # apt's signed package lists stay in the tree (guest roots): the build reads each package's
    # origin from them (osbuilder.rootfs.packagefacts) before provisioning removes /var/lib/apt
    keep_apt_lists: bool = False


@dataclass(frozen=True)
class Workspace:
    """Where a bootstrap works. `target` is the output directory (in place) or a tarball to write."""

    target: Path
    in_place: bool
    staging: Path  # a private directory for the bootstrapper's own files
    cache: Cache
    on_line: Callable[[str], None]  # each line of the tool's output (progress)


@dataclass(frozen=True)
class Bootstrapped:
    base: Path | None  # the tree (in place) or tarball written; None: no distribution
    downloaded: list[str] = field(default_factory=list)  # packages fetched from the archive
    reused: int = 0  # packages taken from the package cache


@dataclass(frozen=True)
class Choice:
    """What a bootstrapper is chosen from while planning."""

    recipe: Recipe
    release: Release
    arch: Arch
    docker_base: str | None  # --docker-base
    memo: Path | None  # the cache's memo of tool versions


class Bootstrapper(Protocol):
    @property
    def mode(self) -> BuildMode: ...

    @property
    def identity(self) -> str:
        """The tool (and its version, or the builder image) that makes the base tree."""
        ...

    def check_host(self, job: Job, where: str) -> None:
        """Host problems found before any work (UsageError): emulation for a foreign architecture."""
        ...

    def prepare(self, job: Job, versions: Versions, cache: Cache, fetcher: Fetcher) -> Bootstrapper:
        """Fetch or build what the bootstrap needs (a keyring, a builder image); the bootstrapper
        that has it."""
        ...

    def can_write_in_place(self, directory: Path) -> bool:
        """Whether the base tree can be written as a directory in `directory` (root on this host)."""
        ...

    def bootstrap(self, job: Job, workspace: Workspace) -> Bootstrapped: ...

    def finish(self, tree: RootfsTree) -> None:
        """Remove from the tree what the bootstrap added for itself; add what a tree needs that no
        distribution provides (the minimal recipe)."""
        ...


Factory = Callable[[Choice], Bootstrapper]
