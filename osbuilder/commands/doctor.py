"""osbuilder doctor: which host tools each build step has, and what to install for the rest."""

from __future__ import annotations

import argparse
import ctypes.util
import os
from pathlib import Path
from typing import Any

from osbuilder.arch import ARCHES, host_arch
from osbuilder.binfmt import emulation
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.hosttools import SHARED_LIBRARIES, STEPS, find_tool
from osbuilder.userns import user_namespace_problem


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--step", action="append", choices=[step.name for step in STEPS], metavar="STEP",
                        help="check only this step (repeatable); steps: " + ", ".join(step.name for step in STEPS))


def _host_facts() -> dict[str, Any]:
    return {
        "root": os.geteuid() == 0,
        "user_namespaces": user_namespace_problem() is None,
        "kvm_device": Path("/dev/kvm").exists(),
        "vhost_vsock": Path("/dev/vhost-vsock").exists(),
        "docker_socket": Path("/var/run/docker.sock").exists(),
    }


def run(context: Context, args: argparse.Namespace) -> Outcome:
    wanted = set(args.step or [step.name for step in STEPS])
    steps: list[dict[str, Any]] = []
    missing_packages: set[str] = set()
    required_missing = False
    for step in STEPS:
        if step.name not in wanted:
            continue
        tools = []
        for tool in step.tools:
            path = find_tool(tool.name)
            tools.append({"tool": tool.name, "present": path is not None, "path": path, "package": tool.package,
                          "optional": tool.optional, "why": tool.why})
            if path is None:
                missing_packages.add(tool.package)
                required_missing = required_missing or not tool.optional
        ok = all(entry["present"] or entry["optional"] for entry in tools)
        steps.append({"step": step.name, "description": step.description, "ok": ok, "tools": tools})
    libraries = [{"library": name, "present": ctypes.util.find_library(name.split(".so")[0][3:]) is not None,
                  "package": package} for name, package in SHARED_LIBRARIES]
    for library in libraries:
        if not library["present"]:
            missing_packages.add(str(library["package"]))
            required_missing = True
    facts = _host_facts()
    # Optional, like the cross tools: only a foreign --arch build needs it (and fails early without it).
    foreign = [emulation(arch) for arch in ARCHES.values() if arch.name != host_arch().name]
    lines = []
    for report in steps:
        lines.append(f"{'ok     ' if report['ok'] else 'MISSING'} {report['step']}: {report['description']}")
        for tool in report["tools"]:
            if tool["present"]:
                continue
            kind = "optional" if tool["optional"] else "required"
            why = f" ({tool['why']})" if tool["why"] else ""
            lines.append(f"      {tool['tool']}: not found, {kind}{why} -> apt-get install {tool['package']}")
    for state in foreign:
        lines.append(f"{'ok     ' if state.ok else 'MISSING'} emulation of {state.arch} (build-rootfs --arch "
                     f"{state.arch}): " + ("qemu-user registered with binfmt_misc" if state.ok
                                           else f"{state.problem} -> {state.fix}"))
    lines.append("host: " + ", ".join(f"{key}={'yes' if value else 'no'}" for key, value in facts.items()))
    if missing_packages:
        lines.append("to install everything: apt-get install " + " ".join(sorted(missing_packages)))
    data = {"ok": not required_missing, "steps": steps, "libraries": libraries, "host": facts,
            "emulation": [state.to_json() for state in foreign],
            "missing_packages": sorted(missing_packages)}
    return Outcome(data, "\n".join(lines), exit_code=1 if required_missing else 0)


COMMAND = Command("doctor", "check the host tools each build step needs and name the packages to install",
                  configure, run, order=12)
