"""The serial-stream transport, exercised through a pty (--serial-path) since no VM runs here.

On a virtio-serial port the agent behaves the same way; the port discovery through
/sys/class/virtio-ports/*/name and the host (dis)connect handling are only exercised in a real guest."""

from __future__ import annotations

import os
import pty
import select
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from osbuilder.ttrpc.client import (
    HEADER_SIZE,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    decode_header,
    encode_frame,
    encode_request,
)
from osbuilder.ttrpc.protos import health_pb2, ttrpc_pb2

if TYPE_CHECKING:
    from conftest import AgentProcess, Harness  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.integration

QUIET_S = 0.2  # SERIAL_QUIET_MS in agent/src/server.c


class Pty:
    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()  # the test keeps the slave open: the pty survives reopens
        self.path = os.ttyname(self.slave)
        self.buf = b""

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_exactly(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"got {len(self.buf)} of {n} bytes")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    self.buf += os.read(self.master, 65536)
                except OSError:  # EIO while the agent has the slave closed
                    time.sleep(0.01)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self) -> tuple[int, ttrpc_pb2.Response]:
        length, sid, typ, _ = decode_header(self.read_exactly(HEADER_SIZE))
        assert typ == MESSAGE_TYPE_RESPONSE
        return sid, ttrpc_pb2.Response.FromString(self.read_exactly(length))

    def nothing_for(self, seconds: float) -> bool:
        r, _, _ = select.select([self.master], [], [], seconds)
        return not r and not self.buf

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def check_frame(sid: int) -> bytes:
    return encode_frame(sid, MESSAGE_TYPE_REQUEST, encode_request("grpc.Health", "Check", b""))


@pytest.fixture
def serial_agent(agent_binary: Path, tmp_path: Path, harness: type[Harness]) -> Iterator[tuple[AgentProcess, Pty]]:
    p = Pty()
    agent = harness.start_agent(agent_binary, tmp_path, "--serial-path", p.path)
    yield agent, p
    code, err = agent.stop()
    p.close()
    assert code == 0, err


def test_serial_stream_serves_requests(serial_agent: tuple[AgentProcess, Pty]) -> None:
    _, p = serial_agent
    p.write(check_frame(1) + check_frame(3))
    for want in (1, 3):
        sid, resp = p.response()
        assert sid == want and resp.status.code == 0
        assert health_pb2.HealthCheckResponse.FromString(resp.payload).status == 1


def test_serial_resync_after_malformed_frame(serial_agent: tuple[AgentProcess, Pty]) -> None:
    agent, p = serial_agent
    p.write(encode_frame(5, 7, b"junk"))  # unknown message type
    sid, resp = p.response()
    assert sid == 5 and resp.status.code == 3
    # Anything sent before the line has been quiet for QUIET_S is discarded, even a valid request.
    p.write(b"\x00\x00\x00\x01garbage" + check_frame(7))
    assert p.nothing_for(3 * QUIET_S)
    time.sleep(2 * QUIET_S)
    p.write(check_frame(9))
    sid, resp = p.response()
    assert sid == 9 and resp.status.code == 0
    # the unix socket was served throughout
    with agent.connect() as c:
        assert c.check() == 1
    code, err = agent.stop()
    assert code == 0
    assert "protocol error; resynchronising" in err, err


def test_serial_oversized_frame_resyncs(serial_agent: tuple[AgentProcess, Pty]) -> None:
    _, p = serial_agent
    p.write(b"\xff\xff\xff\xff\x00\x00\x00\x0b\x01\x00")
    sid, resp = p.response()
    assert sid == 11 and resp.status.code == 8
    time.sleep(3 * QUIET_S)
    p.write(check_frame(13))
    sid, resp = p.response()
    assert sid == 13 and resp.status.code == 0
