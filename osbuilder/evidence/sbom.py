"""CycloneDX 1.6 SBOMs, written with cyclonedx-python-lib: one per rootfs-derived asset (image,
initrd) and one per bundle that relates them (BOM-Link external references with the sha256 of
each asset's SBOM).

Why CycloneDX rather than SPDX 2.3: Debian packages declare licenses with Debian's short names
(GPL-2+, Expat, public-domain, ...), which are mostly not SPDX identifiers; CycloneDX records a
license by SPDX id where one matches and by name otherwise, so nothing is invented (SPDX 2.3 needs
a LicenseRef with extracted text for each). Its hashes and BOM references take sha256 (an SPDX 2.3
ExternalDocumentRef must carry SHA-1), which is the digest everything else here uses.

Reproducible: the serial number is derived from the described file's sha256, the timestamp is the
build epoch, and the library writes components in a stable order.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclonedx.model import (
    ExternalReference,
    ExternalReferenceType,
    HashAlgorithm,
    HashType,
    Property,
    XsUri,
)
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, LicenseAcknowledgement
from cyclonedx.model.tool import Tool
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.spdx import fixup_id
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from osbuilder import __version__
from osbuilder.cache import sha256_file
from osbuilder.debarchive import parse_stanzas
from osbuilder.evidence.assetfacts import AssetFacts
from osbuilder.outputs import write_atomically

SUFFIX = ".cdx.json"
PROPERTY = "osbuilder:"  # our property namespace
_SERIAL_NAMESPACE = uuid.UUID("6f1b8f9e-3c1e-5a43-9a57-6f7362756c64")
# Debian's copyright-format short names whose SPDX identifier is unambiguous.
DEBIAN_TO_SPDX = {
    "GPL-1": "GPL-1.0-only", "GPL-1+": "GPL-1.0-or-later", "GPL-2": "GPL-2.0-only", "GPL-2+": "GPL-2.0-or-later",
    "GPL-3": "GPL-3.0-only", "GPL-3+": "GPL-3.0-or-later", "LGPL-2": "LGPL-2.0-only",
    "LGPL-2+": "LGPL-2.0-or-later", "LGPL-2.1": "LGPL-2.1-only", "LGPL-2.1+": "LGPL-2.1-or-later",
    "LGPL-3": "LGPL-3.0-only", "LGPL-3+": "LGPL-3.0-or-later", "AGPL-3": "AGPL-3.0-only",
    "AGPL-3+": "AGPL-3.0-or-later", "GFDL-1.2": "GFDL-1.2-only", "GFDL-1.3": "GFDL-1.3-only",
    "Expat": "MIT", "BSD-2-clause": "BSD-2-Clause", "BSD-3-clause": "BSD-3-Clause", "BSD-4-clause": "BSD-4-Clause",
    "Apache-2": "Apache-2.0", "Apache-2.0": "Apache-2.0", "MPL-2.0": "MPL-2.0", "Artistic": "Artistic-1.0-Perl",
}


def sbom_path(asset: Path) -> Path:
    """Where an asset's SBOM is written: next to it, `<asset>.cdx.json`."""
    return asset.with_name(asset.name + SUFFIX)


def _sha256(content: str) -> HashType:
    return HashType(alg=HashAlgorithm.SHA_256, content=content)


def _properties(values: dict[str, Any]) -> list[Property]:
    return [Property(name=PROPERTY + key, value=str(value)) for key, value in sorted(values.items())
            if value not in (None, "")]


def _timestamp(epoch: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)


def _licenses(names: Iterable[str]) -> list[DisjunctiveLicense]:
    licenses = []
    for name in names:
        spdx = DEBIAN_TO_SPDX.get(name) or fixup_id(name)
        licenses.append(DisjunctiveLicense(id=spdx, acknowledgement=LicenseAcknowledgement.DECLARED) if spdx else
                        DisjunctiveLicense(name=name, acknowledgement=LicenseAcknowledgement.DECLARED))
    return licenses


@dataclass(frozen=True)
class InstalledPackage:
    name: str
    version: str
    architecture: str
    facts: dict[str, Any]  # from packages.json (source, licenses, origin); {} when not recorded


def installed_packages(facts: AssetFacts) -> list[InstalledPackage]:
    """Every installed package: from the guest's dpkg database when it has one (what dpkg-query
    lists), else the rootfs manifest's list (the minimal recipe's busybox)."""
    recorded = {(entry["name"], entry["architecture"]): entry for entry in facts.packages.get("packages", [])}
    found: list[InstalledPackage] = []
    if facts.dpkg_status is not None:
        for stanza in parse_stanzas(facts.dpkg_status):
            if not stanza.get("Status", "").endswith(" installed"):
                continue
            key = (stanza.get("Package", ""), stanza.get("Architecture", ""))
            entry = recorded.get(key, {})
            if entry.get("version") not in (None, stanza.get("Version")):
                entry = {}  # recorded for another version: not this package's facts
            found.append(InstalledPackage(key[0], stanza.get("Version", ""), key[1], entry))
    else:
        for entry in facts.manifest.get("packages", []):
            found.append(InstalledPackage(entry["name"], entry["version"], entry["architecture"], {}))
    return sorted(found, key=lambda package: (package.name, package.architecture))


