"""A rootfs request resolved into a plan: every input found and checked, nothing written.

`plan()` reads (the recipe, versions.yaml, an agent file or tarball, the agent sources' digest,
tool versions, the environment's SOURCE_DATE_EPOCH and mirrors) and decides; every bad input is a
UsageError (exit 2) here, before anything is fetched, compiled or written. The plan's
`cache_inputs()` are everything that determines the rootfs, including the digest of the code that
builds it (osbuilder.codegraph), and are what `osbuilder matrix` reports for CI as well.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from osbuilder import __version__, codegraph, runner
from osbuilder.agent_build import plan_reference_agent
from osbuilder.arch import Arch, host_arch
from osbuilder.cache import content_key, sha256_file, sha256_tree
from osbuilder.errors import UsageError
from osbuilder.modes import Backend, BuildMode, InitMode
from osbuilder.recipes import InitPackages, Recipe, Release
from osbuilder.rootfs import bootstrappers
from osbuilder.rootfs.agent import DEFAULT_AGENT_NAME, AgentChoice, check_arch, from_file, from_tarball
from osbuilder.rootfs.bootstrappers.base import Bootstrapper, Choice, Job
from osbuilder.rootfs.bootstrappers.mmdebstrap import bootstrap_mirror
from osbuilder.rootfs.busybox import key_inputs as busybox_key_inputs
from osbuilder.rootfs.distro import Selection, select
from osbuilder.rootfs.provision import modules_name
from osbuilder.tree import environment_epoch
from osbuilder.versions import Versions

CACHE_KIND = "rootfs"
CACHE_FORMAT = 1  # bump when the entry layout changes
# The module that builds a rootfs: the code part of the cache key is its import closure.
BUILDER_MODULE = "osbuilder.rootfs.build"
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
CONTAINER_VARIANT = "minbase"  # a container root: the essential packages and apt, like a distro's base image


@dataclass(frozen=True)
class Request:
    """What the user asked for (the option table of osbuilder.rootfs.options, or a caller)."""

    output: Path | None = None  # None: <build_dir>/<default name>
    build_dir: Path | None = None  # None: the current directory
    force: bool = False
    distro: str | None = None
    release: str | None = None
    arch: str | None = None
    agent_init: bool = False
    agent: Path | None = None
    agent_tarball: Path | None = None
    agent_name: str = DEFAULT_AGENT_NAME
    extra_packages: tuple[str, ...] = ()
    backend: Backend = Backend.NATIVE
    docker_base: str | None = None
    mirror: str | None = None
    no_cache: bool = False
    delete_unneeded: bool = False
    kernel_modules: Path | None = None
    busybox: bool | None = None  # None: the recipe's init mode decides
    container: bool = False


@dataclass(frozen=True)
class Plan:
    """A request resolved against the recipes and versions, every input checked."""

    request: Request
    selection: Selection
    extra_packages: tuple[str, ...]
    agent: AgentChoice | None  # None: a container root
    bootstrapper: Bootstrapper
    mirror: str | None
    busybox: bool
    source_date_epoch: int | None
    output: Path
    agent_version: str | None  # the tarball's VERSION, else versions.yaml assets.agent.version
    strip: str | None  # the strip tool's version (the agent is stripped)
    code: str  # the digest of the code that builds a rootfs (codegraph)
    busybox_inputs: dict[str, object] | None = None  # the pinned busybox (osbuilder.rootfs.busybox.key_inputs)
    kernel_modules: dict[str, str] | None = None  # --kernel-modules: the directory's name and tree digest

    @property
    def recipe(self) -> Recipe:
        return self.selection.recipe

    @property
    def release(self) -> Release:
        return self.selection.release

    @property
    def arch(self) -> Arch:
        return self.selection.arch

    @property
    def init(self) -> InitPackages | None:
        return self.selection.init

    @property
    def container(self) -> bool:
        return self.selection.init is None

    @property
    def mode(self) -> BuildMode:
        return self.bootstrapper.mode

    @property
    def bootstraps(self) -> bool:
        return self.mode is not BuildMode.NONE

    @property
    def packages(self) -> tuple[str, ...]:
        base = self.init.packages if self.init is not None else ()
        return tuple(dict.fromkeys([*base, *self.extra_packages]))

    @property
    def job(self) -> Job:
        return Job(recipe=self.recipe, release=self.release, arch=self.arch, packages=self.packages,
                   mirror=self.mirror,
                   variant=CONTAINER_VARIANT if self.container else self.recipe.bootstrap.variant,
                   trims=() if self.container else self.recipe.trim, source_date_epoch=self.source_date_epoch,
                   keep_apt_lists=not self.container)

    def cache_inputs(self) -> dict[str, Any]:
        """Everything that determines the rootfs: the cache key is their digest."""
        request = self.request
        return {
            "kind": CACHE_KIND,
            "format": CACHE_FORMAT,
            # The code that makes a rootfs (every module the builder imports, and its templates), and
            # the package version; not the commit, which the rootfs does not record (metadata.step_version).
            "code": self.code,
            "osbuilder_version": __version__,
            "recipe": {"name": self.recipe.name, "sha256": sha256_file(self.recipe.path)},
            "release": self.release.codename,
            "arch": self.arch.name,
            "init": self.init.name if self.init is not None else None,
            "container": self.container,
            "variant": self.job.variant,
            "packages": sorted(self.init.packages) if self.init is not None else [],
            "extra_packages": sorted(self.extra_packages),
            "agent": self.agent.key_inputs() if self.agent is not None else None,
            "agent_version": self.agent_version,  # recorded in osbuilder.yaml; may come from versions.yaml
            "options": {
                "delete_unneeded": request.delete_unneeded,
                "busybox": self.busybox_inputs,
                "kernel_modules": self.kernel_modules,
            },
            "backend": request.backend if self.bootstraps else "none",
            "bootstrap_tool": self.bootstrapper.identity,
            "mirror": self.mirror,
            "strip": self.strip,
            "source_date_epoch": self.source_date_epoch,
        }

    @cached_property
    def cache_key(self) -> str:
        return content_key(self.cache_inputs())


def check_output(output: Path, force: bool) -> Path:
    """The absolute output path, if it can be one (bad input: exit 2). Whether it can be created is
    probed by prepare (probe_output), which writes."""
    output = Path(os.path.abspath(output))
    where = f"-o {output}"
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise UsageError(problem=f"{output} exists and is not a directory", where=where,
                         fix="choose another output directory")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise UsageError(problem=f"{output} exists and is not empty", where=where,
                         fix="choose a new directory, empty this one, or pass --force to replace it")
    parent = output.parent
    if not parent.is_dir():
        raise UsageError(problem=f"the parent directory {parent} does not exist", where=where,
                         fix=f"create it first: mkdir -p {parent}")
    return output


def strip_tool(arch: Arch) -> str:
    return "strip" if arch.name == host_arch().name else f"{arch.cross_prefix}strip"


def _check_packages(extra: tuple[str, ...], recipe: Recipe) -> None:
    for package in extra:
        if not PACKAGE_NAME.fullmatch(package):
            raise UsageError(problem=f"'{package}' is not a Debian package name", where="--extra-pkgs",
                             fix="give package names such as 'strace' (lowercase letters, digits, + - .)")
    if extra and not recipe.has_distribution:
        raise UsageError(problem=f"{recipe.name} installs no packages", where="--extra-pkgs",
                         fix="use a distribution recipe (debian, ubuntu) for extra packages")


def _check_container(request: Request, recipe: Recipe) -> None:
    """A container root is the distribution's base and nothing of a guest's."""
    if not recipe.has_distribution:
        raise UsageError(problem=f"{recipe.name} has no distribution to make a container root from",
                         where="--container", fix="use a distribution recipe, e.g. --distro ubuntu")
    guest_only = [flag for flag, given in (
        ("--agent-init", request.agent_init), ("--agent", request.agent is not None),
        ("--agent-tarball", request.agent_tarball is not None),
        ("--agent-name", request.agent_name != DEFAULT_AGENT_NAME), ("--busybox", bool(request.busybox)),
        ("--delete-unneeded", request.delete_unneeded), ("--kernel-modules", request.kernel_modules is not None))
        if given]
    if guest_only:
        raise UsageError(problem=f"{', '.join(guest_only)} describe a guest rootfs; a container root has no agent "
                                 "and no init", where=guest_only[0], fix="drop them, or drop --container")


def _agent(request: Request, versions: Versions, memo: Path | None, arch: Arch) -> AgentChoice:
    if not AGENT_NAME.fullmatch(request.agent_name):
        raise UsageError(problem=f"'{request.agent_name}' is not a file name", where="--agent-name",
                         fix="use a plain name such as kata-agent")
    if request.agent is not None and request.agent_tarball is not None:
        raise UsageError(problem="--agent and --agent-tarball exclude each other", where="--agent-tarball",
                         fix="give one of them")
    if request.agent_tarball is not None:
        given = from_tarball(request.agent_tarball, request.agent_name)
        check_arch(given, arch.name, "--agent-tarball")
        return AgentChoice(request.agent_name, given, None)
    if request.agent is not None:
        given = from_file(request.agent)
        check_arch(given, arch.name, "--agent")
        return AgentChoice(request.agent_name, given, None)
    return AgentChoice(request.agent_name, None, plan_reference_agent(versions.agent_version, memo, arch=arch))


def plan(request: Request, versions: Versions, recipe_named: Callable[[str], Recipe], cache_root: Path,
         asset: str = "image", environment: Mapping[str, str] | None = None, key_only: bool = False) -> Plan:
    """The plan of a request. `asset` names whose versions.yaml defaults apply without --distro;
    `environment` (default: ours) gives SOURCE_DATE_EPOCH and OSBUILDER_<ARCHIVE>_MIRROR; `key_only`
    plans for the cache key alone (osbuilder matrix), without checking an output."""
    memo = cache_root / runner.TOOL_VERSIONS
    selection = select(versions, recipe_named, distro=request.distro, release=request.release, arch=request.arch,
                       agent_init=request.agent_init, container=request.container, asset=asset)
    recipe = selection.recipe
    extra = tuple(dict.fromkeys(request.extra_packages))
    _check_packages(extra, recipe)
    if request.container:
        _check_container(request, recipe)
    if request.busybox and recipe.has_distribution:
        raise UsageError(problem=f"--busybox is for the minimal recipe; {recipe.name} has its own shell",
                         where="--busybox", fix="add busybox-static with --extra-pkgs instead")
    agent = None if request.container else _agent(request, versions, memo, selection.arch)
    if request.kernel_modules is not None and not request.kernel_modules.is_dir():
        raise UsageError(problem=f"{request.kernel_modules} is not a directory",
                         where=f"--kernel-modules {request.kernel_modules}",
                         fix="give the modules directory of the guest kernel (lib/modules/<version>)")
    default_output = (request.build_dir or Path.cwd()) / selection.default_name
    output = Path(os.path.abspath(request.output or default_output))
    if not key_only:
        output = check_output(output, request.force)
    cache_dir = Path(os.path.abspath(cache_root))
    if not key_only and (output == cache_dir or cache_dir in output.parents or output in cache_dir.parents):
        # The cache keeps its rootfs entries in <cache>/rootfs: the two would overwrite each other.
        raise UsageError(problem=f"the output {output} and the cache directory {cache_dir} overlap",
                         where=f"-o {output}", fix="write the rootfs outside the cache directory (see --cache-dir)")
    sde = environment_epoch(environment)
    mirror = bootstrap_mirror(recipe.bootstrap.archive or "debian", selection.release.suite, request.mirror,
                              environment) if recipe.has_distribution else request.mirror
    bootstrapper = bootstrappers.choose(
        Choice(recipe, selection.release, selection.arch, request.docker_base, memo), request.backend)
    init = selection.init
    busybox = bool(request.busybox if request.busybox is not None else (init is not None and init.busybox))
    return Plan(request, selection, extra, agent, bootstrapper, mirror, busybox, sde, output,
                None if agent is None else agent.version or versions.agent_version,
                None if agent is None else runner.tool_version(strip_tool(selection.arch), memo, "strip the agent"),
                codegraph.code_digest(BUILDER_MODULE, memo=cache_root / codegraph.MEMO),
                busybox_key_inputs(versions, selection.arch) if busybox else None,
                None if request.kernel_modules is None else {"name": modules_name(request.kernel_modules),
                                                             "sha256": sha256_tree(request.kernel_modules)})

def is_agent_init(plan: Plan) -> bool:
    return plan.init is not None and plan.init.name is InitMode.AGENT
