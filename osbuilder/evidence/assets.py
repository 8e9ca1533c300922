"""The evidence of a freshly built image or initrd, for build-image and build-initrd: its SBOM next
to it, then its size budgets (exit 1 over them, the asset kept for inspection)."""

from __future__ import annotations

import shutil
from pathlib import Path

from osbuilder.errors import BuildError
from osbuilder.evidence.budgets import check_asset, check_rootfs_asset
from osbuilder.evidence.sbom import for_built_asset
from osbuilder.outputs import atomic_output
from osbuilder.versions import Versions


def after_build(rootfs_dir: Path, asset: Path, kind: str, epoch: int, *, arch: str, versions: Versions | None,
                free_bytes: int | None = None, file_name: str | None = None) -> Path | None:
    """Write the asset's SBOM (None for a tree osbuilder did not build) and, unless `versions` is
    None (--no-budgets), check the pinned asset's budgets; the SBOM's path."""
    sbom = for_built_asset(rootfs_dir, asset, kind, epoch, file_name)
    if versions is not None:
        check_rootfs_asset(versions, arch, kind, rootfs_dir, asset, free_bytes)
    return sbom


def after_entry_build(rootfs_dir: Path, staged: Path, output: Path, kind: str, epoch: int, *, arch: str,
                      versions: Versions | None, free_bytes: int | None = None) -> Path | None:
    """after_build of an asset built into a cache entry's staging directory (its SBOM goes into the
    entry too). Over a budget the entry is not stored, and the asset is copied to `output` for
    inspection, as after_build keeps it."""
    try:
        return after_build(rootfs_dir, staged, kind, epoch, arch=arch, versions=versions, free_bytes=free_bytes,
                           file_name=output.name)
    except BuildError as error:
        if staged.is_file():
            with atomic_output(output) as temporary:
                shutil.copyfile(staged, temporary)
            error.problem = error.problem.replace(str(staged), str(output))
        raise


def check_hit(versions: Versions | None, arch: str, kind: str, asset: Path, made_as: tuple[str, str, bool],
              free_bytes: int | None = None) -> None:
    """The budgets of an asset taken from the cache (here or remote): checked on every hit as on
    a build, since the entry may have been made with --no-budgets or under other budgets; without
    the rootfs, no contributors are named."""
    if versions is not None:
        check_asset(versions, arch, kind, asset, made_as, free_bytes)
