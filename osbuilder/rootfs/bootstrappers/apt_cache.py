"""The package cache of Debian-style bootstraps, shared between builds.

Downloaded .debs are kept under <cache>/apt-archives/<archive>/<suite>/<arch>/. A build works on a
snapshot of hard links (so a concurrent merge cannot change what it copies in), and the packages it
used enter the shared directory by rename afterwards; a package's older versions are dropped when a
build used a newer one. The mmdebstrap bootstrappers hand the snapshot to mmdebstrap and take the
used packages back (see osbuilder.rootfs.bootstrappers.mmdebstrap).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from osbuilder.cache import Cache, mark_used

APT_ARCHIVES = "/var/cache/apt/archives"
KIND = "apt-archives"  # the cache directory, and the lock label's prefix


_DEB = re.compile(r"^(?P<name>[^_]+)_(?P<version>[^_]+)_(?P<arch>[^_]+)\.deb$")


class PackageCache:
    def __init__(self, cache: Cache, archive: str, suite: str, debian_arch: str) -> None:
        self.cache = cache
        self.label = lock_label(archive, suite, debian_arch)
        self.directory = cache.path(KIND, archive, suite, debian_arch)

    def debs(self) -> list[str]:
        return sorted(name for name in os.listdir(self.directory) if name.endswith(".deb"))

    def snapshot(self, destination: Path) -> int:
        """Hard-link the cached packages into a directory private to one build (so a concurrent
        merge cannot change what that build copies in)."""
        destination.mkdir(parents=True, exist_ok=True)
        with self.cache.lock(self.label):
            mark_used(self.directory)
            names = self.debs()
            for name in names:
                try:
                    os.link(self.directory / name, destination / name)
                except OSError:  # another filesystem or no hard links: copy instead
                    (destination / name).write_bytes((self.directory / name).read_bytes())
        return len(names)

    def merge(self, used: Path, known: Sequence[str]) -> list[str]:
        """Take the packages a build used into the cache (moved out of `used`); return the ones it
        downloaded."""
        built = sorted(name for name in os.listdir(used) if _DEB.match(name))
        taken = set(known)
        downloaded = [name for name in built if name not in taken]
        with self.cache.lock(self.label):
            present = set(self.debs())
            for name in built:
                if name not in present:
                    _move(used / name, self.directory / name)
            current = {_package_key(name): name for name in built}
            for name in present:
                key = _package_key(name)
                if key in current and current[key] != name:
                    (self.directory / name).unlink(missing_ok=True)  # superseded by a newer version
        return downloaded


def _move(source: Path, destination: Path) -> None:
    """Rename, or copy to a temporary name and rename across file systems."""
    try:
        os.replace(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        temporary = destination.with_name(f".{destination.name}.{os.getpid()}")
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
        source.unlink()


def take_packages(chroot: Path) -> Path:
    """Where a direct run left the packages it used (they leave the tree with merge())."""
    return chroot / APT_ARCHIVES.lstrip("/")


def _package_key(filename: str) -> tuple[str, str]:
    match = _DEB.match(filename)
    if not match:
        return filename, ""
    return urllib.parse.unquote(match["name"]), match["arch"]


def lock_label(archive: str, suite: str, debian_arch: str) -> str:
    """The cache lock that guards one package directory (builds, and `osbuilder cache prune`)."""
    return f"{KIND}-{archive}-{suite}-{debian_arch}"
