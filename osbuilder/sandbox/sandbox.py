"""A Kata sandbox driven from the host, as the runtime drives it.

`Sandbox.start()` prepares the shared directory (osbuilder.sandbox.mountns), starts virtiofsd when
the share is virtio-fs, boots QEMU with the runtime's devices, waits for the agent (Health/Check),
makes the network calls (the loopback interface, the routes) and CreateSandbox with the shared
storage. Containers are then created from OCI specs (their roots bound into the share), started,
exec'd into, signalled and removed; `destroy()` asks the agent to end the sandbox and waits for the
VM to power off. `close()` stops whatever is still running, in every case: QEMU, virtiofsd, and the
mount namespace with every bind and socket in it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from osbuilder import runner
from osbuilder.boot import guest
from osbuilder.boot.guest import RootMount
from osbuilder.boot.qemu import RunningVm, SharedFs, VmSpec, start_vm
from osbuilder.errors import EXIT_BAD_INPUT, BuildError
from osbuilder.sandbox.mountns import (
    SandboxNamespace,
    SandboxPaths,
    default_run_dir,
    guest_rootfs,
    guest_shared,
)
from osbuilder.sandbox.ocispec import ContainerConfig
from osbuilder.sandbox.protospec import process_message, spec_message
from osbuilder.sandbox.virtiofsd import Virtiofsd
from osbuilder.ttrpc.client import Code, TtrpcClient, TtrpcError, TtrpcStatusError
from osbuilder.ttrpc.protos import agent_pb2, types_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

SHARED_MOUNT_POINT = "/run/kata-containers/shared/containers/"
# The runtime's storage options for a 9p share (the agent mounts it with these).
NINE_P_OPTIONS = ("trans=virtio,version=9p2000.L,cache=mmap", "nodev", "msize=8192")
CALL_TIMEOUT = 60.0  # a unary call that does not block by design (everything but waits and reads)
POWER_OFF_SECONDS = 60.0
# Agent answers that mean the request itself was wrong: bad input, as osbuilder reports it (exit 2).
BAD_REQUEST_CODES = (Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS, Code.FAILED_PRECONDITION,
                     Code.OUT_OF_RANGE)


def new_id() -> str:
    return secrets.token_hex(8)


@dataclass
class AgentCallError(BuildError):
    """An agent call failed; `where` names the call (and the container), `problem` the agent's answer."""

    code: int | None = None


def call_error(call: str, exc: TtrpcError, container_id: str = "") -> AgentCallError:
    subject = f" (container {container_id})" if container_id else ""
    if isinstance(exc, TtrpcStatusError):
        bad_request = exc.code in BAD_REQUEST_CODES
        return AgentCallError(problem=f"the agent refused it: {exc.code_name}: {exc.message}",
                              where=f"{call}{subject}",
                              fix="correct the spec or the command" if bad_request else
                                  "see the agent's message and the guest console (--console-log)",
                              exit_code=EXIT_BAD_INPUT if bad_request else 1, code=exc.code)
    return AgentCallError(problem=f"no answer from the agent: {exc}", where=f"{call}{subject}",
                          fix="see the guest console (--console-log)")


@dataclass(frozen=True)
class SandboxPlan:
    vm: VmSpec  # the boot plan (osbuilder.boot.plan.plan_vm); the sandbox adds its channel and share
    shared_fs: str = "virtio-fs"  # | "virtio-9p"
    virtiofsd: Virtiofsd | None = None  # required for virtio-fs
    virtiofs_cache: str = "auto"
    boot_timeout: float = 300.0
    console_log: Path | None = None
    run_dir: Path = field(default_factory=default_run_dir)
    sandbox_id: str = field(default_factory=new_id)
    hostname: str = ""


@dataclass
class _Container:
    binds: list[Path] = field(default_factory=list)  # in the namespace, under mounts/


def shared_storage(kind: str) -> agent_pb2.Storage:
    """The storage CreateSandbox carries: the share, mounted by the agent under its tag."""
    if kind == "virtio-fs":
        return agent_pb2.Storage(driver="virtio-fs", source="kataShared", fstype="virtiofs", options=[],
                                 mount_point=SHARED_MOUNT_POINT)
    return agent_pb2.Storage(driver="9p", source="kataShared", fstype="9p", options=list(NINE_P_OPTIONS),
                             mount_point=SHARED_MOUNT_POINT)


def loopback() -> types_pb2.Interface:
    """The guest's loopback interface, up with its address; MTU 0 leaves the kernel's own."""
    address = types_pb2.IPAddress(family=types_pb2.v4, address="127.0.0.1", mask="8")
    return types_pb2.Interface(device="lo", name="lo", IPAddresses=[address], mtu=0)


