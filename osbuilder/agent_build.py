"""The reference agent built from agent/ (`make -C agent O=DIR VERSION=V`): planned, then built.

The build is cached under agent/<key>, keyed by the agent sources' tree digest, the compiler's
version, the agent version and the architecture, so it is compiled once per change.

For the host's architecture the agent is linked statically against musl (musl-gcc). For another
architecture (aarch64 on x86_64) it is linked statically against glibc with Debian's cross gcc
(gcc-aarch64-linux-gnu, libc6-dev-arm64-cross): Debian ships no musl cross toolchain, and the agent
calls nothing that a static glibc cannot do (no NSS lookups, no dlopen). It is larger (about
730 KB against 145 KB) but needs no foreign package architecture on the host. Planning
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
from osbuilder.arch import Arch, host_arch
from osbuilder.cache import Cache, Hit, content_key, sha256_tree
from osbuilder.errors import BuildError, UsageError
from osbuilder.paths import AGENT_SOURCE_DIR

AGENT_BINARY = "kata-agent"
CACHE_KIND = "agent"
COMPILER = "musl-gcc"  # agent/Makefile uses it unless CC is given on its command line
CROSS_COMPILER = "gcc"  # after the architecture's cross prefix: static glibc
# What `make -C agent` writes into the source directory itself; not an input.
NOT_SOURCES = frozenset({"build", "__pycache__"})


@dataclass(frozen=True)
class AgentPlan:
    source_dir: Path
    version: str  # assets.agent.version: what Health/Version answers
    inputs: dict[str, Any]  # the cache key's inputs
    arch: Arch

    @property
    def make_variables(self) -> list[str]:
        """The compiler and strip of a cross build; none for the host's architecture (musl-gcc)."""
        if self.arch.name == host_arch().name:
            return []
        return [f"CC={compiler_for(self.arch)}", f"STRIP={self.arch.cross_prefix}strip"]

    @property
    def cache_key(self) -> str:
        return content_key(self.inputs)


def compiler_for(arch: Arch) -> str:
    return COMPILER if arch.name == host_arch().name else f"{arch.cross_prefix}{CROSS_COMPILER}"


def compiler_version(memo: Path | None = None, arch: Arch | None = None) -> str:
    """First line of `<compiler> --version`, kept in `memo` (the cache's tool-version file)."""
    return runner.tool_version(compiler_for(arch or host_arch()), memo,
                               f"build the reference agent for {(arch or host_arch()).name}")


def plan_reference_agent(version: str, memo: Path | None, source_dir: Path = AGENT_SOURCE_DIR,
                         arch: Arch | None = None) -> AgentPlan:
    """The reference agent's build for `arch` (default: the host's), planned: its sources and inputs
    checked, its key computed."""
    target = arch or host_arch()
    makefile = source_dir / "Makefile"
    if not makefile.is_file():
        raise UsageError(
            problem=f"no agent given and no reference agent sources ({makefile} does not exist)",
            where="--agent",
            fix="pass --agent PATH (a static kata-agent) or --agent-tarball PATH (kata-static-agent.tar.zst)",
        )
    inputs = {
        "sources": sha256_tree(source_dir, NOT_SOURCES),
        "compiler": compiler_version(memo, target),
        "version": version,
        "arch": target.name,
    }
    return AgentPlan(source_dir, version, inputs, target)


def build_reference_agent(plan: AgentPlan, cache: Cache, verbose: bool = False) -> Path:
    """The reference agent for this plan, built (or taken from the cache): its path in the entry."""
    return obtain_reference_agent(plan, cache, verbose).path / AGENT_BINARY


def obtain_reference_agent(plan: AgentPlan, cache: Cache, verbose: bool = False) -> Hit:
    """The cache entry of the reference agent for this plan (local, pulled from the remote cache, or
    built), kept in use until the process ends."""

    def build(staging: Path) -> dict[str, Any]:
        work = staging / "build"
        work.mkdir()
        runner.run(["make", "-C", plan.source_dir, f"O={work}", f"VERSION={plan.version}", *plan.make_variables],
                   stream=verbose, what=f"build the reference agent for {plan.arch.name} (make -C agent)")
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
