"""versions.yaml, read once into frozen dataclasses. The dataclasses are the schema: the loader
derives the closed schema from them (osbuilder.yamlconfig), so every problem is still reported with
its file:line before any work starts, and nothing reads the file as nested dictionaries afterwards."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from osbuilder.arch import ARCHES
from osbuilder.errors import ConfigError, UsageError
from osbuilder.modes import InitMode
from osbuilder.versions_budgets import Budgets
from osbuilder.yamlconfig import (
    Context,
    Document,
    Name,
    Sha256,
    Str,
    Text,
    Url,
    Version,
    entry_name,
    entry_name_field,
    load_as,
    location,
    setting,
    yaml_keys,
)

ARCH_KEY = "uname -m architecture name (" + ", ".join(ARCHES) + ")"
ARCH_PATTERN = "|".join(ARCHES)
ARCHIVES = ("debian", "ubuntu")
KERNEL_SOURCE_KINDS = ("debian", "tarball")  # assets.kernel.sources; build-kernel --source-kind
POOL_PATH = Str(pattern=r"pool/(?:[A-Za-z0-9{][A-Za-z0-9.+~:_{}-]*/)+[A-Za-z0-9{][A-Za-z0-9.+~:_{}-]*\.deb",
                hint='a quoted pool path such as "pool/main/u/ubuntu-keyring/ubuntu-keyring_1_all.deb" '
                     "({arch} stands for the Debian architecture)")


def _archive_package_check(value: dict[str, Any], node: yaml.MappingNode, path: tuple[Any, ...],
                           ctx: Context) -> None:
    if value.get("sha256") is None and value.get("architecture") is None:
        ctx.fail(node, path, "needs a sha256 (architecture-independent package) or an architecture map",
                 fix="add sha256: \"<64 hex digits>\" or architecture: {x86_64: {sha256: ...}}")


@dataclass(frozen=True, kw_only=True)
class ArchSha256:
    YAML_NAME: ClassVar[str] = "architecture entry"

    arch: str = entry_name()
    sha256: str = setting(Sha256())
    version: str | None = setting(Version(), default=None)


@dataclass(frozen=True, kw_only=True)
class ArchivePackage:
    """A .deb pinned by version and sha256, fetched through the archive's signed metadata."""

    YAML_NAME: ClassVar[str] = "archive package entry"
    yaml_check = staticmethod(_archive_package_check)

    key: str = location()  # dotted path in versions.yaml, for error messages
    description: str = setting(Text(), required=True, default="")
    notes: str | None = setting(Text(), default=None)
    archive: str = setting(Str(choices=ARCHIVES))
    package: str = setting(Name())
    version: str = setting(Version())
    suite: str = setting(Name())
    component: str = setting(Name(), default="main")
    # Where the archive keeps the file. With it the .deb is fetched directly (the sha256 pin is what
    # verifies it) and the signed index, a 10 MB download and parse, is only the fallback.
    pool: str | None = setting(POOL_PATH, default=None)
    sha256_all: str | None = setting(Sha256(), key="sha256", default=None)
    sha256_by_arch: tuple[ArchSha256, ...] = setting(key="architecture", default=(), key_pattern=ARCH_PATTERN,
                                                     key_hint=ARCH_KEY)

    def pool_path(self, debian_arch: str) -> str | None:
        return self.pool.replace("{arch}", debian_arch) if self.pool else None

    def sha256_for(self, arch: str) -> str:
        if self.sha256_all:
            return self.sha256_all
        for entry in self.sha256_by_arch:
            if entry.arch == arch:
                return entry.sha256
        raise UsageError(
            problem=f"{self.package} has no pin for architecture {arch}",
            where=f"versions.yaml ({self.key}.architecture)",
            fix=f"add architecture: {{{arch}: {{sha256: ...}}}} to {self.key}",
        )

    @property
    def architecture_independent(self) -> bool:
        return self.sha256_all is not None


@dataclass(frozen=True, kw_only=True)
class External(ArchivePackage):
    """An archive package under `externals`, named by its key."""

    YAML_NAME: ClassVar[str] = "external entry"

    name: str = entry_name()


@dataclass(frozen=True, kw_only=True)
class Download:
    YAML_NAME: ClassVar[str] = "download entry"

    key: str = location()
    description: str = setting(Text(), required=True, default="")
    notes: str | None = setting(Text(), default=None)
    url: str = setting(Url())
    version: str | None = setting(Version(), default=None)
    sha256: str = setting(Sha256())


