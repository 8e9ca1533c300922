"""osbuilder build-agent: the reference agent (agent/), a small static binary, built and cached."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from osbuilder import runner
from osbuilder.agent_build import AGENT_BINARY, obtain_reference_agent, plan_reference_agent
from osbuilder.cache import sha256_file
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.outputs import atomic_output, check_output_path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("kata-agent"), metavar="PATH",
                        help="where to put the agent binary (default: ./kata-agent)")


def run(context: Context, args: argparse.Namespace) -> Outcome:
    output = check_output_path(args.output)
    started = time.monotonic()
    plan = plan_reference_agent(context.versions.agent_version, context.cache.root / runner.TOOL_VERSIONS)
    entry = obtain_reference_agent(plan, context.cache, context.verbose > 0)
    built = entry.path / AGENT_BINARY
    with atomic_output(output) as temporary:
        shutil.copyfile(built, temporary)
        os.chmod(temporary, 0o755)
    data = {"ok": True, "output": str(output), "version": context.versions.agent_version,
            "sha256": sha256_file(output), "size": output.stat().st_size,
            "compiler": plan.inputs["compiler"], "cache_key": plan.cache_key, "cache": entry.source, "cache_hit": entry.hit,
            "cache_path": str(built), "duration": round(time.monotonic() - started, 3)}
    text = (f"{output}: reference agent {data['version']}, {data['size']} bytes, static, sha256 {data['sha256']}")
    return Outcome(data, text)


COMMAND = Command("build-agent", "build the reference agent (static, musl) from agent/", configure, run, order=25)
