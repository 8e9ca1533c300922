"""What an asset says about its own content: the files of its rootfs that the evidence is made
from, read from a rootfs directory (at build time) or from the built image or initrd (in the
bundle, so the bundle's evidence is derived from the bytes it ships)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from osbuilder.errors import UsageError
from osbuilder.metadata import MANIFEST_JSON, OSBUILDER_YAML
from osbuilder.rootfs.packagefacts import DPKG_STATUS, PACKAGES_JSON

MEMBERS = (DPKG_STATUS, PACKAGES_JSON, MANIFEST_JSON, OSBUILDER_YAML)


@dataclass(frozen=True)
class AssetFacts:
    dpkg_status: str | None  # the guest's dpkg database (None: no distribution, e.g. the minimal recipe)
    packages: dict[str, Any]  # packages.json (licenses, origins); {} when the rootfs has none
    manifest: dict[str, Any]  # manifest.json (recipe, options, agent, packages)
    osbuilder: dict[str, Any]  # osbuilder.yaml

    @property
    def distro(self) -> str:
        return str((self.osbuilder.get("base-distro") or {}).get("name", "unknown"))

    @property
    def release(self) -> str:
        return str((self.osbuilder.get("base-distro") or {}).get("version", "unknown"))


def _parse(read: Callable[[str], str | None], where: str) -> AssetFacts:
    texts = {member: read(member) for member in MEMBERS}
    if texts[MANIFEST_JSON] is None or texts[OSBUILDER_YAML] is None:
        raise UsageError(problem=f"{where} has no /{MANIFEST_JSON} or /{OSBUILDER_YAML}", where=where,
                         fix="build the rootfs with osbuilder build-rootfs")
    try:
        manifest = json.loads(texts[MANIFEST_JSON] or "{}")
        packages = json.loads(texts[PACKAGES_JSON] or "{}")
        osbuilder = yaml.safe_load(texts[OSBUILDER_YAML] or "") or {}
    except (ValueError, yaml.YAMLError) as error:
        raise UsageError(problem=f"unreadable osbuilder metadata: {error}", where=where,
                         fix="rebuild the rootfs with osbuilder build-rootfs") from error
    return AssetFacts(texts[DPKG_STATUS], packages, manifest, osbuilder)


def from_tree(root: Path) -> AssetFacts:
    def read(member: str) -> str | None:
        path = root / member
        return path.read_text(errors="replace") if path.is_file() else None

    return _parse(read, str(root))


def from_image(path: Path) -> AssetFacts:
    from osbuilder.image.layout import read_layout
    from osbuilder.image.superblock import probe
    from osbuilder.inspectors.image import read_members

    image = read_layout(path)
    info = probe(path, image.root.offset)
    assert info is not None  # read_layout found it
    found = read_members(path, info, image.root.offset, MEMBERS)
    return _parse(lambda member: found[member][0], str(path))


def from_initrd(path: Path) -> AssetFacts:
    import libarchive

    wanted = set(MEMBERS)
    found: dict[str, str] = {}
    with libarchive.file_reader(str(path)) as archive:
        for entry in archive:
            name = entry.pathname.removeprefix("./").strip("/")
            if name in wanted and entry.isfile:
                found[name] = b"".join(entry.get_blocks()).decode(errors="replace")
    return _parse(found.get, str(path))


def from_asset(path: Path, kind: str) -> AssetFacts:
    """kind: "image" or "initrd"."""
    return from_image(path) if kind == "image" else from_initrd(path)
