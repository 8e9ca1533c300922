"""The default agent: the reference agent built from agent/ (`make -C agent O=DIR VERSION=V`).

The build is cached under agent/<key>, keyed by the agent sources' tree digest, the compiler's
version, the agent version and the architecture, so it is compiled once per change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from osbuilder import runner
from osbuilder.arch import host_arch
from osbuilder.cache import content_key, sha256_tree
from osbuilder.context import Context
from osbuilder.errors import BuildError, UsageError
from osbuilder.paths import AGENT_SOURCE_DIR

AGENT_BINARY = "kata-agent"


COMPILER = "musl-gcc"  # agent/Makefile uses it unless CC is given on its command line
# What `make -C agent` writes into the source directory itself; not an input.
NOT_SOURCES = frozenset({"build", "__pycache__"})


def compiler_version(memo: Path | None = None) -> str:
    """First line of `musl-gcc --version`, kept in `memo` (the cache's tool-version file)."""
    return runner.tool_version(COMPILER, memo, "build the reference agent")


def default_agent(context: Context, source_dir: Path = AGENT_SOURCE_DIR) -> Path:
    """The reference agent for this checkout, built (or taken from the cache)."""
    makefile = source_dir / "Makefile"
    if not makefile.is_file():
        raise UsageError(
            problem=f"no agent given and no reference agent sources ({makefile} does not exist)",
            where="--agent",
            fix="pass --agent PATH (a static kata-agent) or --agent-tarball PATH (kata-static-agent.tar.zst)",
        )
    version = context.versions.agent_version
    inputs = {
        "sources": sha256_tree(source_dir, NOT_SOURCES),
        "compiler": compiler_version(context.cache.root / runner.TOOL_VERSIONS),
        "version": version,
        "arch": host_arch().name,
    }
    key = content_key(inputs)

    def build(staging: Path) -> dict[str, Any]:
        work = staging / "build"
        work.mkdir()
        runner.run(["make", "-C", source_dir, f"O={work}", f"VERSION={version}"], stream=context.verbose > 0,
                   what="build the reference agent (make -C agent)")
        built = work / AGENT_BINARY
        if not built.is_file() or not os.access(built, os.X_OK):
            raise BuildError(problem=f"make -C {source_dir} did not produce an executable {AGENT_BINARY}",
                             where=str(built), fix="check the agent Makefile: it must write $(O)/kata-agent")
        os.replace(built, staging / AGENT_BINARY)
        shutil.rmtree(work)
        return inputs

    return context.cache.get_or_build("agent", key, build).path / AGENT_BINARY
