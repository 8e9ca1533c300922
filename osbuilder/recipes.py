"""Distro recipes: `distros/<name>/recipe.yaml`, validated and parsed into frozen dataclasses.

A recipe says how to bootstrap a distribution (tool, archive, variant, components, keyring), which
releases and architectures it supports, and which packages each init mode needs: `systemd` (the
agent runs as kata-agent.service) or `agent` (the agent is /sbin/init).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from osbuilder.arch import ARCHES
from osbuilder.errors import ConfigError, UsageError, combine
from osbuilder.yamlconfig import (
    Bool,
    Context,
    Document,
    Field,
    ListOf,
    MapOf,
    Name,
    Obj,
    Str,
    Text,
    Version,
    load,
)

RECIPE_FILE = "recipe.yaml"
INIT_MODES = ("systemd", "agent")
BOOTSTRAP_TOOLS = ("mmdebstrap", "none")


def _f(schema: Any, required: bool = False, default: Any = None) -> Field:
    return Field(schema, required, default)


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


RELEASE = Obj(
    {
        "description": _f(Text()),
        "version": _f(Version(), True),
        "architectures": _f(ListOf(Str(choices=tuple(ARCHES)), min_items=1, unique=True), True),
        "suite": _f(Name()),
    },
    name="release",
)
INIT = Obj(
    {
        "description": _f(Text()),
        "packages": _f(ListOf(Name(), unique=True), True),
        "busybox": _f(Bool(), default=False),
        # systemd units masked in the image (linked to /dev/null): what neither the agent nor its
        # target needs, so that nothing competes with the agent for the guest's CPU at boot.
        "masked-units": _f(ListOf(Str(pattern=r"[A-Za-z0-9:_.@-]+\.(service|socket|timer|mount|automount|path|target)",
                                      hint="a systemd unit name such as \"modprobe@.service\""), unique=True),
                           default=[]),
        # systemd generators disabled in the image (a link to /dev/null in /etc/systemd/system-generators).
        "masked-generators": _f(ListOf(Str(pattern=r"[A-Za-z0-9_.-]+-generator", hint="a generator's file name"),
                                       unique=True), default=[]),
    },
    name="init mode",
)
BOOTSTRAP = Obj(
    {
        "tool": _f(Str(choices=BOOTSTRAP_TOOLS), True),
        "archive": _f(Str(choices=("debian", "ubuntu"))),
        "variant": _f(Str(choices=("extract", "custom", "essential", "apt", "required", "minbase", "buildd",
                                   "important", "standard")), default="required"),
        "components": _f(ListOf(Name(), min_items=1), default=["main"]),
        "options": _f(ListOf(Str()), default=[]),
    },
    name="bootstrap section",
)
KEYRING = Obj(
    {
        "host-path": _f(Str(pattern=r"/\S+", hint="an absolute path")),
        "external": _f(Name()),
        "member": _f(Str(pattern=r"[^/]\S*", hint="a path inside the package")),
    },
    name="keyring section",
)
SCHEMA = Obj(
    {
        "description": _f(Text(), True),
        "bootstrap": _f(BOOTSTRAP, True),
        "keyring": _f(KEYRING),
        "default-release": _f(Name(), True),
        "releases": _f(MapOf(RELEASE, key_pattern=r"[a-z0-9][a-z0-9.-]*", key_hint="a release codename", min_items=1),
                       True),
        "default-init": _f(Str(choices=INIT_MODES), True),
        "init": _f(MapOf(INIT, key_pattern="|".join(INIT_MODES), key_hint="an init mode (systemd, agent)",
                         min_items=1), True),
        "trim": _f(ListOf(Str(pattern=r"[^/]\S*", hint="a path relative to the rootfs")), default=[]),
    },
    name="recipe",
    check_fn=_check_recipe,
)


@dataclass(frozen=True)
class Release:
    codename: str
    version: str
    architectures: tuple[str, ...]
    suite: str  # the archive suite to bootstrap; usually the codename


@dataclass(frozen=True)
class InitMode:
    name: str
    packages: tuple[str, ...]
    busybox: bool
    masked_units: tuple[str, ...] = ()
    masked_generators: tuple[str, ...] = ()


@dataclass(frozen=True)
class Keyring:
    host_path: str | None
    external: str | None
    member: str | None


@dataclass(frozen=True)
class Bootstrap:
    tool: str
    archive: str | None
    variant: str
    components: tuple[str, ...]
    options: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    description: str
    bootstrap: Bootstrap
    keyring: Keyring | None
    default_release: str
    releases: tuple[Release, ...]
    default_init: str
    init_modes: tuple[InitMode, ...]
    trim: tuple[str, ...]
    document: Document

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

    def init(self, mode: str | None) -> InitMode:
        wanted = mode or self.default_init
        for init in self.init_modes:
            if init.name == wanted:
                return init
        raise UsageError(
            problem=f"{self.name} does not support init mode '{wanted}'",
            where="--agent-init" if wanted == "agent" else "init mode",
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
    document = load(path, SCHEMA)
    value = document.value
    name = path.parent.name
    bootstrap = value["bootstrap"]
    keyring = value.get("keyring")
    return Recipe(
        name=name,
        path=path,
        description=value["description"],
        bootstrap=Bootstrap(
            tool=bootstrap["tool"],
            archive=bootstrap.get("archive"),
            variant=bootstrap["variant"],
            components=tuple(bootstrap["components"]),
            options=tuple(bootstrap["options"]),
        ),
        keyring=Keyring(keyring.get("host-path"), keyring.get("external"), keyring.get("member")) if keyring else None,
        default_release=value["default-release"],
        releases=tuple(
            Release(codename, spec["version"], tuple(spec["architectures"]), spec.get("suite") or codename)
            for codename, spec in value["releases"].items()
        ),
        default_init=value["default-init"],
        init_modes=tuple(
            InitMode(mode, tuple(spec["packages"]), bool(spec["busybox"]), tuple(spec["masked-units"]),
                     tuple(spec["masked-generators"]))
            for mode, spec in value["init"].items()
        ),
        trim=tuple(value["trim"]),
        document=document,
    )


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
