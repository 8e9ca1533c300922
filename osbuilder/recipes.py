"""Distro recipes: `distros/<name>/recipe.yaml`, validated and parsed into frozen dataclasses.

A recipe says how to bootstrap a distribution (tool, archive, variant, components, keyring), which
releases and architectures it supports, and which packages each init mode needs: `systemd` (the
agent runs as kata-agent.service) or `agent` (the agent is /sbin/init).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from osbuilder.arch import ARCHES
from osbuilder.errors import ConfigError, UsageError, combine
from osbuilder.modes import InitMode
from osbuilder.yamlconfig import (
    Bool,
    Context,
    Document,
    ListOf,
    Name,
    Str,
    Text,
    Version,
    entry_name,
    load_as,
    setting,
)

RECIPE_FILE = "recipe.yaml"
NO_DISTRIBUTION = "none"
BOOTSTRAP_TOOLS = ("mmdebstrap", NO_DISTRIBUTION)  # osbuilder.rootfs.bootstrappers has one module per tool
INIT_KEYS = "|".join(mode.value for mode in InitMode)


def _check_recipe(value: dict[str, Any], node: yaml.MappingNode, path: tuple[Any, ...], ctx: Context) -> None:
    releases = value.get("releases") or {}
    default = value.get("default-release")
    if default is not None and default not in releases:
        ctx.fail(node, ("default-release",), f"default release '{default}' is not among the releases",
                 fix=f"use one of {', '.join(releases)}")
    bootstrap = value.get("bootstrap") or {}
    if bootstrap.get("tool") == "mmdebstrap" and not bootstrap.get("archive"):
        ctx.fail(node, ("bootstrap", "archive"), "mmdebstrap recipes need an archive", fix='add archive: "debian"')
    init = value.get("init") or {}
    if init and value.get("default-init") not in init:
        ctx.fail(node, ("default-init",), f"default init '{value.get('default-init')}' has no init entry",
                 fix=f"use one of {', '.join(init)}")


@dataclass(frozen=True, kw_only=True)
class Release:
    YAML_NAME: ClassVar[str] = "release"

    codename: str = entry_name()
    description: str | None = setting(Text(), default=None)
    version: str = setting(Version())
    architectures: tuple[str, ...] = setting(ListOf(Str(choices=tuple(ARCHES)), min_items=1, unique=True))
    archive_suite: str | None = setting(Name(), key="suite", default=None)

    @property
    def suite(self) -> str:
        """The archive suite to bootstrap; usually the codename."""
        return self.archive_suite or self.codename


@dataclass(frozen=True, kw_only=True)
class InitPackages:
    """What one init mode needs: its packages, and (minimal recipe) whether busybox comes along."""

    YAML_NAME: ClassVar[str] = "init mode"

    name: InitMode = entry_name()
    description: str | None = setting(Text(), default=None)
    packages: tuple[str, ...] = setting(ListOf(Name(), unique=True))
    busybox: bool = setting(Bool(), default=False)
    # systemd units masked in the image (linked to /dev/null): what neither the agent nor its target
    # needs, so that nothing competes with the agent for the guest's CPU at boot.
    masked_units: tuple[str, ...] = setting(
        ListOf(Str(pattern=r"[A-Za-z0-9:_.@-]+\.(service|socket|timer|mount|automount|path|target)",
                   hint='a systemd unit name such as "modprobe@.service"'), unique=True), default=())
    # systemd generators disabled in the image (a link to /dev/null in /etc/systemd/system-generators).
    masked_generators: tuple[str, ...] = setting(
        ListOf(Str(pattern=r"[A-Za-z0-9_.-]+-generator", hint="a generator's file name"), unique=True), default=())


@dataclass(frozen=True, kw_only=True)
class Keyring:
    YAML_NAME: ClassVar[str] = "keyring section"

    host_path: str | None = setting(Str(pattern=r"/\S+", hint="an absolute path"), default=None)
    external: str | None = setting(Name(), default=None)
    member: str | None = setting(Str(pattern=r"[^/]\S*", hint="a path inside the package"), default=None)


@dataclass(frozen=True, kw_only=True)
class Bootstrap:
    YAML_NAME: ClassVar[str] = "bootstrap section"

    tool: str = setting(Str(choices=BOOTSTRAP_TOOLS))
    archive: str | None = setting(Str(choices=("debian", "ubuntu")), default=None)
    variant: str = setting(Str(choices=("extract", "custom", "essential", "apt", "required", "minbase", "buildd",
                                        "important", "standard")), default="required")
    components: tuple[str, ...] = setting(ListOf(Name(), min_items=1), default=("main",))
    options: tuple[str, ...] = setting(ListOf(Str()), default=())


@dataclass(frozen=True, kw_only=True)
class Recipe:
    YAML_NAME: ClassVar[str] = "recipe"
    yaml_check = staticmethod(_check_recipe)

    name: str = ""  # the recipe's directory name
    path: Path = dataclasses.field(default=Path(RECIPE_FILE), compare=False)
    document: Document | None = dataclasses.field(default=None, compare=False, repr=False)
    description: str = setting(Text())
    bootstrap: Bootstrap = setting()
    keyring: Keyring | None = setting(default=None)
    default_release: str = setting(Name())
    releases: tuple[Release, ...] = setting(key_pattern=r"[a-z0-9][a-z0-9.-]*", key_hint="a release codename",
                                            min_items=1)
    default_init: InitMode = setting()
    init_modes: tuple[InitPackages, ...] = setting(key="init", key_pattern=INIT_KEYS,
                                                   key_hint="an init mode (systemd, agent)", min_items=1)
    trim: tuple[str, ...] = setting(ListOf(Str(pattern=r"[^/]\S*", hint="a path relative to the rootfs")),
                                    default=())

    @property
    def has_distribution(self) -> bool:
        """Whether anything is bootstrapped (the minimal recipe starts from nothing)."""
        return self.bootstrap.tool != NO_DISTRIBUTION

    def where(self, *path: str) -> str:
        """file:line of a field, for errors."""
        return str(self.document.where(*path)) if self.document is not None else str(self.path)

    def release(self, codename: str | None) -> Release:
        wanted = codename or self.default_release
        for release in self.releases:
            if release.codename == wanted:
                return release
        names = [release.codename for release in self.releases]
        close = difflib.get_close_matches(wanted, names, n=1)
        raise UsageError(
            problem=f"{self.name} has no release '{wanted}'",
            where="--os-version",
            fix=(f"did you mean '{close[0]}'? " if close else "") + f"releases of {self.name}: {', '.join(names)}",
        )

    def init(self, mode: InitMode | str | None) -> InitPackages:
        wanted = mode or self.default_init
        for init in self.init_modes:
            if init.name == wanted:
                return init
        raise UsageError(
            problem=f"{self.name} does not support init mode '{wanted}'",
            where="--agent-init" if wanted == InitMode.AGENT else "init mode",
            fix=f"{self.name} supports: {', '.join(init.name for init in self.init_modes)}",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description.strip(),
            "bootstrap": self.bootstrap.tool,
            "archive": self.bootstrap.archive,
            "default_release": self.default_release,
            "releases": [
                {"codename": release.codename, "version": release.version,
                 "architectures": list(release.architectures)}
                for release in self.releases
            ],
            "architectures": sorted({arch for release in self.releases for arch in release.architectures}),
            "init_modes": [init.name for init in self.init_modes],
            "default_init": self.default_init,
        }


def load_recipe(path: Path) -> Recipe:
    recipe, document = load_as(path, Recipe, name=path.parent.name, path=path)
    return dataclasses.replace(recipe, document=document)


def recipe_names(distros_dir: Path) -> list[str]:
    if not distros_dir.is_dir():
        return []
    return sorted(child.name for child in distros_dir.iterdir() if (child / RECIPE_FILE).is_file())


def load_all(distros_dir: Path) -> list[Recipe]:
    """Every recipe in the directory; all their problems are reported together."""
    if not distros_dir.is_dir():
        raise UsageError(problem="not a directory", where=f"--distros-dir {distros_dir}",
                         fix="point --distros-dir at a directory of <name>/recipe.yaml files")
    recipes, errors = [], []
    for name in recipe_names(distros_dir):
        try:
            recipes.append(load_recipe(distros_dir / name / RECIPE_FILE))
        except ConfigError as error:
            errors.append(error)
    if errors:
        raise combine(errors)
    return recipes


def find_recipe(distros_dir: Path, name: str) -> Recipe:
    names = recipe_names(distros_dir)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        raise UsageError(
            problem=f"unknown distro '{name}'",
            where="--distro",
            fix=(f"did you mean '{close[0]}'? " if close else "") + f"available: {', '.join(names) or 'none'}"
                + f" (recipes are read from {distros_dir})",
        )
    return load_recipe(distros_dir / name / RECIPE_FILE)
