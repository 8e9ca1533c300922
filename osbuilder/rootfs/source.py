"""Where build-image and build-initrd get their rootfs: a given directory, or one built first.

Without ROOTFS_DIR, the rootfs options (--distro, --os-version, --agent, ...: osbuilder.rootfs.options)
build it into a temporary directory next to the output (a cache hit only unpacks it), and it is
removed afterwards. With neither, the defaults of versions.yaml apply: assets.image for an image,
assets.initrd for an initrd, including their init mode (osbuilder.rootfs.distro).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbuilder import staging, userns
from osbuilder.cache import Cache
from osbuilder.errors import UsageError
from osbuilder.fetch import Fetcher
from osbuilder.options import Kind
from osbuilder.recipes import Recipe
from osbuilder.rootfs import build, options, plan
from osbuilder.versions import Versions

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from osbuilder.context import Context


@dataclass(frozen=True)
class RootfsInput:
    path: Path
    agent_init: bool
    built: dict[str, Any] | None  # build-rootfs's report when it was built here
    cache_key: str | None


def check_given(given: Path, values: dict[str, Any], from_make: Collection[str] = ()) -> None:
    """Options that build a rootfs make no sense with ROOTFS_DIR (bad input). Make variables are
    not options the user typed here: `make image ROOTFS_DIR=x` ignores EXTRA_PKGS, as it always has."""
    given_options = []
    for option in options.ROOTFS:
        if option.dest in options.DESCRIBE_GIVEN_ROOTFS or option.dest in from_make:
            continue
        default = () if option.kind is Kind.LIST else option.default
        if values[option.dest] not in (default, None):
            given_options.append(option.flags[0])
    if given_options:
        raise UsageError(problem=f"{', '.join(given_options)} build a rootfs, but ROOTFS_DIR {given} was given",
                         where=given_options[0], fix="give either ROOTFS_DIR or the rootfs options")


@contextlib.contextmanager
def rootfs_input(given: Path | None, request: plan.Request, asset: str, output: Path, *, versions: Versions,
                 recipe_named: Callable[[str], Recipe], cache: Cache, fetcher: Fetcher, verbose: bool = False,
                 from_make: Collection[str] = ()) -> Iterator[RootfsInput]:
    """The rootfs to build `asset` ("image" or "initrd") from; a built one is removed afterwards."""
    if given is not None:
        check_given(given, dataclasses.asdict(request), from_make)
        yield RootfsInput(given, request.agent_init, None, None)
        return
    staging.sweep(output.parent, userns.remove_staging)
    workdir = staging.make_directory(output.parent, "rootfs")
    target = workdir / "rootfs"
    try:
        planned = plan.plan(dataclasses.replace(request, output=target), versions, recipe_named, cache.root, asset)
        result = build.build(planned, versions, cache, fetcher, verbose)
        # The recipe decides the init mode when the user did not (the minimal recipe is agent-only).
        yield RootfsInput(target, plan.is_agent_init(planned), result.to_json(), result.cache_key)
    finally:
        userns.remove_tree(target)  # a tree of subordinate ids is removed in its namespace
        shutil.rmtree(workdir, ignore_errors=True)


def rootfs_input_for(context: Context, request: plan.Request, asset: str, output: Path,
                     from_make: Collection[str]) -> Callable[[Path | None], AbstractContextManager[RootfsInput]]:
    """rootfs_input bound to a command's context: build-image and build-initrd ask it for the tree
    they were given (ROOTFS_DIR) or for none, which builds one."""
    def bound(given: Path | None) -> AbstractContextManager[RootfsInput]:
        return rootfs_input(given, request, asset, output, versions=context.versions, recipe_named=context.recipe,
                            cache=context.cache, fetcher=context.fetcher, verbose=context.verbose > 0,
                            from_make=from_make)
    return bound
