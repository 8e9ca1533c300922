"""Where build-image and build-initrd get their rootfs: a given directory, or one built first.

Without ROOTFS_DIR, the rootfs builder's options (--distro, --os-version, --agent, ...) build it into
a temporary directory next to the output (a cache hit only unpacks it), and it is removed afterwards.
With neither, the defaults of versions.yaml apply: assets.image for an image, assets.initrd for an
initrd, including their init mode.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder import rootfs, userns
from osbuilder.arch import host_arch, parse_arch
from osbuilder.context import Context
from osbuilder.errors import UsageError

# (option, attribute) of the rootfs options that make no sense together with ROOTFS_DIR.
_ROOTFS_ONLY = (("--distro", "distro"), ("--os-version", "os_version"), ("--agent", "agent"),
                ("--agent-tarball", "agent_tarball"), ("--extra-pkgs", "extra_pkgs"), ("--mirror", "mirror"),
                ("--kernel-modules", "kernel_modules"), ("--docker-base", "docker_base"))


def add_rootfs_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "building the rootfs first (instead of ROOTFS_DIR; see osbuilder build-rootfs --help)")
    group.add_argument("--distro", metavar="NAME", help="distro recipe")
    group.add_argument("--os-version", metavar="RELEASE", help="release codename")
    group.add_argument("--arch", metavar="ARCH", help="target architecture (default: the host's)")
    agent = group.add_mutually_exclusive_group()
    agent.add_argument("--agent", type=Path, metavar="PATH", help="agent executable (default: the reference agent)")
    agent.add_argument("--agent-tarball", type=Path, metavar="PATH", help="agent release tarball")
    group.add_argument("--extra-pkgs", nargs="+", default=[], metavar="PKG", help="more distribution packages")
    group.add_argument("--backend", choices=("native", "docker"), default="native", help="rootfs backend")
    group.add_argument("--docker-base", metavar="IMAGE", help="base image of the docker builder")
    group.add_argument("--mirror", metavar="URL", help="archive mirror")
    group.add_argument("--no-cache", action="store_true", help="rebuild the rootfs even if it is cached")
    group.add_argument("--delete-unneeded", action="store_true", help="Kata's rootfs.sh -d")
    group.add_argument("--kernel-modules", type=Path, metavar="DIR", help="kernel modules to copy in")
    group.add_argument("--busybox", action="store_true", default=None, help="minimal recipe: add busybox")


@dataclass(frozen=True)
class RootfsInput:
    path: Path
    agent_init: bool
    built: dict[str, Any] | None  # build-rootfs's report when it was built here
    cache_key: str | None


@contextlib.contextmanager
def rootfs_input(context: Context, args: argparse.Namespace, asset: str, output: Path) -> Iterator[RootfsInput]:
    """The rootfs to build `asset` ("image" or "initrd") from; a built one is removed afterwards."""
    if args.rootfs is not None:
        given = [option for option, attribute in _ROOTFS_ONLY if getattr(args, attribute)]
        if given:
            raise UsageError(problem=f"{', '.join(given)} build a rootfs, but ROOTFS_DIR {args.rootfs} was given",
                             where=given[0], fix="give either ROOTFS_DIR or the rootfs options")
        yield RootfsInput(args.rootfs, args.agent_init, None, None)
        return
    arch = parse_arch(args.arch) if args.arch else host_arch()
    distro, release, agent_init = args.distro, args.os_version, args.agent_init
    if distro is None:
        pin = context.versions.distro_pin(asset, arch.name)
        distro, release = pin.distro, release or pin.release
        agent_init = agent_init or pin.init == "agent"
    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}.rootfs-", dir=output.parent))
    target = workdir / "rootfs"
    try:
        request = rootfs.Request(
            output=target, distro=distro, release=release, arch=arch.name, agent_init=agent_init,
            agent=args.agent, agent_tarball=args.agent_tarball,
            extra_packages=rootfs.package_list(args.extra_pkgs),
            backend=args.backend, docker_base=args.docker_base, mirror=args.mirror, no_cache=args.no_cache,
            delete_unneeded=args.delete_unneeded, kernel_modules=args.kernel_modules, busybox=args.busybox)
        plan = rootfs.make_plan(context, request)
        result = rootfs.build(context, plan)
        # The recipe decides the init mode when the user did not (the minimal recipe is agent-only).
        yield RootfsInput(target, plan.init.name == "agent", result.to_json(), result.cache_key)
    finally:
        _remove(workdir)


def _remove(workdir: Path) -> None:
    userns.remove_tree(workdir / "rootfs")  # a tree of subordinate ids is removed in its namespace
    shutil.rmtree(workdir, ignore_errors=True)
