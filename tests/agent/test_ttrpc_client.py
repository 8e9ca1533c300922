"""Pure-Python tests of the ttRPC codec, the .proto field numbers and the client (no agent binary)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.protobuf import empty_pb2
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from osbuilder.ttrpc.client import (
    HEADER_SIZE,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    Code,
    TtrpcClient,
    TtrpcConnectionClosed,
    TtrpcProtocolError,
    TtrpcStatusError,
    TtrpcTimeout,
    decode_header,
    encode_frame,
    encode_request,
)
from osbuilder.ttrpc.protos import agent_pb2, health_pb2, ttrpc_pb2

# ---------------------------------------------------------------------------- wire format


def test_header_layout_is_big_endian() -> None:
    frame = encode_frame(0x01020304, MESSAGE_TYPE_REQUEST, b"abc", flags=0x05)
    assert frame[:HEADER_SIZE] == bytes([0, 0, 0, 3, 1, 2, 3, 4, 1, 5])
    assert frame[HEADER_SIZE:] == b"abc"
    assert decode_header(frame[:HEADER_SIZE]) == (3, 0x01020304, 1, 5)


def test_decode_header_rejects_wrong_size() -> None:
    with pytest.raises(TtrpcProtocolError):
        decode_header(b"\x00" * 9)


def test_request_field_numbers_on_the_wire() -> None:
    # service=1, method=2, payload=3 (length-delimited), timeout_nano=4 (varint), metadata=5
    assert ttrpc_pb2.Request(service="s").SerializeToString() == b"\x0a\x01s"
    assert ttrpc_pb2.Request(method="m").SerializeToString() == b"\x12\x01m"
    assert ttrpc_pb2.Request(payload=b"p").SerializeToString() == b"\x1a\x01p"
    assert ttrpc_pb2.Request(timeout_nano=1).SerializeToString() == b"\x20\x01"
    kv = ttrpc_pb2.Request(metadata=[ttrpc_pb2.KeyValue(key="k", value="v")]).SerializeToString()
    assert kv == b"\x2a\x06\x0a\x01k\x12\x01v"
    # Response: status=1 (code=1, message=2), payload=2
    resp = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=12, message="x"), payload=b"y")
    assert resp.SerializeToString() == b"\x0a\x05\x08\x0c\x12\x01x\x12\x01y"


def test_encode_request_carries_timeout_and_metadata() -> None:
    req = ttrpc_pb2.Request()
    req.ParseFromString(encode_request("grpc.Health", "Check", b"\x01", timeout=1.5, metadata={"a": "b"}))
    assert (req.service, req.method, req.payload, req.timeout_nano) == ("grpc.Health", "Check", b"\x01",
                                                                          1_500_000_000)
    assert [(kv.key, kv.value) for kv in req.metadata] == [("a", "b")]


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        (health_pb2.CheckRequest, "service", 1),
        (health_pb2.HealthCheckResponse, "status", 1),
        (health_pb2.VersionCheckResponse, "grpc_version", 1),
        (health_pb2.VersionCheckResponse, "agent_version", 2),
        (agent_pb2.GuestDetailsRequest, "mem_block_size", 1),
        (agent_pb2.GuestDetailsRequest, "mem_hotplug_probe", 2),
        (agent_pb2.GuestDetailsResponse, "mem_block_size_bytes", 1),
        (agent_pb2.GuestDetailsResponse, "agent_details", 2),
        (agent_pb2.GuestDetailsResponse, "support_mem_hotplug_probe", 3),
        (agent_pb2.AgentDetails, "version", 1),
        (agent_pb2.AgentDetails, "init_daemon", 2),
        (agent_pb2.AgentDetails, "device_handlers", 3),
        (agent_pb2.AgentDetails, "storage_handlers", 4),
        (agent_pb2.AgentDetails, "supports_seccomp", 5),
        (agent_pb2.AgentDetails, "extra_features", 6),
        (ttrpc_pb2.Status, "code", 1),
        (ttrpc_pb2.Status, "message", 2),
        (ttrpc_pb2.Status, "details", 3),
    ],
)
def test_kata_field_numbers(message: type[Message], field: str, number: int) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].number == number


def test_kata_service_names_and_enums() -> None:
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    assert health.full_name == "grpc.Health"
    assert sorted(m.name for m in health.methods) == ["Check", "Version"]
    agent = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    assert agent.full_name == "grpc.AgentService"
    assert agent.methods_by_name["DestroySandbox"].output_type.full_name == "google.protobuf.Empty"
    status = health_pb2.HealthCheckResponse.ServingStatus
    assert (status.Value("UNKNOWN"), status.Value("SERVING"), status.Value("NOT_SERVING")) == (0, 1, 2)


# ---------------------------------------------------------------------------- client vs a fake server


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _read_request(sock: socket.socket) -> tuple[int, ttrpc_pb2.Request]:
    length, sid, typ, _ = decode_header(_read_exact(sock, HEADER_SIZE))
    assert typ == MESSAGE_TYPE_REQUEST
    req = ttrpc_pb2.Request()
    req.ParseFromString(_read_exact(sock, length))
    return sid, req


def _response(sid: int, payload: bytes = b"", code: int = 0, message: str = "") -> bytes:
    resp = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=code, message=message), payload=payload)
    return encode_frame(sid, MESSAGE_TYPE_RESPONSE, resp.SerializeToString())


Handler = Callable[[socket.socket], None]


@pytest.fixture
def fake_server() -> Iterator[Callable[[Handler], TtrpcClient]]:
    threads: list[threading.Thread] = []
    clients: list[TtrpcClient] = []

    def _start(handler: Handler) -> TtrpcClient:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

        def run() -> None:
            try:
                handler(b)
            except (EOFError, OSError):
                pass
            finally:
                b.close()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        client = TtrpcClient(a, default_timeout=5.0)
        clients.append(client)
        return client

    yield _start
    for c in clients:
        c.close()
    for t in threads:
        t.join(5)


def test_stream_ids_are_odd_and_increasing(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    seen: list[tuple[int, str, str]] = []

    def handler(s: socket.socket) -> None:
        for _ in range(3):
            sid, req = _read_request(s)
            seen.append((sid, req.service, req.method))
            s.sendall(_response(sid, health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()))

    client = fake_server(handler)
    assert [client.check() for _ in range(3)] == [1, 1, 1]
    assert seen == [(1, "grpc.Health", "Check"), (3, "grpc.Health", "Check"), (5, "grpc.Health", "Check")]


def test_status_error_is_typed(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        sid, _ = _read_request(s)
        s.sendall(_response(sid, code=12, message="nope"))

    client = fake_server(handler)
    with pytest.raises(TtrpcStatusError) as exc:
        client.call("grpc.X", "Y", empty_pb2.Empty(), empty_pb2.Empty)
    assert (exc.value.code, exc.value.message, exc.value.code_name) == (Code.UNIMPLEMENTED, "nope",
                                                                        "UNIMPLEMENTED")


def test_timeout_then_late_answer_is_skipped(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    release = threading.Event()

    def handler(s: socket.socket) -> None:
        sid1, _ = _read_request(s)
        release.wait(5)
        sid2, _ = _read_request(s)
        # the late answer to the first call arrives first, split in two writes
        late = _response(sid1, health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING).SerializeToString())
        s.sendall(late[:4])
        s.sendall(late[4:] + _response(sid2, health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()))

    client = fake_server(handler)
    with pytest.raises(TtrpcTimeout):
        client.check(timeout=0.2)
    release.set()
    assert client.check() == 1


def test_wrong_frame_type_is_a_protocol_error(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        sid, _ = _read_request(s)
        s.sendall(encode_frame(sid, MESSAGE_TYPE_REQUEST, b""))

    with pytest.raises(TtrpcProtocolError):
        fake_server(handler).check()


def test_undecodable_response_is_a_protocol_error(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        sid, _ = _read_request(s)
        s.sendall(encode_frame(sid, MESSAGE_TYPE_RESPONSE, b"\xff\xff\xff"))

    with pytest.raises(TtrpcProtocolError):
        fake_server(handler).check()


def test_oversized_response_is_refused(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        sid, _ = _read_request(s)
        s.sendall(struct.pack(">IIBB", (4 << 20) + 1, sid, MESSAGE_TYPE_RESPONSE, 0))

    with pytest.raises(TtrpcProtocolError, match="exceeds"):
        fake_server(handler).check()


def test_peer_close_is_connection_closed(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        _read_request(s)

    with pytest.raises(TtrpcConnectionClosed):
        fake_server(handler).check()


def test_guest_details_and_version_are_decoded(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        sid, req = _read_request(s)
        gd = agent_pb2.GuestDetailsRequest()
        gd.ParseFromString(req.payload)
        assert gd.mem_block_size and not gd.mem_hotplug_probe
        resp = agent_pb2.GuestDetailsResponse(
            mem_block_size_bytes=0x8000000,
            agent_details=agent_pb2.AgentDetails(version="9", init_daemon=True, device_handlers=["blk"]),
        )
        s.sendall(_response(sid, resp.SerializeToString()))
        sid, req = _read_request(s)
        assert (req.service, req.method) == ("grpc.Health", "Version")
        s.sendall(_response(sid, health_pb2.VersionCheckResponse(grpc_version="0.0.1",
                                                                  agent_version="9").SerializeToString()))

    client = fake_server(handler)
    details = client.guest_details(mem_hotplug_probe=False)
    assert details.mem_block_size_bytes == 0x8000000
    assert details.init_daemon and details.agent_version == "9" and details.device_handlers == ("blk",)
    v = client.version()
    assert (v.grpc_version, v.agent_version) == ("0.0.1", "9")


# ---------------------------------------------------------------------------- hybrid vsock


def _hybrid_listener(tmp_path: Path, reply: bytes) -> tuple[str, threading.Thread, list[bytes]]:
    path = str(tmp_path / "hv.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    got: list[bytes] = []

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            line = b""
            while not line.endswith(b"\n"):
                line += conn.recv(1)
            got.append(line)
            conn.sendall(reply)
            if reply.startswith(b"OK"):
                sid, _ = _read_request(conn)
                conn.sendall(_response(sid, health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()))
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return path, t, got


def test_hybrid_vsock_handshake(tmp_path: Path) -> None:
    path, t, got = _hybrid_listener(tmp_path, b"OK 1073741824\n")
    with TtrpcClient.connect_hybrid_vsock(path, 1024, timeout=5) as client:
        assert client.check() == 1
    t.join(5)
    assert got == [b"CONNECT 1024\n"]


def test_hybrid_vsock_refused(tmp_path: Path) -> None:
    path, t, _ = _hybrid_listener(tmp_path, b"FAILURE\n")
    with pytest.raises(TtrpcProtocolError):
        TtrpcClient.connect_hybrid_vsock(path, 1024, timeout=5)
    t.join(5)


@settings(max_examples=50, deadline=None)
@given(service=st.text(max_size=40), method=st.text(max_size=40), payload=st.binary(max_size=200),
       meta=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
def test_request_roundtrip(service: str, method: str, payload: bytes, meta: dict[str, str]) -> None:
    req = ttrpc_pb2.Request()
    req.ParseFromString(encode_request(service, method, payload, None, meta))
    assert (req.service, req.method, req.payload, req.timeout_nano) == (service, method, payload, 0)
    assert {kv.key: kv.value for kv in req.metadata} == meta
