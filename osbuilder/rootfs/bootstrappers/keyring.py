"""The archive keyring a Debian-style bootstrap verifies the archive with."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from osbuilder import staging
from osbuilder.arch import Arch
from osbuilder.cache import Cache
from osbuilder.debarchive import ArchiveClient, extract_member
from osbuilder.errors import UsageError
from osbuilder.fetch import Fetcher
from osbuilder.outputs import write_atomically
from osbuilder.recipes import Recipe
from osbuilder.versions import Versions

KIND = "keyrings"  # the cache directory of extracted keyrings


def resolve_keyring(recipe: Recipe, arch: Arch, versions: Versions, cache: Cache, fetcher: Fetcher) -> Path | None:
    """The archive keyring for --keyring: the host's, else the pinned keyring package's file, kept
    in the cache (Debian hosts lack the Ubuntu archive keys)."""
    keyring = recipe.keyring
    if keyring is None:
        return None
    if keyring.host_path and Path(keyring.host_path).is_file():
        return Path(keyring.host_path)
    if not keyring.external or not keyring.member:
        raise UsageError(
            problem=f"the archive keyring {keyring.host_path} is not installed",
            where=f"{recipe.where('keyring')} (keyring)",
            fix="install the keyring package, or name a versions.yaml external with its member",
        )
    pin = versions.external(keyring.external)
    deb = ArchiveClient(fetcher).resolve(pin, arch.name, arch.debian)
    name = f"{deb.sha256[:16]}-{Path(keyring.member).name}"
    cache.hold(KIND, name)  # mmdebstrap reads it later
    target = cache.path(KIND) / name
    if not target.is_file():
        write_atomically(target, extract_member(deb.path, keyring.member))
    return target


def _readable_by_anyone(path: Path) -> bool:
    if not path.stat().st_mode & 0o004:
        return False
    return all(parent.stat().st_mode & 0o001 for parent in path.resolve().parents)


@contextlib.contextmanager
def keyring_for_apt(keyring: Path | None) -> Iterator[Path | None]:
    """The keyring where apt can read it. apt verifies the archive as the unprivileged _apt user
    (and, in unshare mode, as a subordinate id), which cannot enter a private cache directory such
    as ~/.cache; a copy in the temporary directory can be read by anyone (it is public data)."""
    if keyring is None or _readable_by_anyone(keyring):
        yield keyring
        return
    base = Path(tempfile.gettempdir())
    if not base.stat().st_mode & 0o001:
        base = Path("/tmp")
    directory = staging.make_directory(base, "keyring")
    try:
        directory.chmod(0o755)
        copy = directory / keyring.name
        shutil.copyfile(keyring, copy)
        copy.chmod(0o644)
        yield copy
    finally:
        shutil.rmtree(directory, ignore_errors=True)