class Sandbox:
    """One sandbox. Use as a context manager: `close()` always runs."""

    def __init__(self, plan: SandboxPlan) -> None:
        if plan.shared_fs == "virtio-fs" and plan.virtiofsd is None:
            raise ValueError("virtio-fs needs a virtiofsd")
        self.plan = plan
        self.paths = SandboxPaths(plan.run_dir, plan.sandbox_id)
        self.namespace = SandboxNamespace(plan.run_dir)
        self.timings: dict[str, float | None] = {}
        self.agent_version = ""
        self.root: RootMount | None = None
        self.vm: RunningVm | None = None
        self.vm_spec: VmSpec | None = None
        self._client: TtrpcClient | None = None
        self._virtiofsd: subprocess.Popen[bytes] | None = None
        self._virtiofsd_log: IO[bytes] | None = None
        self._containers: dict[str, _Container] = {}

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> Sandbox:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> TtrpcClient:
        if self._client is None:
            raise RuntimeError("the sandbox is not started")
        return self._client

    def since_start(self) -> float:
        assert self.vm is not None
        return round(time.monotonic() - self.vm.started, 3)

    def start(self) -> None:
        plan = self.plan
        self.namespace.start()
        self.namespace.prepare(self.paths)
        shared = SharedFs(plan.shared_fs, directory=self.paths.shared)
        if plan.shared_fs == "virtio-fs":
            self._start_virtiofsd()
            shared = SharedFs(plan.shared_fs, socket=self.paths.virtiofsd_socket)
        spec = dataclasses.replace(
            plan.vm, shared_fs=shared, wrapper=self.namespace.enter, name=f"osbuilder-sandbox-{plan.sandbox_id}",
            agent_socket=self.paths.agent_socket if plan.vm.transport == "serial" else None)
        self.vm_spec = spec
        self.vm = start_vm(spec, plan.console_log)
        deadline = self.vm.started + plan.boot_timeout
        self._client = guest.connect(self._channel(spec), self.vm, deadline)
        guest.wait_serving(self._client, self.vm, deadline, poll_interval=0.5,
                           deadline_text=f"the {plan.boot_timeout:.0f} s boot deadline")
        self.timings["agent_ready"] = self.since_start()
        self.agent_version = self.call("Health/Version", lambda: self.client.version(timeout=CALL_TIMEOUT)
                                        ).agent_version
        self.root = guest.agent_root(self.vm, 2.0)
        # The runtime's order: the network first (here the loopback interface: the VM has no NIC),
        # then the sandbox with its shared storage.
        self.call("UpdateInterface", lambda: self.client.update_interface(loopback(), timeout=CALL_TIMEOUT))
        self.call("UpdateRoutes", lambda: self.client.update_routes([], timeout=CALL_TIMEOUT))
        self.call("CreateSandbox", lambda: self.client.create_sandbox(
            hostname=plan.hostname or plan.sandbox_id, sandbox_id=plan.sandbox_id,
            storages=[shared_storage(plan.shared_fs)], timeout=CALL_TIMEOUT))

    def _channel(self, spec: VmSpec) -> Callable[[], TtrpcClient]:
        if spec.transport == "serial":
            path = str(self.namespace.host_path(self.paths.agent_socket))
            return lambda: TtrpcClient.connect_unix(path, timeout=2)
        return lambda: TtrpcClient.connect_vsock(spec.vsock_cid, timeout=2)

    def _start_virtiofsd(self) -> None:
        daemon = self.plan.virtiofsd
        assert daemon is not None
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.namespace.host_path(self.paths.virtiofsd_socket)))
            listener.listen(1)
            # Kept open for the daemon's life: its output goes into an error report.
            self._virtiofsd_log = tempfile.TemporaryFile(prefix="osb-virtiofsd-")  # noqa: SIM115
            argv = daemon.argv(self.paths.shared, cache=self.plan.virtiofs_cache)
            self._virtiofsd = self.namespace.spawn(argv, pass_fds=(listener.fileno(),), stdout=self._virtiofsd_log,
                                                   stderr=self._virtiofsd_log, die_with_parent=True)
        finally:
            listener.close()  # virtiofsd holds it now

    def virtiofsd_output(self) -> str:
        if self._virtiofsd_log is None:
            return ""
        self._virtiofsd_log.seek(0)
        return runner.output_tail(self._virtiofsd_log.read().decode(errors="replace"))

    def call(self, name: str, function: Callable[[], T], container_id: str = "") -> T:
        """An agent call; its failure becomes an AgentCallError naming the call (and the container)."""
        try:
            return function()
        except TtrpcError as exc:
            error = call_error(name, exc, container_id)
            if self.vm is not None and not isinstance(exc, TtrpcStatusError):
                shown = guest.console_causes(self.vm)
                if shown:
                    error.problem += f"; the console shows: {shown}"
            raise error from exc

    # ------------------------------------------------------------------ containers

    def create_container(self, container_id: str, config: ContainerConfig) -> None:
        """Bind the root (and host binds) into the share and CreateContainer (exec id = container id)."""
        if container_id in self._containers:
            # The agent is the one that refuses a duplicate; the existing container keeps its binds.
            self.create_container_raw(container_id, spec_message(config.spec, root_path=guest_rootfs(container_id)))
            return
        state = self._containers[container_id] = _Container()
        try:
            target = self.paths.container_rootfs(container_id)
            self.namespace.bind(config.root, target)
            state.binds.append(target)
            sources: dict[int, str] = {}
            for bind in config.binds:
                name = f"{container_id}-{bind.index}-{bind.source.name or 'root'}"
                readonly = "ro" in (config.spec["mounts"][bind.index].get("options") or [])
                self.namespace.bind(bind.source, self.paths.mounts / name, readonly=readonly)
                state.binds.append(self.paths.mounts / name)
                sources[bind.index] = guest_shared(name)
            spec = spec_message(config.spec, root_path=guest_rootfs(container_id), bind_sources=sources)
            self.create_container_raw(container_id, spec)
        except BaseException:
            self.release(container_id)
            raise

    def create_container_raw(self, container_id: str, spec: Any, exec_id: str | None = None) -> None:
        """CreateContainer with a Spec as given (tests send bad ones on purpose)."""
        self.call("CreateContainer", lambda: self.client.create_container(
            container_id=container_id, exec_id=exec_id if exec_id is not None else container_id, spec=spec,
            timeout=CALL_TIMEOUT), container_id)

    def start_container(self, container_id: str) -> None:
        self.call("StartContainer", lambda: self.client.start_container(container_id, timeout=CALL_TIMEOUT),
                   container_id)

    def exec_process(self, container_id: str, exec_id: str, process: Mapping[str, Any]) -> None:
        """ExecProcess: another process in a running container (`process` as in config.json)."""
        message = process_message(process)
        self.call("ExecProcess", lambda: self.client.exec_process(
            container_id=container_id, exec_id=exec_id, process=message, timeout=CALL_TIMEOUT), container_id)

    def signal(self, container_id: str, exec_id: str, signal_number: int) -> None:
        self.call("SignalProcess", lambda: self.client.signal_process(container_id, exec_id, signal_number,
                                                                       timeout=CALL_TIMEOUT), container_id)

    def wait(self, container_id: str, exec_id: str) -> int:
        return int(self.call("WaitProcess", lambda: self.client.wait_process(container_id, exec_id), container_id))

    def remove_container(self, container_id: str, timeout_seconds: int = 10) -> None:
        """RemoveContainer (the agent kills what still runs within timeout_seconds), then unbind."""
        try:
            self.call("RemoveContainer", lambda: self.client.remove_container(
                container_id, timeout_seconds=timeout_seconds, timeout=CALL_TIMEOUT + timeout_seconds), container_id)
        finally:
            self.release(container_id)

    def release(self, container_id: str) -> None:
        """Unbind a container's root and binds from the share (after RemoveContainer, or a failed create)."""
        state = self._containers.pop(container_id, None)
        for target in reversed(state.binds if state else []):
            try:
                self.namespace.unbind(target)
            except BuildError as exc:  # the namespace goes away at close() in any case
                log.warning("%s", exc)

    # ------------------------------------------------------------------ end

    def destroy(self) -> None:
        """DestroySandbox, then wait for the VM to power off by itself."""
        assert self.vm is not None
        for container_id in list(self._containers):
            self.release(container_id)
        self.call("DestroySandbox", lambda: self.client.destroy_sandbox(timeout=CALL_TIMEOUT))
        powered_off = self.vm.wait_exit(POWER_OFF_SECONDS)
        if powered_off is None:
            raise guest.failure(f"the VM did not power off within {POWER_OFF_SECONDS:.0f} s of DestroySandbox",
                                self.vm)
        self.timings["powered_off"] = round(powered_off, 3)

    def console_tail(self) -> list[str]:
        return guest.relevant_console(self.vm.snapshot()) if self.vm is not None else []

    def close(self) -> None:
        """Stop everything that still runs, in order: the agent connection, QEMU, virtiofsd (which
        exits with QEMU), the namespace (its binds and sockets go with it). One that fails to stop
        does not keep the later ones running."""
        with contextlib.ExitStack() as later:  # exits in reverse: the namespace last
            if self._virtiofsd_log is not None:
                later.callback(self._virtiofsd_log.close)
            later.callback(self.namespace.close)
            if self._virtiofsd is not None:
                later.callback(self._stop_virtiofsd)
            if self.vm is not None:
                later.callback(self.vm.stop)
            if self._client is not None:
                later.callback(self._client.close)

    def _stop_virtiofsd(self) -> None:
        assert self._virtiofsd is not None
        try:
            self._virtiofsd.wait(timeout=5)
        except subprocess.TimeoutExpired:
            runner.terminate(self._virtiofsd, grace=2)
