"""The reference agent, built with its Makefile and run with --listen-unix, answers the ttRPC subset."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.protobuf import empty_pb2

from osbuilder.ttrpc.client import (
    HEADER_SIZE,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    Code,
    TtrpcClient,
    TtrpcConnectionClosed,
    TtrpcStatusError,
    decode_header,
    encode_frame,
    encode_request,
)
from osbuilder.ttrpc.protos import health_pb2, ttrpc_pb2

if TYPE_CHECKING:
    from conftest import AgentProcess, Harness  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.integration


def agent_version_file() -> str:
    return (Path(__file__).resolve().parents[2] / "agent" / "VERSION").read_text().strip()

START_LINE_RE = re.compile(
    r"^osbuilder-agent: version=(?P<version>\S+) pid=(?P<pid>\d+) root=(?P<root>\S+) "
    r"fstype=(?P<fstype>\S+) options=(?P<options>\S+)$"
)
MEM_BLOCK_SIZE = Path("/sys/devices/system/memory/block_size_bytes")
MEM_PROBE = Path("/sys/devices/system/memory/probe")


def check_request(sid: int) -> bytes:
    return encode_frame(sid, MESSAGE_TYPE_REQUEST,
                        encode_request("grpc.Health", "Check", health_pb2.CheckRequest().SerializeToString()))


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def recv_response(sock: socket.socket) -> tuple[int, ttrpc_pb2.Response]:
    length, sid, typ, _ = decode_header(recv_exact(sock, HEADER_SIZE))
    assert typ == MESSAGE_TYPE_RESPONSE
    resp = ttrpc_pb2.Response()
    resp.ParseFromString(recv_exact(sock, length))
    return sid, resp


def assert_eof(sock: socket.socket) -> None:
    """The agent closes the connection (after its reply)."""
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(65536) == b""


# ---------------------------------------------------------------------------- methods


def test_check_and_version(agent: AgentProcess) -> None:
    with agent.connect() as c:
        assert c.check() == health_pb2.HealthCheckResponse.SERVING
        v = c.version()
    assert v.grpc_version == "0.0.1"
    assert v.agent_version == agent_version_file() == "4.1.0"


def test_guest_details_reports_this_machine(agent: AgentProcess) -> None:
    expected_block = int(MEM_BLOCK_SIZE.read_text().strip(), 16) if MEM_BLOCK_SIZE.exists() else 0
    with agent.connect() as c:
        d = c.guest_details(mem_block_size=True, mem_hotplug_probe=True)
        not_asked = c.guest_details(mem_block_size=False, mem_hotplug_probe=False)
    assert d.mem_block_size_bytes == expected_block
    assert d.support_mem_hotplug_probe == MEM_PROBE.exists()
    assert d.agent_version == agent_version_file()
    assert d.init_daemon is False  # not PID 1 here
    assert d.supports_seccomp is False
    assert not_asked.mem_block_size_bytes == 0 and not_asked.support_mem_hotplug_probe is False


def _expected_root_mount() -> tuple[str, str, set[str]]:
    """Device, fstype and option set of '/' according to /proc/self/mounts (an independent source)."""
    root = None
    for line in Path("/proc/self/mounts").read_text().splitlines():
        dev, mnt, fstype, opts = line.split()[:4]
        if mnt == "/":
            root = (dev, fstype, set(opts.split(",")))
    assert root is not None
    return root


def test_start_line_describes_the_root_mount(agent: AgentProcess) -> None:
    m = START_LINE_RE.match(agent.start_line)
    assert m, agent.start_line
    assert m["version"] == agent_version_file()
    assert int(m["pid"]) == agent.proc.pid
    dev, fstype, opts = _expected_root_mount()
    assert m["fstype"] == fstype
    assert set(m["options"].split(",")) == opts
    if dev == "/dev/root":  # the agent names the real device
        assert m["root"].startswith("/dev/") and m["root"] != "/dev/root"
    else:
        assert m["root"] == dev


def test_unknown_service_and_method_keep_the_connection(agent: AgentProcess) -> None:
    with agent.connect() as c:
        for service, method in [("grpc.Nope", "Check"), ("grpc.AgentService", "GetOOMEvent"),
                                ("grpc.Health", "Watch"), ("", "")]:
            with pytest.raises(TtrpcStatusError) as exc:
                c.call(service, method, empty_pb2.Empty(), empty_pb2.Empty)
            assert exc.value.code == Code.UNIMPLEMENTED
            assert exc.value.message
        assert c.check() == 1  # same connection still served


def test_invalid_method_payload_is_invalid_argument_but_connection_stays(agent: AgentProcess) -> None:
    with agent.raw_socket() as s:
        body = encode_request("grpc.Health", "Check", b"\x0a\x05ab")  # truncated CheckRequest
        s.sendall(encode_frame(1, MESSAGE_TYPE_REQUEST, body))
        sid, resp = recv_response(s)
        assert sid == 1 and resp.status.code == Code.INVALID_ARGUMENT
        s.sendall(check_request(3))
        sid, resp = recv_response(s)
        assert sid == 3 and resp.status.code == 0
        assert health_pb2.HealthCheckResponse.FromString(resp.payload).status == 1


def test_metadata_timeout_and_unknown_fields_are_accepted(agent: AgentProcess) -> None:
    with agent.raw_socket() as s:
        body = encode_request("grpc.Health", "Version", b"", timeout=2.0, metadata={"k": "v", "x": ""})
        body += b"\x30\x07" + b"\x3a\x02hi"  # unknown fields 6 (varint) and 7 (bytes)
        s.sendall(encode_frame(7, MESSAGE_TYPE_REQUEST, body, flags=0x02))
        sid, resp = recv_response(s)
        assert sid == 7 and resp.status.code == 0
        assert health_pb2.VersionCheckResponse.FromString(resp.payload).agent_version == agent_version_file()


def test_pipelined_and_byte_by_byte_requests(agent: AgentProcess) -> None:
    with agent.raw_socket() as s:
        s.sendall(check_request(1) + check_request(3) + check_request(5))
        assert [recv_response(s)[0] for _ in range(3)] == [1, 3, 5]
        for b in check_request(9):
            s.sendall(bytes([b]))
        sid, resp = recv_response(s)
        assert sid == 9 and resp.status.code == 0


def test_largest_allowed_frame_is_served(agent: AgentProcess) -> None:
    limit = 4 << 20
    n = limit - 64
    while True:  # a Request of exactly 4 MiB (the CheckRequest's service string is the filler)
        payload = health_pb2.CheckRequest(service="x" * n).SerializeToString()
        body = encode_request("grpc.Health", "Check", payload)
        if len(body) == limit:
            break
        n += limit - len(body)
    with agent.raw_socket(timeout=30) as s:
        s.sendall(encode_frame(1, MESSAGE_TYPE_REQUEST, body))
        sid, resp = recv_response(s)
        assert sid == 1 and resp.status.code == 0
        assert health_pb2.HealthCheckResponse.FromString(resp.payload).status == 1


def test_many_concurrent_connections(agent: AgentProcess) -> None:
    clients = [agent.connect() for _ in range(60)]
    try:
        for c in reversed(clients):
            assert c.check() == 1
    finally:
        for c in clients:
            c.close()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with agent.connect() as c:
                for _ in range(20):
                    assert c.check() == 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors


# ---------------------------------------------------------------------------- malformed frames


@pytest.mark.parametrize("msg_type", [0, 2, 3, 255])
def test_bad_message_type_gets_error_and_close(agent: AgentProcess, msg_type: int) -> None:
    with agent.raw_socket() as s:
        body = encode_request("grpc.Health", "Check", b"")
        s.sendall(encode_frame(5, msg_type, body))
        sid, resp = recv_response(s)
        assert sid == 5 and resp.status.code == Code.INVALID_ARGUMENT
        assert_eof(s)
    with agent.connect() as c:
        assert c.check() == 1


def test_oversized_length_gets_resource_exhausted_and_close(agent: AgentProcess) -> None:
    with agent.raw_socket() as s:
        s.sendall(struct.pack(">IIBB", (4 << 20) + 1, 11, MESSAGE_TYPE_REQUEST, 0) + b"\x00" * 100)
        sid, resp = recv_response(s)
        assert sid == 11 and resp.status.code == Code.RESOURCE_EXHAUSTED
        assert_eof(s)
    with agent.raw_socket() as s:
        s.sendall(struct.pack(">IIBB", 0xFFFFFFFF, 13, MESSAGE_TYPE_REQUEST, 0))
        sid, resp = recv_response(s)
        assert sid == 13 and resp.status.code == Code.RESOURCE_EXHAUSTED
        assert_eof(s)
    with agent.connect() as c:
        assert c.check() == 1


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff\xff",                 # bad key varint
        b"\x0a\x10short",                    # length beyond the frame
        b"\x08\x01",                         # service (field 1) with the varint wire type
        b"\x0b\x00",                         # group wire type
        b"\x00",                             # field number 0
        b"\x20" + b"\xff" * 11,              # overlong varint
        b"\x2a\x02\x08\x01",                 # metadata KeyValue with a varint key
    ],
)
def test_undecodable_request_gets_invalid_argument_and_close(agent: AgentProcess, body: bytes) -> None:
    with agent.raw_socket() as s:
        s.sendall(check_request(1) + encode_frame(3, MESSAGE_TYPE_REQUEST, body) + check_request(5))
        sid, resp = recv_response(s)
        assert sid == 1 and resp.status.code == 0  # the good frame before it is answered
        sid, resp = recv_response(s)
        assert sid == 3 and resp.status.code == Code.INVALID_ARGUMENT
        assert_eof(s)  # and the one after it is not
    with agent.connect() as c:
        assert c.check() == 1


def test_even_stream_id_is_rejected(agent: AgentProcess) -> None:
    with agent.raw_socket() as s:
        s.sendall(check_request(2))
        sid, resp = recv_response(s)
        assert sid == 2 and resp.status.code == Code.INVALID_ARGUMENT
        assert_eof(s)


@pytest.mark.parametrize("prefix", [b"", b"\x00", b"\x00\x00\x00\x05\x00\x00\x00\x01\x01",
                                    b"\x00\x00\x00\x05\x00\x00\x00\x01\x01\x00\x0a"])
def test_truncated_frame_then_close(agent: AgentProcess, prefix: bytes) -> None:
    with agent.raw_socket() as s:
        s.sendall(prefix)
        s.shutdown(socket.SHUT_WR)
        assert_eof(s)  # no reply: no complete header / frame
    with agent.connect() as c:
        assert c.check() == 1


def test_client_vanishing_mid_frame_and_unread_replies(agent: AgentProcess) -> None:
    for _ in range(20):
        s = agent.raw_socket()
        s.sendall(check_request(1) * 50 + check_request(3)[:7])
        s.close()  # replies never read; the agent must drop them and carry on
    with agent.connect() as c:
        assert c.check() == 1


# ---------------------------------------------------------------------------- lifecycle


def test_destroy_sandbox_replies_then_exits_zero(agent: AgentProcess) -> None:
    with agent.connect() as c:
        assert c.check() == 1
        c.destroy_sandbox()  # returns only after the OK reply was received
    assert agent.wait(10) == 0
    assert not agent.socket_path.exists()


def test_sigterm_exits_zero_and_removes_socket(agent: AgentProcess) -> None:
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.wait(10) == 0
    assert not agent.socket_path.exists()


def test_version_option_and_custom_version(tmp_path: Path, run_agent: Callable[..., AgentProcess],
                                           harness: type[Harness]) -> None:
    binary = harness.build_agent(tmp_path / "v", "VERSION=9.8.7-test")
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout == "9.8.7-test\n"
    a = run_agent(binary)
    assert START_LINE_RE.match(a.start_line)["version"] == "9.8.7-test"  # type: ignore[index]
    with a.connect() as c:
        assert c.version().agent_version == "9.8.7-test"
        assert c.guest_details().agent_version == "9.8.7-test"


def test_unknown_option_is_an_error(agent_binary: Path) -> None:
    out = subprocess.run([str(agent_binary), "--bogus"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "usage" in out.stderr


def test_agent_as_pid1_in_namespaces(agent_binary: Path, tmp_path: Path, harness: type[Harness]) -> None:
    """PID 1 mode in fresh pid/mount/uts namespaces: mounts, hostname, init_daemon, power-off on destroy."""
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    if os.geteuid() != 0 or unshare is None or nsenter is None:
        pytest.skip("needs root, unshare(1) and nsenter(1)")
    # --kill-child: should the test fail, the agent (init of the namespace) dies with unshare
    prefix = [unshare, "--pid", "--fork", "--kill-child", "--mount", "--uts", "--propagation", "private"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create namespaces here: {probe.stderr.decode(errors='replace').strip()}")

    a = harness.start_agent(agent_binary, tmp_path, prefix=prefix)
    try:
        m = START_LINE_RE.match(a.start_line)
        assert m and m["pid"] == "1", a.start_line
        # the agent is unshare's only child; look at its namespace from outside
        children = Path(f"/proc/{a.proc.pid}/task/{a.proc.pid}/children").read_text().split()
        assert len(children) == 1
        host_pid = children[0]
        fstypes = {}
        for line in Path(f"/proc/{host_pid}/mountinfo").read_text().splitlines():
            f = line.split()
            fstypes[f[4]] = f[f.index("-") + 1]
        assert {k: fstypes.get(k) for k in ("/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run")} == {
            "/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs",
            "/run": "tmpfs"}
        words = Path("/etc/hostname").read_text().split() if Path("/etc/hostname").exists() else []
        expected_host = words[0] if words and len(words[0]) <= 64 else "localhost"
        got_host = subprocess.run([nsenter, "-t", host_pid, "-u", "cat", "/proc/sys/kernel/hostname"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()
        assert got_host == expected_host
        with a.connect() as c:
            assert c.check() == 1
            assert c.guest_details().init_daemon is True
            c.destroy_sandbox()
        # reboot(RB_POWER_OFF) in a pid namespace kills its init with SIGINT; unshare re-raises it
        rc = a.wait(10)
        assert rc == -signal.SIGINT, rc
    finally:
        if a.alive():
            a.proc.kill()
        a.stop()


def test_connection_closed_error_after_protocol_error(agent: AgentProcess) -> None:
    """The client surfaces the agent's error reply and then the close as typed errors."""
    c = agent.connect()
    with c:
        c.send_raw(encode_frame(1, 9, b""))
        sid, resp = c.read_response()
        assert sid == 1 and resp.status.code == Code.INVALID_ARGUMENT
        with pytest.raises(TtrpcConnectionClosed):
            c.read_frame(timeout=5)


