"""A ttRPC client (containerd/ttrpc wire format, see ``wire``) for talking to a Kata agent.

The client works over any connected stream socket: a unix socket (the agent's ``--listen-unix`` socket,
or a QEMU virtio-serial chardev socket whose guest side the agent serves), AF_VSOCK, or "hybrid vsock"
(Firecracker / Cloud Hypervisor: a unix socket on which the host first sends ``CONNECT <port>\\n`` and
gets ``OK <n>\\n``).

Several calls may be in flight on one connection, from several threads: each call gets its own odd
stream id, sends are serialised by a lock, and a reader thread (started by the first call) hands every
response to the caller waiting for its stream id. A call that times out forgets its stream id; the late
answer is dropped. ``close()`` (or the peer closing) fails every pending call with
``TtrpcConnectionClosed``. The typed Kata calls are in ``agent_calls.AgentCalls``.

Timeouts: ``timeout=None`` means the client's ``default_timeout``; ``FOREVER`` (``math.inf``) waits
without a deadline. The calls that block in the agent until something happens (WaitProcess,
ReadStdout/ReadStderr) wait forever by default.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from osbuilder.ttrpc.agent_calls import AGENT_SERVICE, AgentCalls
from osbuilder.ttrpc.protos import agent_pb2, health_pb2, ttrpc_pb2
from osbuilder.ttrpc.wire import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    Code,
    Frame,
    TtrpcConnectionClosed,
    TtrpcError,
    TtrpcProtocolError,
    TtrpcStatusError,
    TtrpcTimeout,
    decode_header,
    decode_response,
    encode_frame,
    encode_request,
)

__all__ = [
    "AGENT_SERVICE",
    "AGENT_VSOCK_PORT",
    "FOREVER",
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

AGENT_VSOCK_PORT = 1024
HEALTH_SERVICE = "grpc.Health"
DEFAULT_TIMEOUT = 30.0
FOREVER = math.inf
RECV_CHUNK = 256 << 10

M = TypeVar("M", bound=Message)


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


class _PendingCall:
    """One call waiting for its response (filled in by the reader thread)."""

    __slots__ = ("done", "error", "response")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: ttrpc_pb2.Response | None = None
        self.error: TtrpcError | None = None


class TtrpcClient(AgentCalls):
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
        self._state_lock = threading.Lock()  # stream ids, the pending table, the closed state
        self._send_lock = threading.Lock()
        self._pending: dict[int, _PendingCall] = {}
        self._reader: threading.Thread | None = None
        self._closed = False
        self._broken: Callable[[], TtrpcError] | None = None  # why the connection can no longer be used

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

    # ------------------------------------------------------------------ lifetime

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def close(self) -> None:
        """Closes the connection; calls still waiting fail with TtrpcConnectionClosed."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            reader = self._reader
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread's recv
        if reader is not None and reader is not threading.current_thread():
            reader.join(10)
        self._sock.close()
        self._fail_pending(lambda: TtrpcConnectionClosed("the ttrpc client was closed"))

    def __enter__(self) -> TtrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sending

    def _deadline(self, timeout: float | None) -> float | None:
        t = self._default_timeout if timeout is None else timeout
        return None if t is None or math.isinf(t) else time.monotonic() + t

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TtrpcTimeout("ttrpc call timed out")
        return remaining

    def _send(self, data: bytes, deadline: float | None) -> None:
        """Sends all of data. The socket stays in blocking mode for the reader thread, so writability
        is awaited with select and each send is non-blocking. A frame cut short breaks the stream."""
        view = memoryview(data)
        with self._send_lock:
            if self._broken is not None:
                raise self._broken()
            sent = 0
            try:
                while sent < len(view):
                    try:
                        _, writable, _ = select.select([], [self._sock], [], self._remaining(deadline))
                    except TtrpcTimeout:
                        writable = []
                    if not writable:
                        raise TtrpcTimeout("sending to the ttrpc server timed out")
                    try:
                        sent += self._sock.send(view[sent:], socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                text = f"connection closed while sending: {exc}"
                self._break(lambda: TtrpcConnectionClosed(text))
                raise TtrpcConnectionClosed(text) from exc
            except (OSError, ValueError) as exc:  # ValueError: the socket was closed under us
                if self._closed:
                    raise TtrpcConnectionClosed("the ttrpc client was closed") from exc
                raise TtrpcProtocolError(f"send failed: {exc}") from exc
            except TtrpcTimeout:
                if sent:
                    self._break(lambda: TtrpcProtocolError("a request was cut short by a send timeout"))
                raise

    def send_raw(self, data: bytes, timeout: float | None = None) -> None:
        """Sends arbitrary bytes (for fuzzing and protocol tests)."""
        self._send(data, self._deadline(timeout))

    # ------------------------------------------------------------------ receiving

    def _fill(self, n: int, deadline: float | None, blocking: bool) -> None:
        while len(self._buf) < n:
            try:
                if not blocking:
                    self._sock.settimeout(self._remaining(deadline))
                chunk = self._sock.recv(max(RECV_CHUNK, n - len(self._buf)))
            except TimeoutError as exc:
                raise TtrpcTimeout("waiting for the ttrpc server timed out") from exc
            except ConnectionResetError as exc:
                raise TtrpcConnectionClosed(f"connection reset: {exc}") from exc
            except OSError as exc:
                if self._closed:
                    raise TtrpcConnectionClosed("the ttrpc client was closed") from exc
                raise TtrpcProtocolError(f"receive failed: {exc}") from exc
            if not chunk:
                if self._closed:
                    raise TtrpcConnectionClosed("the ttrpc client was closed")
                raise TtrpcConnectionClosed(
                    "connection closed by the peer" + (f" ({len(self._buf)} bytes of a frame pending)"
                                                       if self._buf else ""))
            self._buf += chunk

    def _next_frame(self, deadline: float | None, blocking: bool) -> Frame:
        self._fill(HEADER_SIZE, deadline, blocking)
        length, stream_id, msg_type, flags = decode_header(bytes(self._buf[:HEADER_SIZE]))
        if length > self._max:
            raise TtrpcProtocolError(f"frame of {length} bytes exceeds the {self._max} byte limit")
        self._fill(HEADER_SIZE + length, deadline, blocking)
        payload = bytes(self._buf[HEADER_SIZE:HEADER_SIZE + length])
        del self._buf[:HEADER_SIZE + length]
        return Frame(stream_id, msg_type, flags, payload)

    def read_frame(self, timeout: float | None = None) -> Frame:
        """Reads one frame directly (low-level tests; only before the first call() starts the reader
        thread). A partial frame stays buffered when this times out."""
        if self._reader is not None:
            raise TtrpcProtocolError("read_frame is not available once calls are in flight "
                                     "(the reader thread owns the socket)")
        return self._next_frame(self._deadline(timeout), blocking=False)

    def read_response(self, timeout: float | None = None) -> tuple[int, ttrpc_pb2.Response]:
        """Reads one response frame directly: (stream id, decoded ttrpc.Response)."""
        frame = self.read_frame(timeout)
        if frame.type != MESSAGE_TYPE_RESPONSE:
            raise TtrpcProtocolError(f"expected a response frame, got type {frame.type}")
        return frame.stream_id, decode_response(frame.payload)

    # ------------------------------------------------------------------ the reader thread

    def _start_reader(self) -> None:
        """Called with _state_lock held."""
        if self._reader is None:
            self._sock.settimeout(None)
            self._reader = threading.Thread(target=self._read_loop, name="ttrpc-reader", daemon=True)
            self._reader.start()

    def _read_loop(self) -> None:
        try:
            while True:
                frame = self._next_frame(None, blocking=True)
                self._dispatch(frame)
        except TtrpcStatusError as exc:
            code, message = exc.code, exc.message
            self._break(lambda: TtrpcStatusError(code, message))
        except TtrpcError as exc:
            kind, text = type(exc), str(exc)
            self._break(lambda: kind(text))

    def _dispatch(self, frame: Frame) -> None:
        if frame.type != MESSAGE_TYPE_RESPONSE:
            raise TtrpcProtocolError(f"expected a response frame, got type {frame.type}")
        resp = decode_response(frame.payload)
        with self._state_lock:
            call = self._pending.pop(frame.stream_id, None)
            issued = frame.stream_id % 2 == 1 and frame.stream_id < self._next_stream_id
        if call is not None:
            call.response = resp
            call.done.set()
            return
        if issued:
            return  # the late answer to a call that timed out
        if resp.HasField("status") and resp.status.code != Code.OK:
            # a connection-level error the server reports before closing (e.g. on stream 0)
            raise TtrpcStatusError(resp.status.code, resp.status.message)
        raise TtrpcProtocolError(f"response for stream {frame.stream_id}, which no call used")

    def _break(self, make_error: Callable[[], TtrpcError]) -> None:
        """The connection can no longer carry calls: fail the pending ones and every later one."""
        with self._state_lock:
            if self._broken is None:
                self._broken = make_error
        self._fail_pending(make_error)

    def _fail_pending(self, make_error: Callable[[], TtrpcError]) -> None:
        with self._state_lock:
            calls = list(self._pending.values())
            self._pending.clear()
            if self._broken is None:
                self._broken = make_error
        for call in calls:
            call.error = make_error()
            call.done.set()

    # ------------------------------------------------------------------ calls

    def _take_stream_id(self) -> int:
        sid = self._next_stream_id
        if sid > 0xFFFFFFFF:
            raise TtrpcProtocolError("stream ids exhausted; open a new connection")
        self._next_stream_id += 2
        return sid

    def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> M:
        """One unary call; safe to use from several threads at once. ``timeout``: seconds, None for the
        client's default, FOREVER for none. Raises TtrpcStatusError, TtrpcProtocolError (including
        TtrpcConnectionClosed) or TtrpcTimeout."""
        deadline = self._deadline(timeout)
        effective = None if deadline is None else deadline - time.monotonic()
        body = encode_request(service, method, request.SerializeToString(), effective, metadata)
        if len(body) > self._max:
            raise TtrpcProtocolError(f"{service}/{method}: request of {len(body)} bytes exceeds the "
                                     f"{self._max} byte limit")
        pending = _PendingCall()
        with self._state_lock:
            if self._closed:
                raise TtrpcConnectionClosed("the ttrpc client was closed")
            if self._broken is not None:
                raise self._broken()
            sid = self._take_stream_id()
            self._pending[sid] = pending
            self._start_reader()
        try:
            self._send(encode_frame(sid, MESSAGE_TYPE_REQUEST, body), deadline)
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not pending.done.wait(wait):
                raise TtrpcTimeout(f"{service}/{method}: no answer within {effective:.3g} s")
        finally:
            with self._state_lock:
                self._pending.pop(sid, None)
        if pending.error is not None:
            raise pending.error
        resp = pending.response
        assert resp is not None
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
