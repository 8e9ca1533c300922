"""Facts about the installed packages that the finished rootfs no longer holds, recorded while
the tree is provisioned: the license each package declares in its machine-readable copyright file
(the recipe trims /usr/share/doc; dpkg keeps the copyright files, see mmdebstrap.trim_lines, until
provisioning trims them) and the archive suite, index and sha256 each package came from (apt's
package lists, which mmdebstrap keeps for this (Job.keep_apt_lists) and provisioning removes with
the rest of /var/lib/apt).

The chain of trust of an origin: apt verified the suite's InRelease signature when it fetched
it; the Packages index must have the sha256 that InRelease lists for it (checked here); the
package's SHA256 is the one that index lists for its exact name, version and architecture.

Written to /var/lib/osbuilder/packages.json; mirror host names are never recorded (apt's list file
names carry them, the facts do not).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import lzma
import re
from dataclasses import dataclass, field
from typing import Any

from osbuilder.debarchive import parse_stanzas, release_sha256
from osbuilder.metadata import METADATA_DIR
from osbuilder.rootfs.tree import DIR, RootfsTree

log = logging.getLogger(__name__)

PACKAGES_JSON = f"{METADATA_DIR}/packages.json"
FORMAT = 1
DPKG_STATUS = "var/lib/dpkg/status"
APT_LISTS = "var/lib/apt/lists"
DOC_DIR = "usr/share/doc"
DEP5_FORMAT = re.compile(r"copyright-format/1\.0|dep5", re.IGNORECASE)
_SIGNED_BODY = re.compile(r"-----BEGIN PGP SIGNED MESSAGE-----\n(?:[^\n]+\n)*\n(?P<body>.*?)\n-----BEGIN PGP SIGNATURE",
                          re.DOTALL)
_DECOMPRESS = {"": lambda data: data, ".gz": gzip.decompress, ".xz": lzma.decompress}


@dataclass
class Index:
    suite: str
    codename: str
    origin: str  # the archive's own name for itself (InRelease Origin), e.g. "Ubuntu"
    inrelease_sha256: str
    archive_suite: str = ""  # the InRelease Suite field (stable, oldstable, noble-updates, ...)
    packages: dict[str, str] = field(default_factory=dict)  # index path -> sha256 (checked against InRelease)
    stanzas: dict[tuple[str, str, str], tuple[str, str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "archive_suite": self.archive_suite, "codename": self.codename,
                "origin": self.origin,
                "inrelease_sha256": self.inrelease_sha256, "packages_indexes": dict(sorted(self.packages.items()))}


def signed_body(text: str) -> str:
    """The signed content of a clearsigned InRelease (apt verified the signature already)."""
    match = _SIGNED_BODY.search(text)
    return match["body"] if match else text


def _indexes(tree: RootfsTree) -> list[Index]:
    lists = tree.get(APT_LISTS, follow=True)
    if lists is None or lists.type != DIR:
        return []
    prefix = tree.resolve(APT_LISTS) + "/"
    names = sorted(path[len(prefix):] for path in tree.entries if path.startswith(prefix) and "/" not in
                   path[len(prefix):])
    found = []
    for name in (name for name in names if name.endswith("_InRelease")):
        raw = tree.read(prefix + name)
        body = signed_body(raw.decode(errors="replace"))
        stanza = next(parse_stanzas(body), {})
        listed = release_sha256(body)
        # The distribution as apt asked for it (dists/<suite>/, e.g. bookworm-security), which stays
        # put, unlike the archive's moving Suite name (oldstable-security); both are kept.
        requested = name.rsplit("_dists_", 1)[-1].removesuffix("_InRelease").replace("_", "/")
        index = Index(requested, stanza.get("Codename", ""), stanza.get("Origin", ""),
                      hashlib.sha256(raw).hexdigest(), stanza.get("Suite", ""))
        stem = name.removesuffix("InRelease")
        for candidate in names:
            match = re.fullmatch(re.escape(stem) + r"(?P<path>.+_Packages)(?P<ext>\.gz|\.xz)?", candidate)
            if match is None:
                continue
            path = match["path"].replace("_", "/")
            text = _DECOMPRESS[match["ext"] or ""](tree.read(prefix + candidate))
            digest = hashlib.sha256(text).hexdigest()
            if listed.get(path, ("", 0))[0] != digest:
                log.warning("package list %s does not match its InRelease; its packages get no origin", path)
                continue
            index.packages[path] = digest
            for entry in parse_stanzas(text.decode(errors="replace")):
                key = (entry.get("Package", ""), entry.get("Version", ""), entry.get("Architecture", ""))
                index.stanzas[key] = (path, entry.get("SHA256", ""), entry.get("Filename", ""))
        found.append(index)
    return found


def license_names(text: str) -> list[str] | None:
    """The license short names of a machine-readable (DEP-5) copyright file; None if it is not one."""
    stanzas = list(parse_stanzas(text))
    if not stanzas or not DEP5_FORMAT.search(stanzas[0].get("Format", "")):
        return None
    names: list[str] = []
    for stanza in stanzas:
        if "Files" not in stanza and stanza is not stanzas[0]:
            continue  # a stand-alone License paragraph: the text of a name used elsewhere
        value = stanza.get("License", "").split("\n", 1)[0].strip()
        if value:
            names.append(value)
    return sorted(dict.fromkeys(names))


def _source(stanza: dict[str, str]) -> tuple[str, str]:
    """(source package, source version): dpkg's Source field may carry the version in brackets."""
    field_value = stanza.get("Source", "")
    if not field_value:
        return stanza.get("Package", ""), stanza.get("Version", "")
    name, _, rest = field_value.partition(" ")
    return name, rest.strip().strip("()") or stanza.get("Version", "")


def collect(tree: RootfsTree, archive: str) -> dict[str, Any] | None:
    """The facts, from the tree as bootstrapped (before provisioning trims it); None without dpkg."""
    if not tree.exists(DPKG_STATUS, follow=True):
        return None
    indexes = _indexes(tree)
    packages = []
    for stanza in parse_stanzas(tree.read(DPKG_STATUS).decode(errors="replace")):
        if not stanza.get("Status", "").endswith(" installed"):
            continue
        name, version, arch = stanza.get("Package", ""), stanza.get("Version", ""), stanza.get("Architecture", "")
        source, source_version = _source(stanza)
        copyright_path = f"{DOC_DIR}/{name}/copyright"
        entry: dict[str, Any] = {"name": name, "version": version, "architecture": arch, "source": source,
                                 "source_version": source_version}
        if tree.exists(copyright_path, follow=True):
            names = license_names(tree.read(copyright_path).decode(errors="replace"))
            entry["licenses"] = names or []
            entry["license_from"] = "machine-readable copyright file" if names is not None else \
                "copyright file is not machine-readable"
        else:
            entry["licenses"] = []
            entry["license_from"] = "no copyright file"
        for index in indexes:
            found = index.stanzas.get((name, version, arch))
            if found is not None:
                path, sha256, filename = found
                entry["origin"] = {"archive": archive, "suite": index.suite, "index": path, "sha256": sha256,
                                   "filename": filename}
                break
        packages.append(entry)
    packages.sort(key=lambda item: (item["name"], item["architecture"]))
    return {"format": FORMAT, "archive": archive, "indexes": [index.to_json() for index in indexes],
            "packages": packages}


def render(facts: dict[str, Any]) -> bytes:
    return (json.dumps(facts, indent=1, sort_keys=True) + "\n").encode()
