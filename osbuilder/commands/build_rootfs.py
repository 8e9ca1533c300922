"""osbuilder build-rootfs: a guest rootfs directory from a distro recipe, with the agent in it (or a
plain container root with --container)."""

from __future__ import annotations

import argparse

from osbuilder import options
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.rootfs.options import OUTPUT, ROOTFS

EPILOG = """\
Defaults: the distribution, release and init mode of versions.yaml assets.image for the
architecture; the recipe's default release when only --distro is given. Without --agent or
--agent-tarball the reference agent is built from agent/. Without -o the rootfs is written to
rootfs-<distro>-<release>-<systemd|agent|container> in --build-dir (default: here).

A finished rootfs is cached by the digest of everything that determines it (the code that builds
it included); an unchanged rebuild only unpacks it (cache_hit in --json). As a non-root user the
native backend runs mmdebstrap in unshare mode: the output tree is owned by your subordinate ids
(see osbuilder/userns.py).

examples:
  osbuilder build-rootfs --agent ./kata-agent -o build/rootfs
  osbuilder build-rootfs --distro debian --os-version bookworm --agent-init --agent ./kata-agent -o out
  osbuilder build-rootfs --distro minimal --busybox --agent ./kata-agent -o out --json
  osbuilder build-rootfs --distro ubuntu --os-version noble --container -o noble-root
"""


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # every option is in the tables (osbuilder.rootfs.options)


def run(context: Context, args: argparse.Namespace) -> Outcome:
    from osbuilder.rootfs import build, plan  # here, not at start-up: every command module is imported then

    request = options.request(plan.Request, args, OUTPUT, ROOTFS)
    planned = plan.plan(request, context.versions, context.recipe, context.cache.root)
    result = build.build(planned, context.versions, context.cache, context.fetcher, context.verbose > 0)
    return Outcome(result.to_json(), build.describe(result))


COMMAND = Command("build-rootfs", "build a guest rootfs directory (or a container root) from a distro recipe",
                  configure, run, order=20, epilog=EPILOG, options=(OUTPUT, ROOTFS))
