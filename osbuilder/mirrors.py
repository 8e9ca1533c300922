"""Choosing a package archive mirror without writing any host name into the repository.

Order: an explicit --mirror, then OSBUILDER_<ARCHIVE>_MIRROR (DEBIAN, DEBIAN_SECURITY, UBUNTU), then
the host's own apt sources. For bootstrapping, None means "let mmdebstrap use its default mirror".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")

DEBIAN_CODENAMES = ("buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "unstable", "testing",
                    "stable", "oldstable")
UBUNTU_CODENAMES = ("focal", "jammy", "noble", "oracular", "plucky", "questing", "resolute")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    signed_by: str


def read_apt_sources(sources: Path = APT_SOURCES, sources_dir: Path = APT_SOURCES_DIR) -> list[AptSource]:
    found: list[AptSource] = []
    if sources.is_file():
        found.extend(_parse_one_line(sources.read_text(errors="replace")))
    if sources_dir.is_dir():
        for path in sorted(sources_dir.iterdir()):
            text = path.read_text(errors="replace") if path.is_file() else ""
            if path.suffix == ".sources":
                found.extend(_parse_deb822(text))
            elif path.suffix == ".list":
                found.extend(_parse_one_line(text))
    return found


def _parse_one_line(text: str) -> list[AptSource]:
    result = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
        if match:
            options = match.group(1) or ""
            signed = re.search(r"signed-by=(\S+)", options)
            result.append(AptSource(match.group(2), (match.group(3),), signed.group(1) if signed else ""))
    return result


def _parse_deb822(text: str) -> list[AptSource]:
    result = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or "uris" not in fields:
            continue
        for uri in fields["uris"].split():
            result.append(AptSource(uri, tuple(fields.get("suites", "").split()), fields.get("signed-by", "")))
    return result


def _env_name(archive: str, security: bool) -> str:
    return f"OSBUILDER_{archive.upper()}{'_SECURITY' if security else ''}_MIRROR"


def archive_mirror(archive: str, suite: str, explicit: str | None = None,
                   sources: list[AptSource] | None = None, environment: Mapping[str, str] | None = None) -> str | None:
    """Base URL of a mirror of `archive` ("debian" or "ubuntu") carrying `suite`, or None."""
    if explicit:
        return explicit.rstrip("/")
    security = suite.endswith("-security")
    from_env = (os.environ if environment is None else environment).get(_env_name(archive, security))
    if from_env:
        return from_env.rstrip("/")
    codenames = DEBIAN_CODENAMES if archive == "debian" else UBUNTU_CODENAMES
    for source in sources if sources is not None else read_apt_sources():
        for host_suite in source.suites:
            base = host_suite.split("-", 1)[0]
            if base in codenames and host_suite.endswith("-security") == security:
                return source.uri.rstrip("/")
    return None
