"""osbuilder run: run a container in a VM booted from the guest assets, as the Kata runtime does."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from osbuilder import options
from osbuilder.boot.options import ASSETS, HOW
from osbuilder.boot.plan import Assets, VmChoices, bundle_configs, choose_assets, plan_vm, prepare_vm
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.errors import UsageError
from osbuilder.sandbox.options import CONTAINER

if TYPE_CHECKING:
    from osbuilder.sandbox.ocispec import ContainerConfig

BUNDLE_CONFIG = "configuration-qemu.toml"  # the runtime's default configuration

EPILOG = """\
The container: --oci-bundle DIR (config.json and its root, as `runc spec` makes them) or --rootfs DIR
(runc's default spec for that root, without a network namespace). The command after -- replaces the
spec's process.args. The spec is constrained as the runtime constrains it (no hooks, no network,
cgroup or time namespace, no seccomp, no device/blkio/network resources); process.terminal is
ignored: stdout and stderr are copied as they come, to osbuilder's stdout and stderr.

Stdin: --stdin FILE feeds FILE to the workload, then end-of-file; -i/--interactive (or --stdin -)
feeds osbuilder's own stdin until it ends. Without either, the workload reads end-of-file at once.

Exit status: the workload's (128+N when a signal N ended it; 137 when --timeout killed it), 1 when
the sandbox failed, 2 for bad input. --json prints one object: ok, exit_status, stdout, stderr,
shared_fs, dax, root, agent, timings (seconds from QEMU's start), error. Needs root: the host side
mounts the container's root into the shared directory (in a private mount namespace) and runs
virtiofsd; nothing of it outlives osbuilder.
"""


TABLES = (ASSETS, HOW, CONTAINER)


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # every option is in the tables (osbuilder.boot.options, osbuilder.sandbox.options)


def _container(values: dict[str, Any]) -> ContainerConfig:
    from osbuilder.sandbox.ocispec import default_config, load_bundle, with_args

    if values["oci_bundle"] is None and values["rootfs"] is None:
        raise UsageError(problem="no container to run", where="--oci-bundle/--rootfs",
                         fix="pass --oci-bundle DIR (config.json and its root) or --rootfs DIR")
    config = load_bundle(values["oci_bundle"]) if values["oci_bundle"] is not None else default_config(values["rootfs"])
    return with_args(config, list(values["command"]))


@contextlib.contextmanager
def _assets(values: dict[str, Any]) -> Iterator[Assets]:
    if values["bundle"] is not None:
        with bundle_configs(values["bundle"], (BUNDLE_CONFIG,)) as (_version, configs):
            yield configs[0][1]
        return
    yield choose_assets(values["kernel"], values["image"], values["initrd"], values["config"])


@contextlib.contextmanager
def _stdin(values: dict[str, Any]) -> Iterator[IO[bytes] | None]:
    source = "-" if values["interactive"] else values["stdin"]
    if source is None:
        yield None
    elif source == "-":
        yield sys.stdin.buffer
    else:
        path = Path(source)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise UsageError(problem=f"{source} is not a readable file", where=f"--stdin {source}",
                             fix="give a readable file, or - for osbuilder's stdin")
        with path.open("rb") as handle:
            yield handle


def _writer(stream: IO[bytes]) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()

    return write


def run(context: Context, args: argparse.Namespace) -> Outcome:
    from osbuilder.sandbox.mountns import require_root
    from osbuilder.sandbox.sandbox import SandboxPlan, new_id
    from osbuilder.sandbox.virtiofsd import find_virtiofsd, require_virtiofsd
    from osbuilder.sandbox.workload import RunIO, run_workload

    values = options.values(args, *TABLES)
    choices = options.request(VmChoices, args, HOW)
    config = _container(values)
    timeout = values["timeout"]
    if timeout is not None and timeout <= 0:
        raise UsageError(problem="must be more than 0 seconds", where=f"--timeout {timeout:g}",
                         fix="give the seconds the workload may run")
    with _assets(values) as assets, _stdin(values) as stdin:
        runtime = assets.config
        shared_fs = values["shared_fs"] or (runtime.shared_fs if runtime and runtime.shared_fs != "none"
                                            else "virtio-fs")
        daemon = None
        if shared_fs == "virtio-fs" and values["virtiofsd"] is not None:
            daemon = require_virtiofsd(values["virtiofsd"])
        elif shared_fs == "virtio-fs":
            daemon = find_virtiofsd(runtime.virtio_fs_daemon if runtime else None)
        require_root()
        vm, _root = plan_vm(choices, assets)
        sandbox_id = new_id()
        plan = SandboxPlan(vm=prepare_vm(vm, context.cache), shared_fs=shared_fs, virtiofsd=daemon,
                           virtiofs_cache=runtime.virtio_fs_cache if runtime else "auto",
                           boot_timeout=values["boot_timeout"], console_log=values["console_log"],
                           sandbox_id=sandbox_id, hostname=config.hostname)
        captured: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        if context.json:
            io = RunIO(captured["stdout"].extend, captured["stderr"].extend, stdin, timeout)
        else:
            io = RunIO(_writer(sys.stdout.buffer), _writer(sys.stderr.buffer), stdin, timeout)
        # The first container of a sandbox has the sandbox's id, as with `ctr run --runtime kata`.
        report = run_workload(plan, config, sandbox_id, io)
    report.stdout = captured["stdout"].decode(errors="replace")
    report.stderr = captured["stderr"].decode(errors="replace")
    if report.failure is not None and not context.json:
        raise report.failure_with_console()
    if report.failure is not None:
        return Outcome(report.to_json(), "", exit_code=report.failure.exit_code)
    if report.timed_out and not context.json:
        sys.stderr.write(f"osbuilder: {report.error}\n")
    return Outcome(report.to_json(), "", exit_code=report.exit_status if report.exit_status is not None else 1)


COMMAND = Command("run", "run a container in a VM from the guest assets, as the Kata runtime does", configure, run,
                  order=65, epilog=EPILOG, options=TABLES)