def _package_component(package: InstalledPackage, archive: str, distro: str, release: str) -> Component:
    purl = PackageURL(type="deb", namespace=archive, name=package.name, version=package.version,
                      qualifiers={"arch": package.architecture, "distro": f"{distro}-{release}"})
    origin = package.facts.get("origin") or {}
    return Component(
        type=ComponentType.LIBRARY, name=package.name, version=package.version, purl=purl, bom_ref=purl.to_string(),
        hashes=[_sha256(origin["sha256"])] if origin.get("sha256") else None,
        licenses=_licenses(package.facts.get("licenses", [])),
        properties=_properties({
            "source-package": package.facts.get("source"), "source-version": package.facts.get("source_version"),
            "architecture": package.architecture, "archive": origin.get("archive"), "suite": origin.get("suite"),
            "index": origin.get("index"), "pool-path": origin.get("filename"),
            "license-from": package.facts.get("license_from", "not recorded at build time"),
        }),
    )


def agent_component(agent: dict[str, Any]) -> Component:
    name = str(agent.get("name", "kata-agent"))
    return Component(
        type=ComponentType.APPLICATION, name=name, version=str(agent.get("version", "")),
        bom_ref=f"agent:{name}@{agent.get('version', '')}:{agent.get('sha256', '')}",
        hashes=[_sha256(agent["sha256"])] if agent.get("sha256") else None,
        properties=_properties({"source": agent.get("source"), "source-sha256": agent.get("source_sha256"),
                                "sha256-is-of": "the stripped executable in the rootfs"}),
    )


def _serial(*parts: str) -> uuid.UUID:
    return uuid.uuid5(_SERIAL_NAMESPACE, "\0".join(parts))


def _metadata(subject: Component, epoch: int) -> BomMetaData:
    metadata = BomMetaData(component=subject, timestamp=_timestamp(epoch))
    metadata.tools.tools.add(Tool(vendor="osbuilder", name="osbuilder", version=__version__))
    return metadata


def asset_bom(facts: AssetFacts, *, file_name: str, sha256: str, kind: str, epoch: int) -> Bom:
    """The SBOM of an image or initrd: the file, every installed package, the agent."""
    archive = str(facts.packages.get("archive") or facts.distro)
    subject = Component(
        type=ComponentType.FILE, name=file_name, version=f"{facts.distro}-{facts.release}", bom_ref=f"asset:{file_name}",
        hashes=[_sha256(sha256)],
        properties=_properties({"asset-kind": kind, "distro": facts.distro, "release": facts.release,
                                "init": facts.manifest.get("init"), "architecture": facts.manifest.get("architecture"),
                                "rootfs-cache-key": facts.manifest.get("cache_key"),
                                "recipe-sha256": (facts.manifest.get("recipe") or {}).get("sha256")}),
    )
    bom = Bom(serial_number=_serial("asset", kind, sha256), metadata=_metadata(subject, epoch))
    components = [_package_component(package, archive, facts.distro, facts.release)
                  for package in installed_packages(facts)]
    agent = facts.manifest.get("agent")
    if isinstance(agent, dict):
        components.append(agent_component(agent))
    for component in components:
        bom.components.add(component)
    bom.register_dependency(subject, components)
    return bom


@dataclass(frozen=True)
class BundledAsset:
    file: str  # path below opt/kata
    kind: str
    sha256: str
    sbom_file: str  # its SBOM, below opt/kata
    sbom_sha256: str
    sbom_link: str  # urn:cdx:<serial>/<version>
    agent: dict[str, Any]


@dataclass(frozen=True)
class BundledFile:
    file: str  # path below opt/kata
    sha256: str


