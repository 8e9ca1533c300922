"""The closed sets of modes that several steps share. StrEnums: they compare equal to, print as and
serialise to JSON as their values, which are also the words of the files and the command line."""

from __future__ import annotations

import enum


class InitMode(enum.StrEnum):
    """Who starts the agent: systemd (kata-agent.service) or the agent itself as /sbin/init."""

    SYSTEMD = "systemd"
    AGENT = "agent"


class Backend(enum.StrEnum):
    """Where a rootfs is bootstrapped: on this host, or in a builder container."""

    NATIVE = "native"
    DOCKER = "docker"


class BuildMode(enum.StrEnum):
    """How a rootfs build runs: as root on this host, in user namespaces (rootless), in a container,
    or without bootstrapping a distribution at all (the minimal recipe)."""

    ROOT = "root"
    UNSHARE = "unshare"
    DOCKER = "docker"
    NONE = "none"
