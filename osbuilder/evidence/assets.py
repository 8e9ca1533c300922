"""The evidence of a freshly built image or initrd, for build-image and build-initrd: its SBOM next
to it, then its size budgets (exit 1 over them, the asset kept for inspection)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from osbuilder.errors import BuildError
from osbuilder.evidence.budgets import check_asset, check_rootfs_asset
from osbuilder.evidence.sbom import for_built_asset
from osbuilder.outputs import atomic_output
from osbuilder.versions import Versions

if TYPE_CHECKING:
    from osbuilder.rootfs.plan import Plan


def after_build(rootfs_dir: Path, asset: Path, kind: str, epoch: int, *, arch: str, versions: Versions | None,
                free_bytes: int | None = None, delivered_as: Path | None = None) -> Path | None:
    """Write the asset's SBOM (None for a tree osbuilder did not build) and, unless `versions` is
    None (--no-budgets), check the pinned asset's budgets; the SBOM's path. `delivered_as`: where an
    asset built into a cache entry's staging directory is delivered (its SBOM goes into the entry
    too, naming the entry's file: see sbom.name_delivered_asset); over a budget the entry is not stored, and
    the asset is copied there for inspection."""
    sbom = for_built_asset(rootfs_dir, asset, kind, epoch)
    if versions is None:
        return sbom
    try:
        check_rootfs_asset(versions, arch, kind, rootfs_dir, asset, free_bytes, kept=delivered_as)
    except BuildError:
        if delivered_as is not None:
            with atomic_output(delivered_as) as temporary:
                shutil.copyfile(asset, temporary)
        raise
    return sbom


def check_hit(versions: Versions | None, planned: Plan, kind: str, asset: Path, free_bytes: int | None = None) -> None:
    """A cached image or initrd of the rootfs `planned` against the budgets (unless --no-budgets): a
    hit may come from a --no-budgets build or looser budgets. A built one was checked by
    after_build, with the rootfs's contributors; a hit has no rootfs to name them from."""
    from osbuilder.rootfs.plan import is_agent_init

    if versions is not None:
        check_asset(versions, planned.arch.name, kind, asset,
                    (planned.recipe.name, planned.release.codename, is_agent_init(planned)), free_bytes)
