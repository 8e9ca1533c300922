"""Typed calls of the Kata agent's sandbox and container lifecycle (``grpc.AgentService``).

Mixed into ``client.TtrpcClient``, which provides ``call``. Every call raises
``TtrpcStatusError`` (``.code``, ``.message``: the agent names the field or the id it refuses),
``TtrpcTimeout`` or ``TtrpcProtocolError`` / ``TtrpcConnectionClosed``.

``timeout`` is the client-side deadline in seconds: None means the client's default, except for the
calls that block in the agent until the workload does something (``wait_process``, ``read_stdout``,
``read_stderr``, ``remove_container`` with ``timeout_seconds=0``), where None waits forever.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

from google.protobuf import empty_pb2
from google.protobuf.message import Message

from osbuilder.ttrpc.protos import agent_pb2, oci_pb2, types_pb2

AGENT_SERVICE = "grpc.AgentService"
DEFAULT_READ_LENGTH = 65536
# RemoveContainer with a timeout: the agent answers within timeout_seconds; allow this much more.
REMOVE_MARGIN = 10.0

M = TypeVar("M", bound=Message)


def _forever_if_none(timeout: float | None) -> float:
    return math.inf if timeout is None else timeout


class AgentCalls:
    """The typed AgentService calls (the contract ``osbuilder run`` codes against)."""

    def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> M:
        raise NotImplementedError

    def _agent(self, method: str, request: Message, response_type: type[M], timeout: float | None) -> M:
        return self.call(AGENT_SERVICE, method, request, response_type, timeout)

    # ------------------------------------------------------------------ network (before the sandbox)

    def update_interface(self, interface: types_pb2.Interface, timeout: float | None = None) -> types_pb2.Interface:
        """UpdateInterface: configure (addresses, MTU, up) an interface that exists in the guest."""
        req = agent_pb2.UpdateInterfaceRequest(interface=interface)
        return self._agent("UpdateInterface", req, types_pb2.Interface, timeout)

    def update_routes(self, routes: Sequence[types_pb2.Route], timeout: float | None = None) -> list[types_pb2.Route]:
        """UpdateRoutes: add the routes; returns the routes the agent reports as set."""
        req = agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=list(routes)))
        return list(self._agent("UpdateRoutes", req, agent_pb2.Routes, timeout).Routes)

    def add_arp_neighbors(self, neighbors: Sequence[types_pb2.ARPNeighbor], timeout: float | None = None) -> None:
        req = agent_pb2.AddARPNeighborsRequest(neighbors=agent_pb2.ARPNeighbors(ARPNeighbors=list(neighbors)))
        self._agent("AddARPNeighbors", req, empty_pb2.Empty, timeout)

    # ------------------------------------------------------------------ sandbox

    def create_sandbox(self, *, hostname: str, sandbox_id: str, storages: Sequence[agent_pb2.Storage] = (),
                       dns: Sequence[str] = (), timeout: float | None = None) -> None:
        """CreateSandbox: hostname, and the storages (virtio-fs / 9p shares) mounted at their mount points."""
        req = agent_pb2.CreateSandboxRequest(hostname=hostname, sandbox_id=sandbox_id, storages=list(storages),
                                             dns=list(dns))
        self._agent("CreateSandbox", req, empty_pb2.Empty, timeout)

    def destroy_sandbox(self, timeout: float | None = None) -> None:
        """DestroySandbox: the agent tears the containers down, replies, then powers off (PID 1) or exits."""
        self._agent("DestroySandbox", agent_pb2.DestroySandboxRequest(), empty_pb2.Empty, timeout)

    # ------------------------------------------------------------------ containers

    def create_container(self, *, container_id: str, exec_id: str, spec: oci_pb2.Spec,
                         storages: Sequence[agent_pb2.Storage] = (), timeout: float | None = None) -> None:
        """CreateContainer: the container is set up and its process waits for start_container."""
        req = agent_pb2.CreateContainerRequest(container_id=container_id, exec_id=exec_id, OCI=spec,
                                               storages=list(storages))
        self._agent("CreateContainer", req, empty_pb2.Empty, timeout)

    def start_container(self, container_id: str, timeout: float | None = None) -> None:
        self._agent("StartContainer", agent_pb2.StartContainerRequest(container_id=container_id),
                    empty_pb2.Empty, timeout)

    def exec_process(self, *, container_id: str, exec_id: str, process: oci_pb2.Process,
                     timeout: float | None = None) -> None:
        """ExecProcess: run another process in the running container's namespaces and cgroup."""
        req = agent_pb2.ExecProcessRequest(container_id=container_id, exec_id=exec_id, process=process)
        self._agent("ExecProcess", req, empty_pb2.Empty, timeout)

    def wait_process(self, container_id: str, exec_id: str, timeout: float | None = None) -> int:
        """WaitProcess: the exit code, or 128 + the signal number. ``timeout=None`` waits forever."""
        req = agent_pb2.WaitProcessRequest(container_id=container_id, exec_id=exec_id)
        return int(self._agent("WaitProcess", req, agent_pb2.WaitProcessResponse, _forever_if_none(timeout)).status)

    def read_stdout(self, container_id: str, exec_id: str, length: int = DEFAULT_READ_LENGTH,
                    timeout: float | None = None) -> bytes:
        """ReadStdout: up to ``length`` bytes as soon as some are there; b"" at the end of the stream.
        ``timeout=None`` waits forever."""
        return self._read_stream("ReadStdout", container_id, exec_id, length, timeout)

    def read_stderr(self, container_id: str, exec_id: str, length: int = DEFAULT_READ_LENGTH,
                    timeout: float | None = None) -> bytes:
        """ReadStderr: as read_stdout."""
        return self._read_stream("ReadStderr", container_id, exec_id, length, timeout)

    def _read_stream(self, method: str, container_id: str, exec_id: str, length: int,
                     timeout: float | None) -> bytes:
        req = agent_pb2.ReadStreamRequest(container_id=container_id, exec_id=exec_id, len=length)
        return bytes(self._agent(method, req, agent_pb2.ReadStreamResponse, _forever_if_none(timeout)).data)

    def write_stdin(self, container_id: str, exec_id: str, data: bytes, timeout: float | None = None) -> int:
        """WriteStdin: the agent answers once all of data is in the process's stdin pipe; returns its length."""
        req = agent_pb2.WriteStreamRequest(container_id=container_id, exec_id=exec_id, data=data)
        return int(self._agent("WriteStdin", req, agent_pb2.WriteStreamResponse, timeout).len)

    def close_stdin(self, container_id: str, exec_id: str, timeout: float | None = None) -> None:
        """CloseStdin: the process reads end-of-file once the data written before has been read."""
        req = agent_pb2.CloseStdinRequest(container_id=container_id, exec_id=exec_id)
        self._agent("CloseStdin", req, empty_pb2.Empty, timeout)

    def signal_process(self, container_id: str, exec_id: str, signal: int, timeout: float | None = None) -> None:
        """SignalProcess; an empty exec_id signals every process of the container."""
        req = agent_pb2.SignalProcessRequest(container_id=container_id, exec_id=exec_id, signal=signal)
        self._agent("SignalProcess", req, empty_pb2.Empty, timeout)

    def remove_container(self, container_id: str, timeout_seconds: int = 0, timeout: float | None = None) -> None:
        """RemoveContainer: kills what still runs (SIGKILL), waits up to ``timeout_seconds`` for it to die
        (0: as long as it takes, as the Go runtime asks), unmounts and forgets the container.
        ``timeout=None``: forever when timeout_seconds is 0, else timeout_seconds + 10 s."""
        if timeout is None:
            timeout = math.inf if timeout_seconds == 0 else timeout_seconds + REMOVE_MARGIN
        req = agent_pb2.RemoveContainerRequest(container_id=container_id, timeout=timeout_seconds)
        self._agent("RemoveContainer", req, empty_pb2.Empty, timeout)