@dataclass(frozen=True, kw_only=True)
class DistroPin:
    """The default distribution, release and init mode of an asset on one architecture."""

    YAML_NAME: ClassVar[str] = "distribution pin"

    arch: str = entry_name()
    distro: str = setting(Name(), key="name")
    release: str = setting(Version(), key="version")
    init: InitMode = setting()


@dataclass(frozen=True, kw_only=True)
class DistroAsset:
    YAML_NAME: ClassVar[str] = "asset entry"

    description: str = setting(Text())
    notes: str | None = setting(Text(), default=None)
    architecture: tuple[DistroPin, ...] = setting(key_pattern=ARCH_PATTERN, key_hint=ARCH_KEY, min_items=1)


@dataclass(frozen=True, kw_only=True)
class KernelSources:
    YAML_NAME: ClassVar[str] = "kernel sources"

    debian: ArchivePackage = setting()
    tarball: Download = setting()


@dataclass(frozen=True, kw_only=True)
class Kernel:
    YAML_NAME: ClassVar[str] = "kernel entry"

    description: str = setting(Text())
    notes: str | None = setting(Text(), default=None)
    version: str = setting(Version())
    default_source: str = setting(Str(choices=KERNEL_SOURCE_KINDS))
    sources: KernelSources = setting()


@dataclass(frozen=True, kw_only=True)
class Agent:
    YAML_NAME: ClassVar[str] = "agent entry"

    description: str = setting(Text())
    notes: str | None = setting(Text(), default=None)
    version: str = setting(Version())


@dataclass(frozen=True, kw_only=True)
class RuntimeDownload:
    YAML_NAME: ClassVar[str] = "runtime download"

    arch: str = entry_name()
    url: str = setting(Url())
    sha256: str = setting(Sha256())


@dataclass(frozen=True, kw_only=True)
class Runtime:
    YAML_NAME: ClassVar[str] = "runtime entry"

    description: str = setting(Text())
    notes: str | None = setting(Text(), default=None)
    version: str = setting(Version())
    architecture: tuple[RuntimeDownload, ...] = setting(key_pattern=ARCH_PATTERN, key_hint=ARCH_KEY)


@dataclass(frozen=True, kw_only=True)
class Assets:
    YAML_NAME: ClassVar[str] = "assets group"

    kernel: Kernel = setting()
    image: DistroAsset = setting()
    initrd: DistroAsset = setting()
    agent: Agent = setting()
    runtime: Runtime = setting()


@dataclass(frozen=True, kw_only=True)
class Tool:
    YAML_NAME: ClassVar[str] = "tool entry"

    name: str = entry_name()
    description: str = setting(Text())
    notes: str | None = setting(Text(), default=None)
    version: str = setting(Version())
    minimum: str | None = setting(Version(), default=None)


