"""versions.yaml: the schema, and its parsed form as frozen dataclasses."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from osbuilder.arch import ARCHES
from osbuilder.errors import ConfigError, UsageError
from osbuilder.evidence.budgets_schema import SCHEMA as BUDGETS
from osbuilder.yamlconfig import (
    Context,
    Document,
    Field,
    MapOf,
    Name,
    Obj,
    Sha256,
    Str,
    Text,
    Url,
    Version,
    load,
)

ARCH_KEY = "uname -m architecture name (" + ", ".join(ARCHES) + ")"
ARCHIVES = ("debian", "ubuntu")
INIT_MODES = ("systemd", "agent")


def _d(schema: Any, required: bool = False, default: Any = None) -> Field:
    return Field(schema, required, default)


def _archive_package_check(value: dict[str, Any], node: yaml.MappingNode, path: tuple[Any, ...],
                           ctx: Context) -> None:
    if value.get("sha256") is None and value.get("architecture") is None:
        ctx.fail(node, path, "needs a sha256 (architecture-independent package) or an architecture map",
                 fix="add sha256: \"<64 hex digits>\" or architecture: {x86_64: {sha256: ...}}")


ARCH_SHA = Obj({"sha256": _d(Sha256(), True), "version": _d(Version())}, name="architecture entry")
ARCHIVE_PACKAGE = Obj(
    {
        "description": _d(Text(), True),
        "notes": _d(Text()),
        "archive": _d(Str(choices=ARCHIVES), True),
        "package": _d(Name(), True),
        "version": _d(Version(), True),
        "suite": _d(Name(), True),
        "component": _d(Name(), default="main"),
        "pool": _d(Str(pattern=r"pool/(?:[A-Za-z0-9{][A-Za-z0-9.+~:_{}-]*/)+[A-Za-z0-9{][A-Za-z0-9.+~:_{}-]*\.deb",
                       hint='a quoted pool path such as "pool/main/u/ubuntu-keyring/ubuntu-keyring_1_all.deb" '
                            "({arch} stands for the Debian architecture)")),
        "sha256": _d(Sha256()),
        "architecture": _d(MapOf(ARCH_SHA, key_pattern="|".join(ARCHES), key_hint=ARCH_KEY)),
    },
    name="archive package entry",
    check_fn=_archive_package_check,
)
DOWNLOAD = Obj(
    {
        "description": _d(Text(), True),
        "notes": _d(Text()),
        "url": _d(Url(), True),
        "version": _d(Version()),
        "sha256": _d(Sha256(), True),
    },
    name="download entry",
)
DISTRO_PIN = Obj(
    {"name": _d(Name(), True), "version": _d(Version(), True), "init": _d(Str(choices=INIT_MODES), True)},
    name="distribution pin",
)
PER_ARCH_DISTRO = Obj(
    {
        "description": _d(Text(), True),
        "notes": _d(Text()),
        "architecture": _d(MapOf(DISTRO_PIN, key_pattern="|".join(ARCHES), key_hint=ARCH_KEY, min_items=1), True),
    },
    name="asset entry",
)
RUNTIME = Obj(
    {
        "description": _d(Text(), True),
        "notes": _d(Text()),
        "version": _d(Version(), True),
        "architecture": _d(
            MapOf(
                Obj({"url": _d(Url(), True), "sha256": _d(Sha256(), True)}, name="runtime download"),
                key_pattern="|".join(ARCHES),
                key_hint=ARCH_KEY,
            ),
            True,
        ),
    },
    name="runtime entry",
)
KERNEL_SOURCE_KINDS = ("debian", "tarball")  # assets.kernel.sources; build-kernel --source-kind
KERNEL = Obj(
    {
        "description": _d(Text(), True),
        "notes": _d(Text()),
        "version": _d(Version(), True),
        "default-source": _d(Str(choices=KERNEL_SOURCE_KINDS), True),
        "sources": _d(
            Obj({"debian": _d(ARCHIVE_PACKAGE, True), "tarball": _d(DOWNLOAD, True)}, name="kernel sources"),
            True,
        ),
    },
    name="kernel entry",
)
TOOL = Obj(
    {
        "description": _d(Text(), True),
        "notes": _d(Text()),
        "version": _d(Version(), True),
        "minimum": _d(Version()),
    },
    name="tool entry",
)
SCHEMA = Obj(
    {
        "description": _d(Text(), True),
        "format": _d(Text()),
        "assets": _d(
            Obj(
                {
                    "kernel": _d(KERNEL, True),
                    "image": _d(PER_ARCH_DISTRO, True),
                    "initrd": _d(PER_ARCH_DISTRO, True),
                    "agent": _d(
                        Obj({"description": _d(Text(), True), "notes": _d(Text()), "version": _d(Version(), True)},
                            name="agent entry"),
                        True,
                    ),
                    "runtime": _d(RUNTIME, True),
                },
                name="assets group",
            ),
            True,
        ),
        "externals": _d(
            MapOf(Obj({**ARCHIVE_PACKAGE.fields}, name="external entry", check_fn=_archive_package_check)),
            True,
        ),
        "tools": _d(MapOf(TOOL), True),
        "budgets": _d(BUDGETS),  # size and boot-time budgets: osbuilder.evidence.budgets
    },
    name="versions file",
)


# --- typed view ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchivePackage:
    """A .deb pinned by version and sha256, fetched through the archive's signed metadata."""

    key: str  # dotted path in versions.yaml, for error messages
    archive: str
    package: str
    version: str
    suite: str
    component: str
    sha256_all: str | None
    sha256_by_arch: tuple[tuple[str, str], ...]
    # Where the archive keeps the file. With it the .deb is fetched directly (the sha256 pin is what
    # verifies it) and the signed index, a 10 MB download and parse, is only the fallback.
    pool: str | None = None

    def pool_path(self, debian_arch: str) -> str | None:
        return self.pool.replace("{arch}", debian_arch) if self.pool else None

    def sha256_for(self, arch: str) -> str:
        if self.sha256_all:
            return self.sha256_all
        for name, digest in self.sha256_by_arch:
            if name == arch:
                return digest
        raise UsageError(
            problem=f"{self.package} has no pin for architecture {arch}",
            where=f"versions.yaml ({self.key}.architecture)",
            fix=f"add architecture: {{{arch}: {{sha256: ...}}}} to {self.key}",
        )

    @property
    def architecture_independent(self) -> bool:
        return self.sha256_all is not None


