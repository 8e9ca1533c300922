"""A small synchronous ttRPC client (containerd/ttrpc wire format) for talking to a Kata agent.

Wire format: every message is a 10-byte header followed by a protobuf payload::

    uint32 length (big-endian, payload bytes only, at most 4 MiB)
    uint32 stream id (big-endian; the client uses odd ids 1, 3, 5, ...)
    uint8  type (1 = request, 2 = response)
    uint8  flags

The request payload is ``ttrpc.Request`` (service, method, payload, timeout_nano, metadata); the response
is ``ttrpc.Response`` (status, payload) with the request's stream id. Kata's services are
``grpc.Health`` and ``grpc.AgentService``.

The client works over any connected stream socket: a unix socket (the agent's ``--listen-unix`` socket,
or a QEMU virtio-serial chardev socket whose guest side the agent serves), AF_VSOCK, or "hybrid vsock"
(Firecracker / Cloud Hypervisor: a unix socket on which the host first sends ``CONNECT <port>\\n`` and
gets ``OK <n>\\n``). One call is in flight at a time; calls are serialised by a lock.
"""

from __future__ import annotations

import enum
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from osbuilder.ttrpc.protos import agent_pb2, health_pb2, ttrpc_pb2

__all__ = [
    "AGENT_SERVICE",
    "AGENT_VSOCK_PORT",
    "HEADER_SIZE",
    "HEALTH_SERVICE",
    "MAX_MESSAGE_SIZE",
    "MESSAGE_TYPE_REQUEST",
    "MESSAGE_TYPE_RESPONSE",
    "Code",
    "Frame",
    "GuestDetails",
    "TtrpcClient",
    "TtrpcConnectionClosed",
    "TtrpcError",
    "TtrpcProtocolError",
    "TtrpcStatusError",
    "TtrpcTimeout",
    "VersionInfo",
    "decode_header",
    "encode_frame",
    "encode_request",
]

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
MAX_MESSAGE_SIZE = 4 << 20
MESSAGE_TYPE_REQUEST = 1
MESSAGE_TYPE_RESPONSE = 2
AGENT_VSOCK_PORT = 1024
HEALTH_SERVICE = "grpc.Health"
AGENT_SERVICE = "grpc.AgentService"
DEFAULT_TIMEOUT = 30.0

M = TypeVar("M", bound=Message)


class Code(enum.IntEnum):
    """google.rpc.Code."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(Exception):
    """Base class of the client's errors."""


class TtrpcStatusError(TtrpcError):
    """The server answered with a non-OK status."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"ttrpc status {self.code_name} ({code}): {message}")

    @property
    def code_name(self) -> str:
        try:
            return Code(self.code).name
        except ValueError:
            return "UNKNOWN_CODE"


class TtrpcProtocolError(TtrpcError):
    """The byte stream does not follow the ttRPC protocol (or the connection broke)."""


class TtrpcConnectionClosed(TtrpcProtocolError):
    """The peer closed (or reset) the connection."""


class TtrpcTimeout(TtrpcError, TimeoutError):
    """No (complete) answer before the deadline."""


@dataclass(frozen=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    payload: bytes


@dataclass(frozen=True)
class VersionInfo:
    grpc_version: str
    agent_version: str


@dataclass(frozen=True)
class GuestDetails:
    mem_block_size_bytes: int
    support_mem_hotplug_probe: bool
    agent_version: str
    init_daemon: bool
    device_handlers: tuple[str, ...]
    storage_handlers: tuple[str, ...]
    supports_seccomp: bool
    extra_features: tuple[str, ...]


def encode_frame(stream_id: int, msg_type: int, payload: bytes, flags: int = 0) -> bytes:
    """Header + payload. Does not enforce the size limit (tests use it to build bad frames)."""
    return HEADER.pack(len(payload), stream_id, msg_type, flags) + payload


def decode_header(data: bytes) -> tuple[int, int, int, int]:
    """(length, stream_id, type, flags) of a 10-byte header."""
    if len(data) != HEADER_SIZE:
        raise TtrpcProtocolError(f"a ttrpc header is {HEADER_SIZE} bytes, got {len(data)}")
    length, stream_id, msg_type, flags = HEADER.unpack(data)
    return length, stream_id, msg_type, flags


def encode_request(
    service: str,
    method: str,
    payload: bytes,
    timeout: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Serialized ttrpc.Request."""
    req = ttrpc_pb2.Request(service=service, method=method, payload=payload)
    if timeout is not None and timeout > 0:
        req.timeout_nano = int(timeout * 1e9)
    for key, value in (metadata or {}).items():
        req.metadata.add(key=key, value=value)
    return req.SerializeToString()


