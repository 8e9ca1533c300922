"""osbuilder build-agent: the reference agent (agent/), a small static binary, built and cached."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from osbuilder import options, runner
from osbuilder.agent_build import AGENT_BINARY, obtain_reference_agent, plan_reference_agent
from osbuilder.arch import host_arch, parse_arch
from osbuilder.cache import sha256_file
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.evidence.options import BUDGETS
from osbuilder.outputs import atomic_output, check_output_path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("kata-agent"), metavar="PATH",
                        help="where to put the agent binary (default: ./kata-agent)")
    parser.add_argument("--arch", default=None, metavar="ARCH",
                        help="the guest architecture (x86_64, aarch64; default: the host's). Another "
                             "architecture is cross-built: static glibc with Debian's cross gcc")


def run(context: Context, args: argparse.Namespace) -> Outcome:
    output = check_output_path(args.output)
    started = time.monotonic()
    arch = parse_arch(args.arch) if args.arch else host_arch()
    plan = plan_reference_agent(context.versions.agent_version, context.cache.root / runner.TOOL_VERSIONS,
                                arch=arch)
    entry = obtain_reference_agent(plan, context.cache, context.verbose > 0)
    built = entry.path / AGENT_BINARY
    with atomic_output(output) as temporary:
        shutil.copyfile(built, temporary)
        os.chmod(temporary, 0o755)
    data = {"ok": True, "output": str(output), "version": context.versions.agent_version,
            "sha256": sha256_file(output), "size": output.stat().st_size, "arch": arch.name,
            "compiler": plan.inputs["compiler"], "cache_key": plan.cache_key, "cache": entry.source,
            "cache_hit": entry.hit, "cache_path": str(built), "duration": round(time.monotonic() - started, 3)}
    if not options.values(args, BUDGETS)["no_budgets"]:
        from osbuilder.evidence.budgets import check_file

        check_file(context.versions, arch.name, "agent", output)
    text = (f"{output}: reference agent {data['version']} for {arch.name}, {data['size']} bytes, static, "
            f"sha256 {data['sha256']}")
    return Outcome(data, text)


COMMAND = Command("build-agent", "build the reference agent (static: musl, or glibc for another architecture) from agent/",
                  configure, run, order=25, options=(BUDGETS,))
