"""Fuzzing the agent over unix-socket connections: random and mutated frames must never crash it, its
replies must always be well-formed ttRPC responses, and it must keep serving new connections.

Runs against the release build (musl, static) and, when gcc can, an AddressSanitizer/UBSan build."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osbuilder.ttrpc.client import (
    HEADER_SIZE,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    decode_header,
    encode_frame,
    encode_request,
)
from osbuilder.ttrpc.protos import agent_pb2, health_pb2, ttrpc_pb2

if TYPE_CHECKING:
    from conftest import AgentProcess, Harness  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.integration

# Longer or different runs: OSB_AGENT_FUZZ_SESSIONS=20000 OSB_AGENT_FUZZ_SEED=7 pytest tests/agent/test_agent_fuzz.py
SEED = int(os.environ.get("OSB_AGENT_FUZZ_SEED", "20240611"))
SESSIONS = int(os.environ.get("OSB_AGENT_FUZZ_SESSIONS", "1000"))
# OK, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, RESOURCE_EXHAUSTED,
# FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL
KNOWN_CODES = {0, 3, 4, 5, 6, 8, 9, 12, 13}


@pytest.fixture(scope="module", params=["musl-static", "sanitizers"])
def fuzz_agent(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               harness: type[Harness]) -> Iterator[AgentProcess]:
    """The agent under fuzzing; in its own namespaces (and with "/" read-only there) when this host allows,
    since fuzzed requests set hostnames, mount storages and configure interfaces."""
    binary: Path = request.getfixturevalue(
        "agent_binary" if request.param == "musl-static" else "sanitizer_binary")
    workdir = tmp_path_factory.mktemp("fuzz")
    prefix = harness.namespaced_prefix(workdir) if harness.namespaces_usable() is None else []
    agent = harness.start_agent(binary, workdir, prefix=prefix)
    yield agent
    agent.assert_clean_stop()


def valid_frames(sid: int) -> list[bytes]:
    calls = [
        ("grpc.Health", "Check", health_pb2.CheckRequest(service="x").SerializeToString()),
        ("grpc.Health", "Version", b""),
        ("grpc.AgentService", "GetGuestDetails",
         agent_pb2.GuestDetailsRequest(mem_block_size=True, mem_hotplug_probe=True).SerializeToString()),
        ("grpc.AgentService", "CreateContainer", b"\x0a\x03abc"),
        ("grpc.Nope", "Nope", b""),
    ]
    return [encode_frame(sid, MESSAGE_TYPE_REQUEST, encode_request(s, m, p, timeout=1.0, metadata={"k": "v"}))
            for s, m, p in calls]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        if op == 0 and b:  # bit flip
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:  # insertion
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and b:  # deletion
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
        elif op == 4 and b:  # truncation
            del b[rng.randrange(len(b)):]
        elif op == 5 and len(b) >= HEADER_SIZE:  # header length field
            b[0:4] = struct.pack(">I", rng.choice([0, 1, len(b) - HEADER_SIZE + rng.randint(-3, 3) & 0xFFFFFFFF,
                                                   rng.randrange(2**32), (4 << 20) + 1]))
        elif op == 6 and len(b) >= HEADER_SIZE:  # type / flags / stream id
            b[rng.choice([4, 7, 8, 9])] = rng.randrange(256)
        elif op == 7:  # duplicate a chunk
            i = rng.randrange(len(b) + 1)
            b[i:i] = b[i:i + rng.randint(1, 32)]
    return bytes(b)


def random_session(rng: random.Random) -> bytes:
    parts: list[bytes] = []
    sid = 1
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        frames = valid_frames(sid)
        sid += 2
        if r < 0.25:
            parts.append(rng.choice(frames))
        elif r < 0.7:
            parts.append(mutate(rng, rng.choice(frames)))
        elif r < 0.85:
            parts.append(rng.randbytes(rng.randint(0, 64)))
        else:
            payload = rng.randbytes(rng.randint(0, 2000))
            parts.append(struct.pack(">IIBB", len(payload), rng.randrange(2**32), rng.choice([1, 1, 2, 0, 9]),
                                     rng.randrange(256)) + payload)
    return b"".join(parts)


def parse_replies(data: bytes) -> list[tuple[int, int]]:
    """Every byte the agent sent must form complete, decodable response frames."""
    out = []
    off = 0
    while off < len(data):
        assert len(data) - off >= HEADER_SIZE, f"truncated header in reply stream: {data[off:]!r}"
        length, sid, typ, flags = decode_header(data[off:off + HEADER_SIZE])
        assert typ == MESSAGE_TYPE_RESPONSE and flags == 0
        body = data[off + HEADER_SIZE:off + HEADER_SIZE + length]
        assert len(body) == length, "truncated reply frame"
        resp = ttrpc_pb2.Response()
        resp.ParseFromString(body)  # raises on garbage; strings must be valid UTF-8
        assert resp.status.code in KNOWN_CODES, resp
        out.append((sid, resp.status.code))
        off += HEADER_SIZE + length
    return out


def read_to_eof(s: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_seeded_fuzz_sessions(fuzz_agent: AgentProcess) -> None:
    rng = random.Random(SEED)
    replies = 0
    for i in range(SESSIONS):
        data = random_session(rng)
        s = fuzz_agent.raw_socket(timeout=10)
        try:
            mode = rng.random()
            try:
                s.sendall(data)
                if mode < 0.75:
                    s.shutdown(socket.SHUT_WR)
                    replies += len(parse_replies(read_to_eof(s)))
                elif mode < 0.9:
                    s.settimeout(0.02)
                    with contextlib.suppress(TimeoutError):
                        s.recv(100)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the agent already rejected the stream and closed
        finally:
            s.close()
        if i % 50 == 0:
            fuzz_agent.assert_serving()
    assert replies > SESSIONS // 2  # the agent really answered (valid frames and error replies)
    fuzz_agent.assert_serving()
    with fuzz_agent.connect() as c:
        assert c.version().grpc_version == "0.0.1"
        assert c.guest_details().agent_version


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=400), close_early=st.booleans())
def test_hypothesis_blobs(fuzz_agent: AgentProcess, blob: bytes, close_early: bool) -> None:
    s = fuzz_agent.raw_socket(timeout=10)
    try:
        try:
            s.sendall(blob)
            if not close_early:
                s.shutdown(socket.SHUT_WR)
                parse_replies(read_to_eof(s))
        except (BrokenPipeError, ConnectionResetError):
            pass
    finally:
        s.close()
    fuzz_agent.assert_serving()