@dataclass(frozen=True)
class Download:
    key: str
    url: str
    sha256: str
    version: str | None


@dataclass(frozen=True)
class DistroPin:
    distro: str
    release: str
    init: str


@dataclass(frozen=True)
class Versions:
    path: Path
    document: Document

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = self.document.value
        return value

    def lookup(self, dotted: str) -> Any:
        """The plain value at a dotted path such as assets.kernel; a UsageError names close keys."""
        node: Any = self.data
        walked: list[str] = []
        for part in dotted.split(".") if dotted else []:
            if not isinstance(node, dict) or part not in node:
                choices = list(node) if isinstance(node, dict) else []
                close = difflib.get_close_matches(part, choices, n=1)
                prefix = ".".join(walked) or "the top level"
                fix = f"did you mean '{'.'.join([*walked, close[0]])}'?" if close else (
                    f"keys under {prefix}: {', '.join(choices)}" if choices else "")
                raise UsageError(problem=f"no key '{dotted}' in {self.path}", where="KEY", fix=fix)
            node = node[part]
            walked.append(part)
        return node

    # Typed accessors -----------------------------------------------------------------------

    @property
    def kernel_version(self) -> str:
        return str(self.data["assets"]["kernel"]["version"])

    @property
    def kernel_default_source(self) -> str:
        return str(self.data["assets"]["kernel"]["default-source"])

    def kernel_debian_source(self) -> ArchivePackage:
        return self.archive_package("assets.kernel.sources.debian")

    def kernel_tarball_source(self) -> Download:
        return self.download("assets.kernel.sources.tarball")

    def distro_pin(self, asset: str, arch: str) -> DistroPin:
        pins = self.data["assets"][asset]["architecture"]
        if arch not in pins:
            raise UsageError(
                problem=f"no default {asset} distribution for {arch}",
                where=f"{self.path} (assets.{asset}.architecture)",
                fix=f"add an entry for {arch} or pass --distro and --os-version",
            )
        pin = pins[arch]
        return DistroPin(pin["name"], pin["version"], pin["init"])

    @property
    def agent_version(self) -> str:
        return str(self.data["assets"]["agent"]["version"])

    @property
    def runtime_version(self) -> str:
        return str(self.data["assets"]["runtime"]["version"])

    def runtime_download(self, arch: str) -> Download:
        by_arch = self.data["assets"]["runtime"]["architecture"]
        if arch not in by_arch:
            raise UsageError(
                problem=f"no runtime pinned for {arch}",
                where=f"{self.path} (assets.runtime.architecture)",
                fix="add url and sha256 for this architecture, or pass a local runtime path",
            )
        entry = by_arch[arch]
        return Download(f"assets.runtime.architecture.{arch}", entry["url"], entry["sha256"],
                        self.runtime_version)

    def external(self, name: str) -> ArchivePackage:
        return self.archive_package(f"externals.{name}")

    def tool(self, name: str) -> dict[str, Any]:
        value: dict[str, Any] = self.lookup(f"tools.{name}")
        return value

    def archive_package(self, dotted: str) -> ArchivePackage:
        entry = self.lookup(dotted)
        if not isinstance(entry, dict) or "package" not in entry:
            raise UsageError(problem=f"'{dotted}' is not an archive package entry", where="KEY")
        by_arch = tuple(sorted((arch, pin["sha256"]) for arch, pin in (entry.get("architecture") or {}).items()))
        return ArchivePackage(
            key=dotted,
            archive=entry["archive"],
            package=entry["package"],
            version=entry["version"],
            suite=entry["suite"],
            component=entry["component"],
            sha256_all=entry.get("sha256"),
            sha256_by_arch=by_arch,
            pool=entry.get("pool"),
        )

    def download(self, dotted: str) -> Download:
        entry = self.lookup(dotted)
        if not isinstance(entry, dict) or "url" not in entry or "sha256" not in entry:
            raise UsageError(
                problem=f"'{dotted}' is not a download entry (url and sha256)",
                where="KEY",
                fix="name an entry with url: and sha256:, e.g. assets.kernel.sources.tarball",
            )
        return Download(dotted, entry["url"], entry["sha256"], entry.get("version"))


def load_versions(path: Path) -> Versions:
    document = load(path, SCHEMA)
    versions = Versions(path=path, document=document)
    _cross_check(versions)
    return versions


def _cross_check(versions: Versions) -> None:
    kernel = versions.data["assets"]["kernel"]
    tarball_version = kernel["sources"]["tarball"].get("version")
    if tarball_version and tarball_version != kernel["version"]:
        raise ConfigError(
            problem=f"the kernel tarball is version {tarball_version} but the kernel is {kernel['version']}",
            where=f"{versions.document.where('assets', 'kernel', 'sources', 'tarball', 'version')} "
                  "(assets.kernel.sources.tarball.version)",
            fix="pin the same version in both places",
        )
    debian_upstream = kernel["sources"]["debian"]["version"].split(":")[-1].rsplit("-", 1)[0]
    if debian_upstream != kernel["version"]:
        raise ConfigError(
            problem=f"the Debian kernel source is {debian_upstream} but the kernel is {kernel['version']}",
            where=f"{versions.document.where('assets', 'kernel', 'sources', 'debian', 'version')} "
                  "(assets.kernel.sources.debian.version)",
            fix="pin a linux-source package of the same upstream version",
        )