# ---------------------------------------------------------------------------- other transports


def _vsock_loopback_works() -> bool:
    if not hasattr(socket, "AF_VSOCK"):
        return False
    try:
        with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as srv:
            srv.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
            srv.listen(1)
            port = srv.getsockname()[1]
            with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as c:
                c.settimeout(1)
                c.connect((1, port))  # VMADDR_CID_LOCAL: needs the vsock_loopback transport
        return True
    except OSError:
        return False


def test_default_transport_vsock_port_1024(agent_binary: Path) -> None:
    """Without --listen-unix the agent listens on AF_VSOCK port 1024 (tested through vsock loopback)."""
    if not _vsock_loopback_works():
        pytest.skip("no AF_VSOCK loopback transport on this host (vsock_loopback)")
    proc = subprocess.Popen([str(agent_binary), "--console", "-"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert START_LINE_RE.match(proc.stdout.readline().decode().strip())

        with TtrpcClient.connect_vsock(1, 1024, timeout=5) as c:
            assert c.check() == 1
            c.destroy_sandbox()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_hybrid_vsock_client_through_a_muxer(agent: AgentProcess, tmp_path: Path) -> None:
    """Firecracker-style muxer in front of the real agent: CONNECT 1024 -> OK, then bytes are spliced."""

    mux_path = tmp_path / "hvsock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(mux_path))
    srv.listen(1)
    seen: list[bytes] = []

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def mux() -> None:
        conn, _ = srv.accept()
        line = b""
        while not line.endswith(b"\n"):
            line += conn.recv(1)
        seen.append(line)
        upstream = agent.raw_socket(timeout=None)
        conn.sendall(b"OK 1073741824\n")
        t = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        t.start()
        pump(conn, upstream)
        t.join(5)
        conn.close()
        upstream.close()

    th = threading.Thread(target=mux, daemon=True)
    th.start()
    with TtrpcClient.connect_hybrid_vsock(str(mux_path), 1024, timeout=5) as c:
        assert c.check() == 1
        assert c.version().agent_version == agent_version_file()
    th.join(10)
    srv.close()
    assert seen == [b"CONNECT 1024\n"]


# ---------------------------------------------------------------------------- start line from mountinfo


def _host_root_majmin_and_devname() -> tuple[str, str] | None:
    majmin = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        if f[4] == "/":
            majmin = f[2]
    if majmin is None:
        return None
    uevent = Path(f"/sys/dev/block/{majmin}/uevent")
    if not uevent.exists():
        return None
    for kv in uevent.read_text().splitlines():
        if kv.startswith("DEVNAME="):
            return majmin, "/dev/" + kv[len("DEVNAME="):]
    return None


@pytest.mark.parametrize(
    ("mountinfo", "root", "fstype", "options"),
    [
        pytest.param(
            "1 1 0:2 / / rw - rootfs rootfs rw,size=1000k\n"
            "20 1 259:1 / / ro,relatime shared:1 - ext4 /dev/pmem0p1 ro,dax=always,errors=remount-ro,data=ordered\n"
            "21 20 0:5 / /dev rw,nosuid - devtmpfs dev rw,mode=755\n",
            "/dev/pmem0p1", "ext4", "ro,relatime,dax=always,errors=remount-ro,data=ordered",
            id="dax-ext4-on-top-of-rootfs"),
        pytest.param(
            "1 1 0:2 / / rw - rootfs rootfs rw,size=1000k,nr_inodes=250,inode64\n",
            "rootfs", "rootfs", "rw,size=1000k,nr_inodes=250,inode64", id="initramfs"),
        pytest.param(
            "20 1 254:2 / / ro,noatime master:3 shared:4 - xfs /dev/vda1 ro,attr2,dax,inode64\n",
            "/dev/vda1", "xfs", "ro,noatime,attr2,dax,inode64", id="optional-fields-xfs"),
        pytest.param("20 1 254:2 / /mnt rw - ext4 /dev/vda1 rw\n", "unknown", "unknown", "unknown",
                     id="no-root-entry"),
        pytest.param("garbage\n\n- - -\n", "unknown", "unknown", "unknown", id="garbage"),
    ],
)
def test_start_line_from_mountinfo(agent_binary: Path, tmp_path: Path, mountinfo: str, root: str,
                                   fstype: str, options: str, harness: type[Harness]) -> None:
    mi = tmp_path / "mountinfo"
    mi.write_text(mountinfo)
    a = harness.start_agent(agent_binary, tmp_path, "--mountinfo", str(mi))
    try:
        m = START_LINE_RE.match(a.start_line)
        assert m, a.start_line
        assert (m["root"], m["fstype"], m["options"]) == (root, fstype, options)
    finally:
        assert a.stop()[0] == 0


def test_start_line_resolves_dev_root(agent_binary: Path, tmp_path: Path, harness: type[Harness]) -> None:
    host = _host_root_majmin_and_devname()
    if host is None:
        pytest.skip("the host root is not a block device with a uevent DEVNAME")
    majmin, devname = host
    mi = tmp_path / "mountinfo"
    mi.write_text(f"20 1 {majmin} / / ro,relatime - ext4 /dev/root ro,dax=always\n")
    a = harness.start_agent(agent_binary, tmp_path, "--mountinfo", str(mi))
    try:
        m = START_LINE_RE.match(a.start_line)
        assert m and m["root"] == devname, (a.start_line, devname)
    finally:
        assert a.stop()[0] == 0
