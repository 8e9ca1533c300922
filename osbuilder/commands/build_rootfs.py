"""osbuilder build-rootfs: a guest rootfs directory from a distro recipe, with the agent in it."""

from __future__ import annotations

import argparse
from pathlib import Path

from osbuilder import rootfs
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context

EPILOG = """\
Defaults: the distribution, release and init mode of versions.yaml assets.image for the
architecture; the recipe's default release when only --distro is given. Without --agent or
--agent-tarball the reference agent is built from agent/.

A finished rootfs is cached by the digest of everything that determines it; an unchanged rebuild
only unpacks it (cache_hit in --json). As a non-root user the native backend runs mmdebstrap in
unshare mode: the output tree is owned by your subordinate ids (see osbuilder/userns.py).

examples:
  osbuilder build-rootfs --agent ./kata-agent -o build/rootfs
  osbuilder build-rootfs --distro debian --os-version bookworm --agent-init --agent ./kata-agent -o out
  osbuilder build-rootfs --distro minimal --busybox --agent ./kata-agent -o out --json
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--distro", metavar="NAME", help="distro recipe (osbuilder distros)")
    parser.add_argument("--os-version", metavar="RELEASE", help="release codename, e.g. noble, bookworm")
    parser.add_argument("--arch", metavar="ARCH", help="target architecture (default: the host's)")
    agent = parser.add_mutually_exclusive_group()
    agent.add_argument("--agent", type=Path, metavar="PATH", help="agent executable to install")
    agent.add_argument("--agent-tarball", type=Path, metavar="PATH",
                       help="agent release tarball (tar.zst or tar.xz with usr/bin/kata-agent)")
    parser.add_argument("--agent-name", default="kata-agent", metavar="NAME",
                        help="agent file name under /usr/bin (default: kata-agent)")
    parser.add_argument("--agent-init", action="store_true", help="the agent is /sbin/init (no systemd)")
    parser.add_argument("--extra-pkgs", nargs="+", default=[], metavar="PKG", help="more distribution packages")
    parser.add_argument("--backend", choices=("native", "docker"), default="native",
                        help="native: mmdebstrap on this host (default); docker: in a builder container")
    parser.add_argument("--docker-base", metavar="IMAGE",
                        help="base image of the docker builder (default: <distro>:<release>)")
    parser.add_argument("--mirror", metavar="URL", help="archive mirror (default: mmdebstrap's for the suite)")
    parser.add_argument("--no-cache", action="store_true", help="rebuild even if the cache has this rootfs")
    parser.add_argument("--delete-unneeded", action="store_true",
                        help="remove systemd units and generators a guest does not need (Kata's rootfs.sh -d)")
    parser.add_argument("--kernel-modules", type=Path, metavar="DIR",
                        help="kernel modules directory copied to /lib/modules/<name of DIR>")
    parser.add_argument("--busybox", action="store_true", default=None,
                        help="minimal recipe: add the pinned static busybox and its applet links")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="rootfs directory to create")
    parser.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")


def run(context: Context, args: argparse.Namespace) -> Outcome:
    request = rootfs.Request(
        output=args.output, distro=args.distro, release=args.os_version, arch=args.arch,
        agent_init=args.agent_init, agent=args.agent, agent_tarball=args.agent_tarball,
        agent_name=args.agent_name, extra_packages=rootfs.package_list(args.extra_pkgs), backend=args.backend,
        docker_base=args.docker_base, mirror=args.mirror, no_cache=args.no_cache,
        delete_unneeded=args.delete_unneeded, kernel_modules=args.kernel_modules, busybox=args.busybox,
        force=args.force)
    plan = rootfs.make_plan(context, request)
    result = rootfs.build(context, plan)
    return Outcome(result.to_json(), rootfs.describe(result))


COMMAND = Command("build-rootfs", "build a guest rootfs directory from a distro recipe", configure, run, order=20,
                  epilog=EPILOG)
