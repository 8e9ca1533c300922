"""Unpacking a release bundle safely, and finding its runtime configurations."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import libarchive
from libarchive import extract as archive_extract

from osbuilder.errors import UsageError

DEFAULTS_DIR = "opt/kata/share/defaults/kata-containers"
SECURE = (archive_extract.EXTRACT_SECURE_NODOTDOT | archive_extract.EXTRACT_SECURE_NOABSOLUTEPATHS
          | archive_extract.EXTRACT_SECURE_SYMLINKS | archive_extract.EXTRACT_PERM | archive_extract.EXTRACT_TIME)


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def check_members(bundle: Path) -> None:
    """Every member stays inside the extraction directory (names and symlink targets)."""
    with libarchive.file_reader(str(bundle)) as archive:
        for entry in archive:
            name = PurePosixPath(entry.pathname)
            if name.is_absolute() or ".." in name.parts:
                raise UsageError(problem=f"member {entry.pathname} escapes the bundle", where=str(bundle),
                                 fix="this is not a bundle osbuilder made; do not use it")
            if entry.issym:
                target = PurePosixPath(entry.linkpath)
                resolved = PurePosixPath(os.path.normpath(name.parent / target))
                if target.is_absolute() or resolved.parts[:1] == ("..",):
                    raise UsageError(problem=f"symlink {entry.pathname} -> {entry.linkpath} escapes the bundle",
                                     where=str(bundle), fix="this is not a bundle osbuilder made; do not use it")


def extract_bundle(bundle: Path, destination: Path) -> Path:
    """Extract into destination (which must exist) and return it: the bundle's root (it holds opt/)."""
    bundle = bundle.resolve()  # the extraction runs in the destination
    try:
        check_members(bundle)
        with _cwd(destination):
            archive_extract.extract_file(str(bundle), SECURE)
    except libarchive.ArchiveError as exc:
        raise UsageError(problem=f"cannot read the bundle: {exc}", where=str(bundle),
                         fix="give a kata-static-*.tar.zst made by osbuilder bundle") from exc
    if not (destination / DEFAULTS_DIR).is_dir():
        raise UsageError(problem=f"no {DEFAULTS_DIR} in the bundle", where=str(bundle),
                         fix="give a kata-static-*.tar.zst made by osbuilder bundle")
    return destination


def qemu_configs(root: Path) -> list[tuple[str, Path]]:
    """(label, path) of every configuration-qemu*.toml: the image, the initrd and the measured image."""
    configs = sorted((root / DEFAULTS_DIR).glob("configuration-qemu*.toml"))
    if not configs:
        raise UsageError(problem="the bundle has no configuration-qemu*.toml", where=str(root / DEFAULTS_DIR),
                         fix="rebuild the bundle with osbuilder bundle")
    return [(path.name, path) for path in configs]
