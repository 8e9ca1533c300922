"""No distribution at all (the minimal recipe): the tree starts empty, and provisioning gets the
directories and account files the kernel, the agent and a debug shell need."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osbuilder.cache import Cache
from osbuilder.fetch import Fetcher
from osbuilder.modes import Backend, BuildMode
from osbuilder.rootfs.bootstrappers.base import Bootstrapped, Bootstrapper, Choice, Factory, Job, Workspace
from osbuilder.rootfs.provision import dirs_for_kernel_and_agent
from osbuilder.rootfs.tree import RootfsTree
from osbuilder.versions import Versions

TOOL = "none"


@dataclass(frozen=True)
class NoDistribution:
    @property
    def mode(self) -> BuildMode:
        return BuildMode.NONE

    @property
    def identity(self) -> str:
        return TOOL

    def check_host(self, job: Job, where: str) -> None:
        return None  # nothing runs: any host builds any architecture's tree

    def prepare(self, job: Job, versions: Versions, cache: Cache, fetcher: Fetcher) -> Bootstrapper:
        return self

    def can_write_in_place(self, directory: Path) -> bool:
        return False

    def bootstrap(self, job: Job, workspace: Workspace) -> Bootstrapped:
        return Bootstrapped(None)

    def finish(self, tree: RootfsTree) -> None:
        dirs_for_kernel_and_agent(tree)


def _choose(choice: Choice) -> Bootstrapper:
    return NoDistribution()


# The backend does not matter when nothing is bootstrapped.
FACTORIES: dict[tuple[str, Backend], Factory] = {(TOOL, backend): _choose for backend in Backend}
