"""What a rootfs says about itself: Kata's /var/lib/osbuilder/osbuilder.yaml and our manifest.json."""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from osbuilder import __version__
from osbuilder.paths import REPO_ROOT

METADATA_DIR = "var/lib/osbuilder"
OSBUILDER_YAML = f"{METADATA_DIR}/osbuilder.yaml"
MANIFEST_JSON = f"{METADATA_DIR}/manifest.json"
FILE_FORMAT_VERSION = "0.0.2"  # Kata's osbuilder.yaml format; bump only with Kata
MANIFEST_FORMAT = 1
# Kata's provenance URLs: consumers (kata-collect-data.sh, yamllint checks) read these fields, and
# the format is Kata's; our own identity is osbuilder.version.
OSBUILDER_URL = "https://github.com/kata-containers/kata-containers/tools/osbuilder"
AGENT_URL = "https://github.com/kata-containers/kata-containers"


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def step_version(code_digest: str) -> str:
    """Our package version and the digest of the code that built the output: 0.1.0+code.<12 hex>.
    Not the checkout's commit: a cache key covers the code a step runs, not the commit, and an entry
    must be the same bytes whichever commit (or uncommitted tree) built it, so that a runner's
    cache, the registry and a fresh build agree."""
    return f"{__version__}+code.{code_digest[:12]}"


def commit_epoch() -> int | None:
    """The checkout's commit time: the default SOURCE_DATE_EPOCH of make and of the bundle."""
    value = _git("log", "-1", "--format=%ct")
    return int(value) if value and value.isdigit() else None


def creation_time(source_date_epoch: int | None) -> str:
    """Kata's timestamp: `date -u -d@EPOCH '+%Y-%m-%dT%T.%N%zZ'`, odd `+0000Z` suffix included."""
    if source_date_epoch is None:
        nanoseconds = time.time_ns()
        seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    else:
        seconds, fraction = source_date_epoch, 0
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}+0000Z"


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


@dataclass(frozen=True)
class OsbuilderYaml:
    osbuilder_version: str
    creation_time: str
    architecture: str
    distro: str
    release: str
    packages: Sequence[str]
    extra_packages: Sequence[str]
    agent_name: str
    agent_version: str
    agent_is_init: bool

    def render(self) -> str:
        """Kata's layout: key order, two-space indent, every scalar double-quoted, packages sorted."""
        lines = [
            "---",
            "osbuilder:",
            f"  url: {_quoted(OSBUILDER_URL)}",
            f"  version: {_quoted(self.osbuilder_version)}",
            f"rootfs-creation-time: {_quoted(self.creation_time)}",
            f"description: {_quoted('osbuilder rootfs')}",
            f"file-format-version: {_quoted(FILE_FORMAT_VERSION)}",
            f"architecture: {_quoted(self.architecture)}",
            "base-distro:",
            f"  name: {_quoted(self.distro)}",
            f"  version: {_quoted(self.release)}",
            "  packages:",
            "    default:",
            *(f"      - {_quoted(package)}" for package in sorted(set(self.packages))),
            "    extra:",
            *(f"      - {_quoted(package)}" for package in sorted(set(self.extra_packages))),
            "agent:",
            f"  url: {_quoted(AGENT_URL)}",
            f"  name: {_quoted(self.agent_name)}",
            f"  version: {_quoted(self.agent_version)}",
            f"  agent-is-init-daemon: {_quoted('yes' if self.agent_is_init else 'no')}",
        ]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str


def parse_dpkg_query(output: str) -> list[Package]:
    """Lines of `dpkg-query -W -f '${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Architecture}\\n'`."""
    packages = []
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != 4 or not fields[0].startswith("ii"):
            continue
        packages.append(Package(fields[1], fields[2], fields[3]))
    return sorted(packages, key=lambda package: package.name)


def manifest(*, osbuilder_version: str, recipe: dict[str, Any], arch: str, init: str | None,
             options: dict[str, Any], agent: dict[str, Any] | None, packages: Iterable[Package], cache_key: str,
             container: bool = False) -> str:
    """manifest.json. A container root (no init, no agent) says so; a guest rootfs's has no such key."""
    data: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "osbuilder_version": osbuilder_version,
        "recipe": recipe,
        "architecture": arch,
        "init": init,
        "options": options,
        "agent": agent,
        "cache_key": cache_key,
        "packages": [{"name": p.name, "version": p.version, "architecture": p.architecture} for p in packages],
    }
    if container:
        data["container"] = True
    return json.dumps(data, indent=2, sort_keys=False) + "\n"
