"""Pure-Python tests of the ttRPC codec, the .proto field numbers and the client (no agent binary)."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
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
    VersionInfo,
    decode_header,
    encode_frame,
    encode_request,
)
from osbuilder.ttrpc.protos import agent_pb2, health_pb2, oci_pb2, ttrpc_pb2, types_pb2

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
        (agent_pb2.CreateSandboxRequest, "hostname", 1),
        (agent_pb2.CreateSandboxRequest, "dns", 2),
        (agent_pb2.CreateSandboxRequest, "storages", 3),
        (agent_pb2.CreateSandboxRequest, "sandbox_pidns", 4),
        (agent_pb2.CreateSandboxRequest, "sandbox_id", 5),
        (agent_pb2.CreateSandboxRequest, "guest_hook_path", 6),
        (agent_pb2.CreateSandboxRequest, "kernel_modules", 7),
        (agent_pb2.Storage, "driver", 1),
        (agent_pb2.Storage, "driver_options", 2),
        (agent_pb2.Storage, "source", 3),
        (agent_pb2.Storage, "fstype", 4),
        (agent_pb2.Storage, "options", 5),
        (agent_pb2.Storage, "mount_point", 6),
        (agent_pb2.Storage, "fs_group", 7),
        (agent_pb2.Storage, "shared", 8),
        (agent_pb2.FSGroup, "group_id", 2),
        (agent_pb2.FSGroup, "group_change_policy", 3),
        (agent_pb2.CreateContainerRequest, "container_id", 1),
        (agent_pb2.CreateContainerRequest, "exec_id", 2),
        (agent_pb2.CreateContainerRequest, "string_user", 3),
        (agent_pb2.CreateContainerRequest, "devices", 4),
        (agent_pb2.CreateContainerRequest, "storages", 5),
        (agent_pb2.CreateContainerRequest, "OCI", 6),
        (agent_pb2.CreateContainerRequest, "sandbox_pidns", 7),
        (agent_pb2.CreateContainerRequest, "shared_mounts", 8),
        (agent_pb2.CreateContainerRequest, "stdin_port", 9),
        (agent_pb2.CreateContainerRequest, "stdout_port", 10),
        (agent_pb2.CreateContainerRequest, "stderr_port", 11),
        (agent_pb2.StartContainerRequest, "container_id", 1),
        (agent_pb2.RemoveContainerRequest, "container_id", 1),
        (agent_pb2.RemoveContainerRequest, "timeout", 2),
        (agent_pb2.ExecProcessRequest, "container_id", 1),
        (agent_pb2.ExecProcessRequest, "exec_id", 2),
        (agent_pb2.ExecProcessRequest, "string_user", 3),
        (agent_pb2.ExecProcessRequest, "process", 4),
        (agent_pb2.WaitProcessRequest, "exec_id", 2),
        (agent_pb2.WaitProcessResponse, "status", 1),
        (agent_pb2.ReadStreamRequest, "len", 3),
        (agent_pb2.ReadStreamResponse, "data", 1),
        (agent_pb2.WriteStreamRequest, "data", 3),
        (agent_pb2.WriteStreamResponse, "len", 1),
        (agent_pb2.CloseStdinRequest, "exec_id", 2),
        (agent_pb2.SignalProcessRequest, "signal", 3),
        (agent_pb2.UpdateInterfaceRequest, "interface", 1),
        (agent_pb2.UpdateRoutesRequest, "routes", 1),
        (agent_pb2.AddARPNeighborsRequest, "neighbors", 1),
        (oci_pb2.Spec, "Version", 1),
        (oci_pb2.Spec, "Process", 2),
        (oci_pb2.Spec, "Root", 3),
        (oci_pb2.Spec, "Hostname", 4),
        (oci_pb2.Spec, "Mounts", 5),
        (oci_pb2.Spec, "Hooks", 6),
        (oci_pb2.Spec, "Annotations", 7),
        (oci_pb2.Spec, "Linux", 8),
        (oci_pb2.Process, "Terminal", 1),
        (oci_pb2.Process, "User", 3),
        (oci_pb2.Process, "Args", 4),
        (oci_pb2.Process, "Env", 5),
        (oci_pb2.Process, "Cwd", 6),
        (oci_pb2.Process, "Capabilities", 7),
        (oci_pb2.Process, "Rlimits", 8),
        (oci_pb2.Process, "NoNewPrivileges", 9),
        (oci_pb2.Process, "OOMScoreAdj", 11),
        (oci_pb2.User, "AdditionalGids", 3),
        (oci_pb2.LinuxCapabilities, "Ambient", 5),
        (oci_pb2.POSIXRlimit, "Soft", 3),
        (oci_pb2.Root, "Readonly", 2),
        (oci_pb2.Mount, "options", 4),
        (oci_pb2.Linux, "Resources", 4),
        (oci_pb2.Linux, "CgroupsPath", 5),
        (oci_pb2.Linux, "Namespaces", 6),
        (oci_pb2.Linux, "Devices", 7),
        (oci_pb2.Linux, "RootfsPropagation", 9),
        (oci_pb2.Linux, "MaskedPaths", 10),
        (oci_pb2.Linux, "ReadonlyPaths", 11),
        (oci_pb2.LinuxDevice, "FileMode", 5),
        (oci_pb2.LinuxResources, "Memory", 2),
        (oci_pb2.LinuxResources, "CPU", 3),
        (oci_pb2.LinuxResources, "Pids", 4),
        (oci_pb2.LinuxCPU, "Quota", 2),
        (oci_pb2.LinuxCPU, "Period", 3),
        (types_pb2.Interface, "IPAddresses", 3),
        (types_pb2.Interface, "hwAddr", 5),
        (types_pb2.Interface, "raw_flags", 8),
        (types_pb2.Route, "flags", 7),
        (types_pb2.ARPNeighbor, "lladdr", 3),
        (types_pb2.IPAddress, "mask", 3),
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
    assert agent.methods_by_name["UpdateInterface"].output_type.full_name == "types.Interface"
    assert oci_pb2.Spec.DESCRIPTOR.full_name == "grpc.Spec"
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


# ---------------------------------------------------------------------------- concurrent calls


def _serving(sid: int, status: int = health_pb2.HealthCheckResponse.SERVING) -> bytes:
    return _response(sid, health_pb2.HealthCheckResponse(status=status).SerializeToString())


def _in_threads(*fns: Callable[[], object]) -> list[object]:
    """Runs each function in its own thread; returns results (or the exceptions raised) in order."""
    results: list[object] = [None] * len(fns)

    def run(i: int) -> None:
        try:
            results[i] = fns[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    return results


def test_concurrent_calls_get_their_own_answers_out_of_order(
        fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        reqs = [_read_request(s) for _ in range(3)]
        # answer in reverse order; each answer says which service string it belongs to
        for sid, req in reversed(reqs):
            status = 1 if req.method == "Check" else 2
            s.sendall(_serving(sid, status) if req.method != "Version" else _response(
                sid, health_pb2.VersionCheckResponse(agent_version=f"v{sid}").SerializeToString()))

    client = fake_server(handler)
    got = _in_threads(client.check, client.version, client.check)
    assert got[0] == 1 and got[2] == 1
    assert isinstance(got[1], VersionInfo) and got[1].agent_version.startswith("v")


def test_a_blocked_call_does_not_block_others(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    order: list[str] = []
    release = threading.Event()

    def handler(s: socket.socket) -> None:
        wait_sid, wait_req = _read_request(s)
        assert wait_req.method == "WaitProcess"
        assert wait_req.timeout_nano == 0  # wait_process waits forever by default
        check_sid, _ = _read_request(s)
        s.sendall(_serving(check_sid))
        release.wait(5)
        s.sendall(_response(wait_sid, agent_pb2.WaitProcessResponse(status=42).SerializeToString()))

    client = fake_server(handler)

    def waiter() -> int:
        status = client.wait_process("c", "c")
        order.append("wait")
        return status

    def checker() -> int:
        time.sleep(0.2)  # after the WaitProcess request
        status = client.check()
        order.append("check")
        release.set()
        return status

    assert _in_threads(waiter, checker) == [42, 1]
    assert order == ["check", "wait"]


def test_timeout_of_one_call_leaves_the_others(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        slow_sid, _ = _read_request(s)
        fast_sid, _ = _read_request(s)
        s.sendall(_serving(fast_sid))
        time.sleep(0.5)
        s.sendall(_serving(slow_sid))  # too late: dropped
        sid, _ = _read_request(s)
        s.sendall(_serving(sid))

    client = fake_server(handler)

    def slow() -> int:
        return client.check(timeout=0.2)

    def fast() -> int:
        time.sleep(0.05)
        return client.check()

    slow_result, fast_result = _in_threads(slow, fast)
    assert isinstance(slow_result, TtrpcTimeout) and fast_result == 1
    time.sleep(0.5)
    assert client.check() == 1  # the late answer was dropped, the connection still works


def test_close_fails_pending_calls(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    got_requests = threading.Event()

    def handler(s: socket.socket) -> None:
        _read_request(s)
        _read_request(s)
        got_requests.set()
        s.recv(1)  # never answers; returns when the client closes

    client = fake_server(handler)

    def closer() -> None:
        assert got_requests.wait(5)
        client.close()

    results = _in_threads(lambda: client.read_stdout("c", "e"), lambda: client.wait_process("c", "e"), closer)
    assert all(isinstance(r, TtrpcConnectionClosed) for r in results[:2]), results
    with pytest.raises(TtrpcConnectionClosed):
        client.check()


def test_peer_close_fails_every_pending_call(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        _read_request(s)
        _read_request(s)

    client = fake_server(handler)
    results = _in_threads(lambda: client.wait_process("c", "e"), lambda: client.read_stderr("c", "e"))
    assert all(isinstance(r, TtrpcConnectionClosed) for r in results), results
    with pytest.raises(TtrpcConnectionClosed):
        client.check()


def test_connection_level_error_fails_pending_calls(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        _read_request(s)
        s.sendall(_response(0, code=Code.INVALID_ARGUMENT, message="stream id must be odd"))

    client = fake_server(handler)
    with pytest.raises(TtrpcStatusError) as exc:
        client.wait_process("c", "e")
    assert exc.value.message == "stream id must be odd"


def test_read_frame_is_refused_once_the_reader_runs(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        sid, _ = _read_request(s)
        s.sendall(_serving(sid))

    client = fake_server(handler)
    assert client.check() == 1
    with pytest.raises(TtrpcProtocolError, match="reader thread"):
        client.read_frame()


def test_many_threads_share_one_connection(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    n = 64

    def handler(s: socket.socket) -> None:
        reqs = [_read_request(s) for _ in range(n)]
        random.Random(7).shuffle(reqs)
        for sid, req in reqs:
            r = agent_pb2.ReadStreamRequest.FromString(req.payload)
            s.sendall(_response(sid, agent_pb2.ReadStreamResponse(data=r.exec_id.encode()).SerializeToString()))

    client = fake_server(handler)
    got = _in_threads(*[lambda i=i: client.read_stdout("c", f"e{i}") for i in range(n)])  # type: ignore[misc]
    assert got == [f"e{i}".encode() for i in range(n)]


# ---------------------------------------------------------------------------- the typed agent calls


TYPED_CALLS: list[tuple[str, Callable[[TtrpcClient], object], Message, bytes, object]] = [
    ("UpdateInterface",
     lambda c: c.update_interface(types_pb2.Interface(name="lo", mtu=65536)),
     agent_pb2.UpdateInterfaceRequest(interface=types_pb2.Interface(name="lo", mtu=65536)),
     types_pb2.Interface(name="lo", mtu=65536).SerializeToString(),
     types_pb2.Interface(name="lo", mtu=65536)),
    ("UpdateRoutes",
     lambda c: c.update_routes([types_pb2.Route(dest="10.0.0.0/8", device="eth0")]),
     agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=[types_pb2.Route(dest="10.0.0.0/8",
                                                                                     device="eth0")])),
     agent_pb2.Routes(Routes=[types_pb2.Route(dest="10.0.0.0/8", device="eth0")]).SerializeToString(),
     [types_pb2.Route(dest="10.0.0.0/8", device="eth0")]),
    ("AddARPNeighbors",
     lambda c: c.add_arp_neighbors([types_pb2.ARPNeighbor(device="eth0", lladdr="aa:bb:cc:dd:ee:ff")]),
     agent_pb2.AddARPNeighborsRequest(neighbors=agent_pb2.ARPNeighbors(
         ARPNeighbors=[types_pb2.ARPNeighbor(device="eth0", lladdr="aa:bb:cc:dd:ee:ff")])),
     b"", None),
    ("CreateSandbox",
     lambda c: c.create_sandbox(hostname="h", sandbox_id="s", dns=["nameserver 1.1.1.1"],
                                storages=[agent_pb2.Storage(driver="virtio-fs", source="kataShared")]),
     agent_pb2.CreateSandboxRequest(hostname="h", sandbox_id="s", dns=["nameserver 1.1.1.1"],
                                    storages=[agent_pb2.Storage(driver="virtio-fs", source="kataShared")]),
     b"", None),
    ("CreateContainer",
     lambda c: c.create_container(container_id="c", exec_id="c", spec=oci_pb2.Spec(Hostname="x")),
     agent_pb2.CreateContainerRequest(container_id="c", exec_id="c", OCI=oci_pb2.Spec(Hostname="x")),
     b"", None),
    ("StartContainer", lambda c: c.start_container("c"), agent_pb2.StartContainerRequest(container_id="c"),
     b"", None),
    ("ExecProcess",
     lambda c: c.exec_process(container_id="c", exec_id="e", process=oci_pb2.Process(Args=["ls"])),
     agent_pb2.ExecProcessRequest(container_id="c", exec_id="e", process=oci_pb2.Process(Args=["ls"])),
     b"", None),
    ("WaitProcess", lambda c: c.wait_process("c", "e"),
     agent_pb2.WaitProcessRequest(container_id="c", exec_id="e"),
     agent_pb2.WaitProcessResponse(status=143).SerializeToString(), 143),
    ("ReadStdout", lambda c: c.read_stdout("c", "e", 10),
     agent_pb2.ReadStreamRequest(container_id="c", exec_id="e", len=10),
     agent_pb2.ReadStreamResponse(data=b"out").SerializeToString(), b"out"),
    ("ReadStderr", lambda c: c.read_stderr("c", "e"),
     agent_pb2.ReadStreamRequest(container_id="c", exec_id="e", len=65536),
     b"", b""),
    ("WriteStdin", lambda c: c.write_stdin("c", "e", b"data"),
     agent_pb2.WriteStreamRequest(container_id="c", exec_id="e", data=b"data"),
     agent_pb2.WriteStreamResponse(len=4).SerializeToString(), 4),
    ("CloseStdin", lambda c: c.close_stdin("c", "e"), agent_pb2.CloseStdinRequest(container_id="c", exec_id="e"),
     b"", None),
    ("SignalProcess", lambda c: c.signal_process("c", "", 15),
     agent_pb2.SignalProcessRequest(container_id="c", exec_id="", signal=15), b"", None),
    ("RemoveContainer", lambda c: c.remove_container("c", timeout_seconds=5),
     agent_pb2.RemoveContainerRequest(container_id="c", timeout=5), b"", None),
    ("DestroySandbox", lambda c: c.destroy_sandbox(), agent_pb2.DestroySandboxRequest(), b"", None),
]


@pytest.mark.parametrize(("method", "invoke", "expected", "reply", "result"), TYPED_CALLS,
                         ids=[t[0] for t in TYPED_CALLS])
def test_typed_call_sends_kata_method_and_fields(fake_server: Callable[[Handler], TtrpcClient], method: str,
                                                 invoke: Callable[[TtrpcClient], object], expected: Message,
                                                 reply: bytes, result: object) -> None:
    seen: list[ttrpc_pb2.Request] = []

    def handler(s: socket.socket) -> None:
        sid, req = _read_request(s)
        seen.append(req)
        s.sendall(_response(sid, reply))

    client = fake_server(handler)
    assert invoke(client) == result
    (req,) = seen
    assert (req.service, req.method) == ("grpc.AgentService", method)
    decoded = type(expected)()
    decoded.ParseFromString(req.payload)
    assert decoded == expected
    # the agent's service descriptor knows the method with these message types
    desc = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].methods_by_name[method]
    assert desc.input_type.full_name == expected.DESCRIPTOR.full_name


def test_typed_call_status_error_carries_the_agent_message(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    def handler(s: socket.socket) -> None:
        sid, _ = _read_request(s)
        s.sendall(_response(sid, code=Code.NOT_FOUND, message="container_id: no container 'nope'"))

    client = fake_server(handler)
    with pytest.raises(TtrpcStatusError) as exc:
        client.start_container("nope")
    assert exc.value.code == Code.NOT_FOUND and "nope" in exc.value.message


def test_call_timeouts_sent_to_the_agent(fake_server: Callable[[Handler], TtrpcClient]) -> None:
    seen: list[int] = []

    def handler(s: socket.socket) -> None:
        for _ in range(3):
            sid, req = _read_request(s)
            seen.append(req.timeout_nano)
            s.sendall(_response(sid))

    client = fake_server(handler)
    client.remove_container("c")  # timeout_seconds=0: waits forever
    client.start_container("c")  # the client's default (5 s in this fixture)
    client.remove_container("c", timeout_seconds=3)
    assert seen[0] == 0
    assert 4e9 < seen[1] <= 5e9
    assert 12e9 < seen[2] <= 13e9


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
