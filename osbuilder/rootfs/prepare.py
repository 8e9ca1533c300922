"""What a rootfs build needs before it starts, once the cache has no entry for its plan: the agent
(read, or the reference agent compiled), the bootstrapper's inputs (the archive keyring, a builder
image), and the agent stripped into the build's staging directory. `probe_output` runs for every
build, hit or not: whether the output can be created is only known by creating it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from osbuilder import runner, staging
from osbuilder.cache import Cache, sha256_file
from osbuilder.errors import UsageError
from osbuilder.fetch import Fetcher
from osbuilder.rootfs.agent import AgentSource
from osbuilder.rootfs.bootstrappers.base import Bootstrapper
from osbuilder.rootfs.plan import Plan, strip_tool
from osbuilder.rootfs.provision import AgentInstall
from osbuilder.versions import Versions


@dataclass(frozen=True)
class Prepared:
    plan: Plan
    bootstrapper: Bootstrapper  # holding what it fetched
    agent: AgentSource | None  # None: a container root


@contextlib.contextmanager
def phase(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(timings.get(name, 0.0) + time.monotonic() - started, 3)


def probe_output(output: Path) -> None:
    """Bad input (exit 2) if the output cannot be created, found by creating a probe beside it (an
    immutable or read-only directory passes every permission check a root caller makes)."""
    probe = staging.entry_path(output, "probe")
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise UsageError(problem=f"cannot create {output}: {exc.strerror}", where=f"-o {output}",
                         fix="choose an output directory in a writable place") from exc


def prepare(plan: Plan, versions: Versions, cache: Cache, fetcher: Fetcher, timings: dict[str, float],
            verbose: bool = False) -> Prepared:
    # The host can do it (an emulator for a foreign architecture): asked only when building, so that
    # a cached rootfs installs anywhere and `osbuilder matrix` can plan every architecture.
    plan.bootstrapper.check_host(plan.job, f"--arch {plan.request.arch}" if plan.request.arch else "--arch")
    # The archive is asked before the agent is compiled: a mirror without the architecture is
    # found in a second.
    with phase(timings, "keyring"):  # once per cache: a fetch when the host lacks the keyring
        bootstrapper = plan.bootstrapper.prepare(plan.job, versions, cache, fetcher)
    with phase(timings, "agent"):
        agent = plan.agent.source(cache, verbose) if plan.agent is not None else None
    return Prepared(plan, bootstrapper, agent)


def strip_agent(plan: Plan, agent: AgentSource, directory: Path) -> AgentInstall:
    """The agent binary, stripped (Kata strips it too), in `directory`."""
    binary = directory / "agent.stripped"
    binary.write_bytes(agent.binary)
    os.chmod(binary, 0o755)
    runner.run([runner.require_tool(strip_tool(plan.arch), "strip the agent"), binary], what="strip the agent")
    return AgentInstall(plan.request.agent_name, binary, sha256_file(binary), agent.members)