def bundle_bom(*, name: str, version: str, arch: str, epoch: int, kernel: dict[str, Any],
               kernel_files: list[BundledFile], assets: list[BundledAsset], runtime: list[BundledFile],
               runtime_version: str) -> Bom:
    """The bundle's SBOM: the kernel (version, source and its digest, configuration digest), each
    guest asset related to its own SBOM by a BOM-Link with that SBOM's sha256, the agents and the
    runtime."""
    subject = Component(type=ComponentType.PLATFORM, name=name, version=version, bom_ref=f"bundle:{name}",
                        properties=_properties({"architecture": arch}))
    bom = Bom(serial_number=_serial("bundle", name, *(f.sha256 for f in kernel_files), *(a.sha256 for a in assets)),
              metadata=_metadata(subject, epoch))
    source = kernel.get("source") or {}
    components: list[Component] = [Component(
        type=ComponentType.OPERATING_SYSTEM, name="linux", version=str(kernel.get("kernel_version", "")),
        bom_ref=f"kernel:{kernel.get('name', '')}",
        hashes=[_sha256(kernel_files[0].sha256)] if kernel_files else None,
        licenses=[DisjunctiveLicense(id="GPL-2.0-only", acknowledgement=LicenseAcknowledgement.DECLARED)],
        properties=_properties({
            "kernel-name": kernel.get("name"), "config-version": kernel.get("config_version"),
            "config-sha256": (kernel.get("config") or {}).get("sha256"), "source-kind": source.get("kind"),
            "source-version": source.get("version"), "source-package": source.get("package"),
            "source-sha256": source.get("sha256") or source.get("tree_digest"),
            "files": " ".join(f.file for f in kernel_files), "sha256-is-of": kernel_files[0].file if kernel_files else "",
        }))]
    components += [Component(type=ComponentType.FILE, name=f.file, bom_ref=f"file:{f.file}", hashes=[_sha256(f.sha256)])
                   for f in kernel_files[1:]]
    agents: dict[str, Component] = {}
    for asset in assets:
        components.append(Component(
            type=ComponentType.FILE, name=asset.file, bom_ref=f"asset:{asset.file}", hashes=[_sha256(asset.sha256)],
            properties=_properties({"asset-kind": asset.kind, "sbom-file": asset.sbom_file}),
            external_references=[ExternalReference(type=ExternalReferenceType.BOM, url=XsUri(asset.sbom_link),
                                                   comment=f"the SBOM of this asset: {asset.sbom_file}",
                                                   hashes=[_sha256(asset.sbom_sha256)])]))
        if asset.agent.get("sha256"):
            agents.setdefault(str(asset.agent["sha256"]), agent_component(asset.agent))
    components += list(agents.values())
    components += [Component(type=ComponentType.APPLICATION, name=f.file.rsplit("/", 1)[-1], version=runtime_version,
                             bom_ref=f"runtime:{f.file}", hashes=[_sha256(f.sha256)],
                             properties=_properties({"file": f.file})) for f in runtime]
    for component in components:
        bom.components.add(component)
    bom.register_dependency(subject, components)
    return bom


def render(bom: Bom) -> str:
    return JsonV1Dot6(bom).output_as_string(indent=1) + "\n"


def validate(text: str) -> list[str]:
    """The schema errors of a CycloneDX 1.6 JSON document (the library's strict validator)."""
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    if errors is None:
        return []
    return [str(error) for error in (errors if isinstance(errors, Iterable) else [errors])]


def serial_link(text: str) -> str:
    """The BOM-Link (urn:cdx:serial/version) of a rendered SBOM."""
    import json

    data = json.loads(text)
    return f"{data['serialNumber'].replace('urn:uuid:', 'urn:cdx:')}/{data.get('version', 1)}"


def write_asset_sbom(asset: Path, facts: AssetFacts, kind: str, epoch: int) -> Path:
    """Write `<asset>.cdx.json` next to a freshly built asset (atomically), naming it by its file name."""
    text = render(asset_bom(facts, file_name=asset.name, sha256=sha256_file(asset), kind=kind, epoch=epoch))
    destination = sbom_path(asset)
    write_atomically(destination, text.encode())
    return destination


def name_delivered_asset(sbom_file: Path, name: str) -> None:
    """Name the described asset `name` in a delivered copy of its SBOM. A cache entry's SBOM names
    the asset by the entry's file name, so that the entry is the same bytes whatever the output of
    the build that made it was called; its copy next to the output names the output."""
    import json

    data = json.loads(sbom_file.read_text())
    subject = data["metadata"]["component"]
    if subject.get("name") == name:
        return
    old_ref, new_ref = subject.get("bom-ref"), f"asset:{name}"
    subject["name"], subject["bom-ref"] = name, new_ref
    for dependency in data.get("dependencies", []):
        if dependency.get("ref") == old_ref:
            dependency["ref"] = new_ref
        if "dependsOn" in dependency:
            dependency["dependsOn"] = [new_ref if ref == old_ref else ref for ref in dependency["dependsOn"]]
    write_atomically(sbom_file, (json.dumps(data, indent=1) + "\n").encode())


def for_built_asset(rootfs_dir: Path, asset: Path, kind: str, epoch: int) -> Path | None:
    """The build commands' hook: the SBOM next to the asset, from the rootfs it was built from;
    None (with a warning) for a tree that osbuilder did not build, which carries no metadata."""
    import logging

    from osbuilder.evidence.assetfacts import from_tree
    from osbuilder.metadata import MANIFEST_JSON

    if not (rootfs_dir / MANIFEST_JSON).is_file():
        logging.getLogger(__name__).warning("%s has no /%s: no SBOM written for %s", rootfs_dir, MANIFEST_JSON,
                                            asset)
        return None
    return write_asset_sbom(asset, from_tree(rootfs_dir), kind, epoch)
