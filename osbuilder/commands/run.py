"""osbuilder run: run a container in a VM booted from the guest assets, as the Kata runtime does."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from osbuilder.boot.options import add_asset_options, add_vm_options
from osbuilder.boot.plan import Assets, VmChoices, bundle_configs, choose_assets, plan_vm
from osbuilder.boot.qemu import SHARED_FS_KINDS
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.errors import UsageError

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


def configure(parser: argparse.ArgumentParser) -> None:
    add_asset_options(parser, bundle_help=f"a release bundle: run on its image with its {BUNDLE_CONFIG}")
    add_vm_options(parser)
    container = parser.add_argument_group("the container")
    root = container.add_mutually_exclusive_group()
    root.add_argument("--oci-bundle", type=Path, metavar="DIR", help="an OCI runtime bundle (config.json + root)")
    root.add_argument("--rootfs", type=Path, metavar="DIR", help="a root tree, run with runc's default spec")
    container.add_argument("--shared-fs", choices=SHARED_FS_KINDS,
                           help="how the root reaches the guest (default: the configuration's shared_fs, else "
                                "virtio-fs)")
    container.add_argument("--virtiofsd", type=Path, metavar="PATH",
                           help="virtiofsd to use (default: the configuration's virtio_fs_daemon, a Rust virtiofsd, "
                                "or QEMU's /usr/lib/qemu/virtiofsd)")
    container.add_argument("--timeout", type=float, metavar="SECONDS",
                           help="kill the workload after this long (exit status 137)")
    container.add_argument("--boot-timeout", type=float, default=300.0, metavar="SECONDS",
                           help="deadline for the agent to answer, from QEMU's start (default 300)")
    container.add_argument("--stdin", metavar="FILE", help="feed FILE to the workload's stdin (- for osbuilder's)")
    container.add_argument("-i", "--interactive", action="store_true", help="feed osbuilder's stdin (--stdin -)")
    container.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]",
                           help="the command to run instead of the spec's process.args")


def _command(args: argparse.Namespace) -> list[str]:
    command = list(args.command)
    return command[1:] if command[:1] == ["--"] else command


def _container(args: argparse.Namespace) -> ContainerConfig:
    from osbuilder.sandbox.ocispec import default_config, load_bundle, with_args

    if args.oci_bundle is None and args.rootfs is None:
        raise UsageError(problem="no container to run", where="--oci-bundle/--rootfs",
                         fix="pass --oci-bundle DIR (config.json and its root) or --rootfs DIR")
    config = load_bundle(args.oci_bundle) if args.oci_bundle is not None else default_config(args.rootfs)
    return with_args(config, _command(args))


@contextlib.contextmanager
def _assets(args: argparse.Namespace) -> Iterator[Assets]:
    if args.bundle is not None:
        with bundle_configs(args.bundle, (BUNDLE_CONFIG,)) as (_version, configs):
            yield configs[0][1]
        return
    yield choose_assets(args.kernel, args.image, args.initrd, args.config)


@contextlib.contextmanager
def _stdin(args: argparse.Namespace) -> Iterator[IO[bytes] | None]:
    source = "-" if args.interactive else args.stdin
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

    config = _container(args)
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(problem="must be more than 0 seconds", where=f"--timeout {args.timeout:g}",
                         fix="give the seconds the workload may run")
    with _assets(args) as assets, _stdin(args) as stdin:
        runtime = assets.config
        shared_fs = args.shared_fs or (runtime.shared_fs if runtime and runtime.shared_fs != "none" else "virtio-fs")
        daemon = None
        if shared_fs == "virtio-fs" and args.virtiofsd is not None:
            daemon = require_virtiofsd(args.virtiofsd)
        elif shared_fs == "virtio-fs":
            daemon = find_virtiofsd(runtime.virtio_fs_daemon if runtime else None)
        require_root()
        vm, _root = plan_vm(VmChoices.from_args(args), assets, context.cache)
        sandbox_id = new_id()
        plan = SandboxPlan(vm=vm, shared_fs=shared_fs, virtiofsd=daemon,
                           virtiofs_cache=runtime.virtio_fs_cache if runtime else "auto",
                           boot_timeout=args.boot_timeout, console_log=args.console_log, sandbox_id=sandbox_id,
                           hostname=config.hostname)
        captured: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        if context.json:
            io = RunIO(captured["stdout"].extend, captured["stderr"].extend, stdin, args.timeout)
        else:
            io = RunIO(_writer(sys.stdout.buffer), _writer(sys.stderr.buffer), stdin, args.timeout)
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
                  order=65, epilog=EPILOG)