class TtrpcClient:
    """ttRPC client over a connected stream socket (the client owns and closes it)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        default_timeout: float | None = DEFAULT_TIMEOUT,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self._sock = sock
        self._default_timeout = default_timeout
        self._max = max_message_size
        self._buf = bytearray()
        self._next_stream_id = 1
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ constructors

    @classmethod
    def connect_unix(cls, path: str | bytes, *, timeout: float = 10.0,
                     default_timeout: float | None = DEFAULT_TIMEOUT) -> TtrpcClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except TimeoutError as exc:
            sock.close()
            raise TtrpcTimeout(f"connecting to {path!r} timed out") from exc
        except OSError:
            sock.close()
            raise
        return cls(sock, default_timeout=default_timeout)

    @classmethod
    def connect_vsock(cls, cid: int, port: int = AGENT_VSOCK_PORT, *, timeout: float = 10.0,
                      default_timeout: float | None = DEFAULT_TIMEOUT) -> TtrpcClient:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((cid, port))
        except TimeoutError as exc:
            sock.close()
            raise TtrpcTimeout(f"connecting to vsock {cid}:{port} timed out") from exc
        except OSError:
            sock.close()
            raise
        return cls(sock, default_timeout=default_timeout)

    @classmethod
    def connect_hybrid_vsock(cls, path: str | bytes, port: int = AGENT_VSOCK_PORT, *, timeout: float = 10.0,
                             default_timeout: float | None = DEFAULT_TIMEOUT) -> TtrpcClient:
        """Firecracker / Cloud Hypervisor: ``CONNECT <port>\\n`` on the unix socket, expect ``OK <n>\\n``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(f"CONNECT {port}\n".encode())
            line = bytearray()
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                b = sock.recv(1)  # byte by byte: nothing after the line may be consumed here
                if not b:
                    raise TtrpcConnectionClosed(f"hybrid vsock {path!r}: closed during CONNECT {port}")
                line += b
                if len(line) > 128:
                    raise TtrpcProtocolError(f"hybrid vsock {path!r}: overlong handshake reply")
            words = line.decode("ascii", "replace").split()
            if len(words) != 2 or words[0] != "OK" or not words[1].isdigit():
                raise TtrpcProtocolError(f"hybrid vsock {path!r}: CONNECT {port} refused: {line!r}")
        except TimeoutError as exc:
            sock.close()
            raise TtrpcTimeout(f"hybrid vsock {path!r}: CONNECT {port} timed out") from exc
        except BaseException:
            sock.close()
            raise
        return cls(sock, default_timeout=default_timeout)

    # ------------------------------------------------------------------ plumbing

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

    def __enter__(self) -> TtrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deadline(self, timeout: float | None) -> float | None:
        t = self._default_timeout if timeout is None else timeout
        return None if t is None else time.monotonic() + t

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TtrpcTimeout("ttrpc call timed out")
        return remaining

    def _send(self, data: bytes, deadline: float | None) -> None:
        try:
            self._sock.settimeout(self._remaining(deadline))
            self._sock.sendall(data)
        except TimeoutError as exc:
            raise TtrpcTimeout("sending to the ttrpc server timed out") from exc
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise TtrpcConnectionClosed(f"connection closed while sending: {exc}") from exc
        except OSError as exc:
            raise TtrpcProtocolError(f"send failed: {exc}") from exc

    def _fill(self, n: int, deadline: float | None) -> None:
        while len(self._buf) < n:
            try:
                self._sock.settimeout(self._remaining(deadline))
                chunk = self._sock.recv(max(65536, n - len(self._buf)))
            except TimeoutError as exc:
                raise TtrpcTimeout("waiting for the ttrpc server timed out") from exc
            except ConnectionResetError as exc:
                raise TtrpcConnectionClosed(f"connection reset: {exc}") from exc
            except OSError as exc:
                raise TtrpcProtocolError(f"receive failed: {exc}") from exc
            if not chunk:
                raise TtrpcConnectionClosed(
                    "connection closed by the peer" + (f" ({len(self._buf)} bytes of a frame pending)"
                                                       if self._buf else ""))
            self._buf += chunk

    def send_raw(self, data: bytes, timeout: float | None = None) -> None:
        """Sends arbitrary bytes (for fuzzing and protocol tests)."""
        self._send(data, self._deadline(timeout))

    def read_frame(self, timeout: float | None = None) -> Frame:
        """Reads one frame. A partial frame stays buffered when this times out."""
        deadline = self._deadline(timeout)
        self._fill(HEADER_SIZE, deadline)
        length, stream_id, msg_type, flags = decode_header(bytes(self._buf[:HEADER_SIZE]))
        if length > self._max:
            raise TtrpcProtocolError(f"frame of {length} bytes exceeds the {self._max} byte limit")
        self._fill(HEADER_SIZE + length, deadline)
        payload = bytes(self._buf[HEADER_SIZE:HEADER_SIZE + length])
        del self._buf[:HEADER_SIZE + length]
        return Frame(stream_id, msg_type, flags, payload)

    def read_response(self, timeout: float | None = None) -> tuple[int, ttrpc_pb2.Response]:
        """Reads one response frame: (stream id, decoded ttrpc.Response)."""
        frame = self.read_frame(timeout)
        if frame.type != MESSAGE_TYPE_RESPONSE:
            raise TtrpcProtocolError(f"expected a response frame, got type {frame.type}")
        resp = ttrpc_pb2.Response()
        try:
            resp.ParseFromString(frame.payload)
        except DecodeError as exc:
            raise TtrpcProtocolError(f"undecodable ttrpc.Response: {exc}") from exc
        return frame.stream_id, resp

    def _take_stream_id(self) -> int:
        sid = self._next_stream_id
        if sid > 0xFFFFFFFF:
            raise TtrpcProtocolError("stream ids exhausted; open a new connection")
        self._next_stream_id += 2
        return sid

    # ------------------------------------------------------------------ calls

    def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> M:
        """One unary call. Raises TtrpcStatusError, TtrpcProtocolError or TtrpcTimeout."""
        with self._lock:
            if self._closed:
                raise TtrpcConnectionClosed("client is closed")
            deadline = self._deadline(timeout)
            effective = None if deadline is None else deadline - time.monotonic()
            body = encode_request(service, method, request.SerializeToString(), effective, metadata)
            if len(body) > self._max:
                raise TtrpcProtocolError(f"request of {len(body)} bytes exceeds the {self._max} byte limit")
            sid = self._take_stream_id()
            self._send(encode_frame(sid, MESSAGE_TYPE_REQUEST, body), deadline)
            while True:
                got_sid, resp = self.read_response(None if deadline is None
                                                   else max(deadline - time.monotonic(), 0.0))
                if got_sid == sid:
                    break
                if got_sid < sid and got_sid % 2 == 1:
                    continue  # late answer to an earlier call that timed out
                if resp.HasField("status") and resp.status.code != Code.OK:
                    # a connection-level error the server reports before closing (e.g. on stream 0)
                    raise TtrpcStatusError(resp.status.code, resp.status.message)
                raise TtrpcProtocolError(f"response for unknown stream {got_sid} (expected {sid})")
            if resp.HasField("status") and resp.status.code != Code.OK:
                raise TtrpcStatusError(resp.status.code, resp.status.message)
            out = response_type()
            try:
                out.ParseFromString(resp.payload)
            except DecodeError as exc:
                raise TtrpcProtocolError(
                    f"{service}/{method}: undecodable {response_type.__name__}: {exc}") from exc
            return out

    def check(self, timeout: float | None = None) -> int:
        """grpc.Health/Check: the HealthCheckResponse.ServingStatus value (SERVING = 1)."""
        resp = self.call(HEALTH_SERVICE, "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse,
                         timeout)
        return int(resp.status)

    def is_serving(self, timeout: float | None = None) -> bool:
        return self.check(timeout) == health_pb2.HealthCheckResponse.SERVING

    def version(self, timeout: float | None = None) -> VersionInfo:
        """grpc.Health/Version."""
        resp = self.call(HEALTH_SERVICE, "Version", health_pb2.CheckRequest(),
                         health_pb2.VersionCheckResponse, timeout)
        return VersionInfo(grpc_version=resp.grpc_version, agent_version=resp.agent_version)

    def guest_details(self, mem_block_size: bool = True, mem_hotplug_probe: bool = True,
                      timeout: float | None = None) -> GuestDetails:
        """grpc.AgentService/GetGuestDetails."""
        req = agent_pb2.GuestDetailsRequest(mem_block_size=mem_block_size, mem_hotplug_probe=mem_hotplug_probe)
        resp = self.call(AGENT_SERVICE, "GetGuestDetails", req, agent_pb2.GuestDetailsResponse, timeout)
        d = resp.agent_details
        return GuestDetails(
            mem_block_size_bytes=resp.mem_block_size_bytes,
            support_mem_hotplug_probe=resp.support_mem_hotplug_probe,
            agent_version=d.version,
            init_daemon=d.init_daemon,
            device_handlers=tuple(d.device_handlers),
            storage_handlers=tuple(d.storage_handlers),
            supports_seccomp=d.supports_seccomp,
            extra_features=tuple(d.extra_features),
        )

    def destroy_sandbox(self, timeout: float | None = None) -> None:
        """grpc.AgentService/DestroySandbox: the agent replies, then powers off (PID 1) or exits."""
        from google.protobuf import empty_pb2

        self.call(AGENT_SERVICE, "DestroySandbox", agent_pb2.DestroySandboxRequest(), empty_pb2.Empty, timeout)