@dataclass(frozen=True, kw_only=True)
class Versions:
    """The whole file. `document` keeps every value's file:line and the plain data (for display)."""

    YAML_NAME: ClassVar[str] = "versions file"

    path: Path = dataclasses.field(default=Path("versions.yaml"), compare=False)
    document: Document | None = dataclasses.field(default=None, compare=False, repr=False)
    description: str = setting(Text())
    format: str | None = setting(Text(), default=None)
    assets: Assets = setting()
    externals: tuple[External, ...] = setting()
    tools: tuple[Tool, ...] = setting()
    budgets: Budgets | None = setting(default=None)  # size and boot-time limits: osbuilder.evidence.budgets

    # Look-ups that name the file and the key when something is missing --------------------------

    @property
    def kernel_version(self) -> str:
        return self.assets.kernel.version

    @property
    def kernel_default_source(self) -> str:
        return self.assets.kernel.default_source

    def kernel_debian_source(self) -> ArchivePackage:
        return self.assets.kernel.sources.debian

    def kernel_tarball_source(self) -> Download:
        return self.assets.kernel.sources.tarball

    def distro_pin(self, asset: str, arch: str) -> DistroPin:
        pins: DistroAsset = getattr(self.assets, asset)
        for pin in pins.architecture:
            if pin.arch == arch:
                return pin
        raise UsageError(
            problem=f"no default {asset} distribution for {arch}",
            where=f"{self.path} (assets.{asset}.architecture)",
            fix=f"add an entry for {arch} or pass --distro and --os-version",
        )

    @property
    def agent_version(self) -> str:
        return self.assets.agent.version

    @property
    def runtime_version(self) -> str:
        return self.assets.runtime.version

    def runtime_download(self, arch: str) -> Download:
        for entry in self.assets.runtime.architecture:
            if entry.arch == arch:
                return Download(key=f"assets.runtime.architecture.{arch}", url=entry.url, sha256=entry.sha256,
                                version=self.runtime_version)
        raise UsageError(
            problem=f"no runtime pinned for {arch}",
            where=f"{self.path} (assets.runtime.architecture)",
            fix="add url and sha256 for this architecture, or pass a local runtime path",
        )

    def external(self, name: str) -> External:
        entry = self.entry(f"externals.{name}")
        assert isinstance(entry, External)
        return entry

    def tool(self, name: str) -> Tool:
        entry = self.entry(f"tools.{name}")
        assert isinstance(entry, Tool)
        return entry

    def entry(self, dotted: str) -> Any:
        """The typed entry at a dotted path of YAML keys, e.g. assets.kernel.sources.debian; a
        UsageError names the closest key when there is none."""
        node: Any = self
        walked: list[str] = []
        for part in dotted.split(".") if dotted else []:
            children = _children(node)
            if part not in children:
                close = difflib.get_close_matches(part, list(children), n=1)
                prefix = ".".join(walked) or "the top level"
                fix = f"did you mean '{'.'.join([*walked, close[0]])}'?" if close else (
                    f"keys under {prefix}: {', '.join(children)}" if children else "")
                raise UsageError(problem=f"no key '{dotted}' in {self.path}", where="KEY", fix=fix)
            node = children[part]
            walked.append(part)
        return node

    def lookup(self, dotted: str) -> Any:
        """The plain value at a dotted path (what the file says there), for display."""
        self.entry(dotted)  # the error for a missing key
        value: Any = self.document.value if self.document is not None else {}
        for part in dotted.split(".") if dotted else []:
            value = value[part]
        return value

    def archive_package(self, dotted: str) -> ArchivePackage:
        entry = self.entry(dotted)
        if not isinstance(entry, ArchivePackage):
            raise UsageError(problem=f"'{dotted}' is not an archive package entry", where="KEY")
        return entry

    def download(self, dotted: str) -> Download:
        entry = self.entry(dotted)
        if not isinstance(entry, Download):
            raise UsageError(
                problem=f"'{dotted}' is not a download entry (url and sha256)",
                where="KEY",
                fix="name an entry with url: and sha256:, e.g. assets.kernel.sources.tarball",
            )
        return entry


def _children(node: Any) -> dict[str, Any]:
    """The entries under a node by their YAML keys."""
    if isinstance(node, tuple):
        return {getattr(item, _name_field(item)): item for item in node}
    if not dataclasses.is_dataclass(node):
        return {}
    return {key: getattr(node, name) for key, name in yaml_keys(type(node)).items()
            if getattr(node, name) is not None}


def _name_field(item: Any) -> str:
    return entry_name_field(type(item))


def load_versions(path: Path) -> Versions:
    versions, _document = load_as(path, Versions, path=path)
    versions = dataclasses.replace(versions, document=_document)
    _cross_check(versions)
    return versions


def _cross_check(versions: Versions) -> None:
    assert versions.document is not None
    kernel = versions.assets.kernel
    tarball_version = kernel.sources.tarball.version
    if tarball_version and tarball_version != kernel.version:
        raise ConfigError(
            problem=f"the kernel tarball is version {tarball_version} but the kernel is {kernel.version}",
            where=f"{versions.document.where('assets', 'kernel', 'sources', 'tarball', 'version')} "
                  "(assets.kernel.sources.tarball.version)",
            fix="pin the same version in both places",
        )
    debian_upstream = kernel.sources.debian.version.split(":")[-1].rsplit("-", 1)[0]
    if debian_upstream != kernel.version:
        raise ConfigError(
            problem=f"the Debian kernel source is {debian_upstream} but the kernel is {kernel.version}",
            where=f"{versions.document.where('assets', 'kernel', 'sources', 'debian', 'version')} "
                  "(assets.kernel.sources.debian.version)",
            fix="pin a linux-source package of the same upstream version",
        )
