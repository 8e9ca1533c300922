"""The rootfs options, declared once: build-rootfs has them all; build-image and build-initrd take
ROOTFS (what to build when no ROOTFS_DIR is given). Each option's Make variable is Kata's name
where Kata has one; `make rootfs|image|initrd` passes them through (osbuilder.options)."""

from __future__ import annotations

from osbuilder.modes import Backend
from osbuilder.options import Kind, Option, Table, make_flag
from osbuilder.rootfs.agent import DEFAULT_AGENT_NAME


def _use_docker(value: str) -> Backend:
    return Backend.DOCKER if make_flag("USE_DOCKER", value) else Backend.NATIVE


ROOTFS = Table("the rootfs (see osbuilder build-rootfs --help)", (
    Option("distro", ("--distro",), "distro recipe (osbuilder distros); default: versions.yaml's for the asset",
           make="DISTRO", metavar="NAME"),
    Option("release", ("--os-version",), "release codename, e.g. noble, bookworm (default: the recipe's)",
           make="OS_VERSION", metavar="RELEASE"),
    Option("arch", ("--arch",), "target architecture (default: the host's)", make="ARCH", metavar="ARCH"),
    Option("agent", ("--agent",), "agent executable to install (default: the reference agent, built from agent/)",
           make="AGENT", kind=Kind.PATH, metavar="PATH", exclusive="agent"),
    Option("agent_tarball", ("--agent-tarball",),
           "agent release tarball (tar.zst or tar.xz with usr/bin/kata-agent)", make="AGENT_TARBALL",
           kind=Kind.PATH, metavar="PATH", exclusive="agent"),
    Option("agent_name", ("--agent-name", "--agent-bin"),
           f"the agent's file name under /usr/bin, installed and checked (default: {DEFAULT_AGENT_NAME})",
           make="AGENT_BIN", default=DEFAULT_AGENT_NAME, metavar="NAME"),
    Option("agent_init", ("--agent-init",), "the agent is /sbin/init, not systemd (checked in a given rootfs)",
           make="AGENT_INIT", kind=Kind.FLAG, default=False),
    Option("extra_packages", ("--extra-pkgs",), "more distribution packages (EXTRA_PKGS=\"a b\" or a,b)",
           make="EXTRA_PKGS", kind=Kind.LIST, metavar="PKG"),
    Option("backend", ("--backend",), "native: mmdebstrap on this host (default); docker: in a builder container "
           "(USE_DOCKER=true)", make="USE_DOCKER", default=Backend.NATIVE, enum=Backend, from_make=_use_docker),
    Option("docker_base", ("--docker-base",), "base image of the docker builder (default: <distro>:<release>)",
           make="DOCKER_BASE", metavar="IMAGE"),
    Option("mirror", ("--mirror",), "archive mirror (default: OSBUILDER_<ARCHIVE>_MIRROR, else mmdebstrap's "
           "for the suite)", metavar="URL"),
    Option("no_cache", ("--no-cache",), "rebuild even if the cache has this rootfs", kind=Kind.FLAG, default=False),
    Option("delete_unneeded", ("--delete-unneeded",),
           "remove systemd units and generators a guest does not need (Kata's rootfs.sh -d)", kind=Kind.FLAG,
           default=False),
    Option("kernel_modules", ("--kernel-modules",), "kernel modules directory copied to /lib/modules/<name of DIR>",
           make="KERNEL_MODULES_DIR", kind=Kind.PATH, metavar="DIR"),
    Option("busybox", ("--busybox",), "minimal recipe: add the pinned static busybox and its applet links",
           kind=Kind.FLAG, default=None),
))

# build-rootfs's own: where the tree goes, and the container root.
OUTPUT = Table("the rootfs directory, or a container root", (
    Option("output", ("-o", "--output"), "rootfs directory to create (default: "
           "BUILD_DIR/rootfs-<distro>-<release>-<systemd|agent|container>)", kind=Kind.PATH, metavar="DIR"),
    Option("build_dir", ("--build-dir",), "where the default output goes (default: the current directory)",
           kind=Kind.PATH, metavar="DIR"),
    Option("force", ("--force",), "replace DIR if it exists and is not empty", kind=Kind.FLAG, default=False),
    Option("container", ("--container",), "a plain container root: the distribution's minimal base (minbase) "
           "and --extra-pkgs, no agent, no init, no provisioning; a manifest is recorded", kind=Kind.FLAG,
           default=False),
))

# Options that also describe a rootfs given as ROOTFS_DIR (the others build one).
DESCRIBE_GIVEN_ROOTFS = ("agent_init", "agent_name")

# build-image and build-initrd: the rootfs they are made from, and what they check in it.
ASSET = Table("the rootfs", (
    Option("rootfs", (), "the rootfs directory; without it the rootfs is built first (the rootfs options below; "
           "default: versions.yaml assets.image or assets.initrd)", make="ROOTFS_DIR", kind=Kind.PATH,
           metavar="ROOTFS_DIR"),
    Option("skip_rootfs_check", ("--skip-rootfs-check",),
           "do not check /sbin/init, systemd and the agent (e.g. extension images)", make="SKIP_ROOTFS_CHECK",
           kind=Kind.FLAG, default=False),
    Option("source_date_epoch", ("--source-date-epoch",), "clamp every timestamp to this time (default: "
           "$SOURCE_DATE_EPOCH, else the newest mtime in the rootfs)", metavar="SECONDS"),
))
