"""The reference agent built from agent/ (`make -C agent O=DIR VERSION=V`): planned, then built.

The build is cached under agent/<key>, keyed by the agent sources' tree digest, the compiler's
version, the agent version and the architecture, so it is compiled once per change. Planning
computes that key without compiling anything: a rootfs that embeds the reference agent is keyed by
it, so a cached rootfs needs no agent build at all.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder import runner
from osbuilder.arch import host_arch
from osbuilder.cache import Cache, Hit, content_key, sha256_tree
from osbuilder.errors import BuildError, UsageError
from osbuilder.paths import AGENT_SOURCE_DIR

AGENT_BINARY = "kata-agent"
CACHE_KIND = "agent"
COMPILER = "musl-gcc"  # agent/Makefile uses it unless CC is given on its command line
# What `make -C agent` writes into the source directory itself; not an input.
NOT_SOURCES = frozenset({"build", "__pycache__"})


@dataclass(frozen=True)
class AgentPlan:
    source_dir: Path
    version: str  # assets.agent.version: what Health/Version answers
    inputs: dict[str, Any]  # the cache key's inputs

    @property
    def cache_key(self) -> str:
        return content_key(self.inputs)


def compiler_version(memo: Path | None = None) -> str:
    """First line of `musl-gcc --version`, kept in `memo` (the cache's tool-version file)."""
    return runner.tool_version(COMPILER, memo, "build the reference agent")


def plan_reference_agent(version: str, memo: Path | None, source_dir: Path = AGENT_SOURCE_DIR) -> AgentPlan:
    """The reference agent's build, planned: its sources and inputs checked, its key computed."""
    makefile = source_dir / "Makefile"
    if not makefile.is_file():
        raise UsageError(
            problem=f"no agent given and no reference agent sources ({makefile} does not exist)",
            where="--agent",
            fix="pass --agent PATH (a static kata-agent) or --agent-tarball PATH (kata-static-agent.tar.zst)",
        )
    inputs = {
        "sources": sha256_tree(source_dir, NOT_SOURCES),
        "compiler": compiler_version(memo),
        "version": version,
        "arch": host_arch().name,
    }
    return AgentPlan(source_dir, version, inputs)


def build_reference_agent(plan: AgentPlan, cache: Cache, verbose: bool = False) -> Path:
    """The reference agent for this plan, built (or taken from the cache): its path in the entry."""
    return obtain_reference_agent(plan, cache, verbose).path / AGENT_BINARY


def obtain_reference_agent(plan: AgentPlan, cache: Cache, verbose: bool = False) -> Hit:
    """The cache entry of the reference agent for this plan (local, pulled from the remote cache, or
    built), kept in use until the process ends."""

    def build(staging: Path) -> dict[str, Any]:
        work = staging / "build"
        work.mkdir()
        runner.run(["make", "-C", plan.source_dir, f"O={work}", f"VERSION={plan.version}"], stream=verbose,
                   what="build the reference agent (make -C agent)")
        built = work / AGENT_BINARY
        if not built.is_file() or not os.access(built, os.X_OK):
            raise BuildError(problem=f"make -C {plan.source_dir} did not produce an executable {AGENT_BINARY}",
                             where=str(built), fix="check the agent Makefile: it must write $(O)/kata-agent")
        os.replace(built, staging / AGENT_BINARY)
        shutil.rmtree(work)
        return plan.inputs

    cache.hold(CACHE_KIND, plan.cache_key)  # its path is read after we return
    return cache.get_or_build(CACHE_KIND, plan.cache_key, build, inputs=plan.inputs)


def reference_agent(version: str, cache: Cache, source_dir: Path = AGENT_SOURCE_DIR, verbose: bool = False) -> Path:
    """Plan and build the reference agent: its path in the cache."""
    return build_reference_agent(plan_reference_agent(version, cache.root / runner.TOOL_VERSIONS, source_dir), cache,
                                 verbose)
