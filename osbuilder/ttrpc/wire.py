"""The containerd ttRPC wire format: frame header, Request envelope, status codes and the client's errors.

Every message is a 10-byte header followed by a protobuf payload::

    uint32 length (big-endian, payload bytes only, at most 4 MiB)
    uint32 stream id (big-endian; a client numbers its calls 1, 3, 5, ...)
    uint8  type (1 = request, 2 = response)
    uint8  flags

The request payload is ``ttrpc.Request`` (service, method, payload, timeout_nano, metadata); the response
is ``ttrpc.Response`` (status, payload) with the request's stream id.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from osbuilder.ttrpc.protos import ttrpc_pb2

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
MAX_MESSAGE_SIZE = 4 << 20
MESSAGE_TYPE_REQUEST = 1
MESSAGE_TYPE_RESPONSE = 2


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
    """The server answered with a non-OK status; ``message`` is the server's text."""

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
    """The peer closed (or reset) the connection, or the client was closed."""


class TtrpcTimeout(TtrpcError, TimeoutError):
    """No (complete) answer before the deadline."""


@dataclass(frozen=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    payload: bytes


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


def decode_response(payload: bytes) -> ttrpc_pb2.Response:
    resp = ttrpc_pb2.Response()
    try:
        resp.ParseFromString(payload)
    except Exception as exc:  # google.protobuf.message.DecodeError (and RuntimeWarning-like errors)
        raise TtrpcProtocolError(f"undecodable ttrpc.Response: {exc}") from exc
    return resp
