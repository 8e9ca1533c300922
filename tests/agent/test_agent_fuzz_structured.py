"""Structure-aware fuzzing of the lifecycle requests: valid frame headers and valid ttRPC Request
envelopes whose method payloads are mutated protobuf (a wire-format mutator that knows fields:
values, lengths, wire types, nested messages, repeated and unknown fields), starting from valid
requests of every lifecycle method, plus messages hypothesis builds from the .proto descriptors.
Random bytes mostly stop at the frame check; these reach the decoders, the validation and the
container code. The agent must answer every request with a well-formed response and keep serving;
the sanitizer build must report nothing (checked at teardown).

The agent runs in its own mount, UTS and network namespaces with "/" read-only (the test's directory
excepted), as root; elsewhere these tests are skipped."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf.message import Message
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
from osbuilder.ttrpc.protos import agent_pb2, oci_pb2, ttrpc_pb2, types_pb2

if TYPE_CHECKING:
    from conftest import AgentProcess, Harness, Workloads  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("OSB_AGENT_FUZZ_SEED", "20240611"))
SESSIONS = int(os.environ.get("OSB_AGENT_STRUCTURED_FUZZ_SESSIONS", "600"))
KNOWN_CODES = {0, 3, 4, 5, 6, 8, 9, 12, 13}
SERVICE = "grpc.AgentService"

# ---------------------------------------------------------------------------- a protobuf wire mutator

VARINT, I64, LEN, I32 = 0, 1, 2, 5
INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1,
               (1 << 64) - 1, 4 << 20, (4 << 20) + 1]


@dataclass
class Field:
    number: int
    wire: int
    value: int | bytes  # varint / fixed as int, LEN as bytes


def _varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _read_varint(data: bytes, off: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        if off >= len(data) or shift > 63:
            raise ValueError("bad varint")
        b = data[off]
        off += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, off


def parse(data: bytes) -> list[Field] | None:
    """The top-level fields of a well-formed message, or None."""
    fields: list[Field] = []
    off = 0
    try:
        while off < len(data):
            key, off = _read_varint(data, off)
            number, wire = key >> 3, key & 7
            if number == 0:
                return None
            if wire == VARINT:
                v, off = _read_varint(data, off)
                fields.append(Field(number, wire, v))
            elif wire in (I64, I32):
                n = 8 if wire == I64 else 4
                if off + n > len(data):
                    return None
                fields.append(Field(number, wire, int.from_bytes(data[off:off + n], "little")))
                off += n
            elif wire == LEN:
                n, off = _read_varint(data, off)
                if off + n > len(data):
                    return None
                fields.append(Field(number, wire, data[off:off + n]))
                off += n
            else:
                return None
    except ValueError:
        return None
    return fields


def encode(fields: list[Field]) -> bytes:
    out = bytearray()
    for f in fields:
        out += _varint(f.number << 3 | f.wire)
        if f.wire == VARINT:
            out += _varint(int(f.value))
        elif f.wire in (I64, I32):
            out += int(f.value).to_bytes(8 if f.wire == I64 else 4, "little")
        else:
            assert isinstance(f.value, bytes)
            out += _varint(len(f.value)) + f.value
    return bytes(out)


def mutate_message(rng: random.Random, data: bytes, depth: int = 0) -> bytes:
    fields = parse(data)
    if not fields or rng.random() < 0.08:  # not a message (or sometimes anyway): bytes-level
        return mutate_bytes(rng, data)
    f = rng.choice(fields)
    op = rng.randrange(9)
    if op == 0 and f.wire == LEN and isinstance(f.value, bytes) and parse(f.value) and depth < 6:
        f.value = mutate_message(rng, f.value, depth + 1)  # into a nested message
    elif op == 1 and isinstance(f.value, bytes):
        f.value = mutate_bytes(rng, f.value)  # string / bytes content
    elif op == 2 and f.wire == VARINT:
        f.value = rng.choice([*INTERESTING, rng.getrandbits(64)])
    elif op == 3:
        fields.remove(f)
    elif op == 4:
        fields.insert(rng.randrange(len(fields) + 1), Field(f.number, f.wire, f.value))
    elif op == 5:
        wire = rng.choice([VARINT, I64, LEN, I32])
        value: int | bytes = rng.randbytes(rng.randint(0, 12)) if wire == LEN else rng.getrandbits(32)
        fields.insert(rng.randrange(len(fields) + 1), Field(rng.choice([f.number, rng.randint(1, 40)]), wire, value))
    elif op == 6:
        f.wire = rng.choice([w for w in (VARINT, I64, LEN, I32) if w != f.wire])  # wrong wire type
        f.value = rng.randbytes(4) if f.wire == LEN else rng.getrandbits(32)
    elif op == 7 and isinstance(f.value, bytes):
        f.value = f.value * rng.randint(2, 8)  # longer strings / repeated content
    else:
        rng.shuffle(fields)
    out = encode(fields)
    if rng.random() < 0.05:
        out = mutate_bytes(rng, out)
    return out


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice([0, 0x2F, 0x2E, 0xFF, 0x80, 0x3A, rng.randrange(256)])
        elif op == 2:
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and b:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
        elif op == 4 and b:
            del b[rng.randrange(len(b)):]
    return bytes(b)


# ---------------------------------------------------------------------------- valid requests to start from


def seed_requests(root: Path, workdir: Path, workloads: type[Workloads]) -> list[tuple[str, Message]]:
    spec = workloads.spec(root, ["true"])
    spec.Linux.Sysctl["kernel.domainname"] = "fuzz"
    spec.Linux.Devices.add(Path="/dev/fuse", Type="c", Major=10, Minor=229, FileMode=0o666)
    spec.Mounts.add(destination="/data", type="bind", source=str(workdir), options=["rbind", "ro"])
    process = oci_pb2.Process(Args=["sh", "-c", "echo x"], Env=["PATH=/bin"], Cwd="/",
                              User=oci_pb2.User(UID=1000, GID=1000, AdditionalGids=[5, 6]),
                              Rlimits=[oci_pb2.POSIXRlimit(Type="RLIMIT_NOFILE", Hard=64, Soft=64)],
                              Capabilities=oci_pb2.LinuxCapabilities(Bounding=["CAP_KILL"]))
    storage = agent_pb2.Storage(driver="watchable-bind", source=str(workdir), fstype="bind",
                                options=["rbind", "ro"], mount_point=str(workdir / "mnt"))
    share = agent_pb2.Storage(driver="virtio-fs", source="kataShared", fstype="virtiofs",
                              mount_point=str(workdir / "shared"))
    return [
        ("CreateSandbox", agent_pb2.CreateSandboxRequest(hostname="fuzz", sandbox_id="fuzz", dns=["1.1.1.1"],
                                                         storages=[storage])),
        ("CreateSandbox", agent_pb2.CreateSandboxRequest(hostname="fuzz", sandbox_id="fuzz", storages=[share])),
        ("CreateContainer", agent_pb2.CreateContainerRequest(container_id="c1", exec_id="c1", OCI=spec,
                                                             storages=[storage])),
        ("StartContainer", agent_pb2.StartContainerRequest(container_id="c1")),
        ("ExecProcess", agent_pb2.ExecProcessRequest(container_id="c1", exec_id="e1", process=process)),
        ("WaitProcess", agent_pb2.WaitProcessRequest(container_id="c1", exec_id="c1")),
        ("ReadStdout", agent_pb2.ReadStreamRequest(container_id="c1", exec_id="c1", len=16)),
        ("ReadStderr", agent_pb2.ReadStreamRequest(container_id="c1", exec_id="e1", len=4096)),
        ("WriteStdin", agent_pb2.WriteStreamRequest(container_id="c1", exec_id="c1", data=b"input\n")),
        ("CloseStdin", agent_pb2.CloseStdinRequest(container_id="c1", exec_id="c1")),
        ("SignalProcess", agent_pb2.SignalProcessRequest(container_id="c1", exec_id="", signal=9)),
        ("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="c1", timeout=1)),
        ("UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=types_pb2.Interface(
            name="lo", mtu=65536, IPAddresses=[types_pb2.IPAddress(address="127.0.0.1", mask="8")]))),
        ("UpdateRoutes", agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=[
            types_pb2.Route(dest="127.42.0.0/16", device="lo", scope=253)]))),
        ("AddARPNeighbors", agent_pb2.AddARPNeighborsRequest(neighbors=agent_pb2.ARPNeighbors(ARPNeighbors=[
            types_pb2.ARPNeighbor(toIPAddress=types_pb2.IPAddress(address="127.0.0.9"), device="lo",
                                  lladdr="02:00:00:00:00:01")]))),
        ("GetGuestDetails", agent_pb2.GuestDetailsRequest(mem_block_size=True)),
    ]


def frame(sid: int, method: str, payload: bytes) -> bytes:
    return encode_frame(sid, MESSAGE_TYPE_REQUEST, encode_request(SERVICE, method, payload, timeout=5.0))


# ---------------------------------------------------------------------------- the agent and its answers


@dataclass
class Fuzzed:
    agent: AgentProcess
    seeds: list[tuple[str, Message]]


@pytest.fixture(scope="module", params=["musl-static", "sanitizers"])
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, harness: type[Harness],
           workloads: type[Workloads]) -> Iterator[Fuzzed]:
    reason = harness.namespaces_usable()
    if reason:
        pytest.skip(reason)
    binary: Path = request.getfixturevalue("agent_binary" if request.param == "musl-static" else "sanitizer_binary")
    workdir = tmp_path_factory.mktemp("sfuzz")
    root = harness.make_busybox_root(workdir / "rootfs")
    agent = harness.start_agent(binary, workdir, prefix=harness.namespaced_prefix(workdir))
    yield Fuzzed(agent, seed_requests(root, workdir, workloads))
    agent.assert_clean_stop()


def parse_replies(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """The complete response frames at the start of data (each checked), and the bytes they took."""
    out = []
    off = 0
    while len(data) - off >= HEADER_SIZE:
        length, sid, typ, flags = decode_header(data[off:off + HEADER_SIZE])
        assert typ == MESSAGE_TYPE_RESPONSE and flags == 0
        if len(data) - off - HEADER_SIZE < length:
            break
        resp = ttrpc_pb2.Response()
        resp.ParseFromString(data[off + HEADER_SIZE:off + HEADER_SIZE + length])  # UTF-8 strings
        assert resp.status.code in KNOWN_CODES, resp
        out.append((sid, resp.status.code))
        off += HEADER_SIZE + length
    return out, off


def session(agent: AgentProcess, frames: list[bytes], idle: float = 0.15) -> list[tuple[int, int]]:
    """Sends the frames and collects the answers until all came or none came for `idle` seconds (calls
    that wait for a workload stay unanswered); the connection stays open meanwhile, so answers that
    take a moment (CreateContainer) arrive."""
    s = agent.raw_socket(timeout=20)
    data = b""
    try:
        s.sendall(b"".join(frames))
        s.settimeout(idle)
        while True:
            replies, used = parse_replies(data)
            if len(replies) == len(frames):
                break
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if used == len(data):
                    break
                s.settimeout(5)  # in the middle of a frame: the rest must follow
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    replies, used = parse_replies(data)
    assert used == len(data), "a truncated reply"
    return replies


def test_mutated_lifecycle_requests(fuzzed: Fuzzed) -> None:
    rng = random.Random(SEED)
    answered = 0
    by_method: dict[str, set[int]] = {}
    for i in range(SESSIONS):
        frames = []
        names = []
        for k in range(rng.randint(1, 6)):
            name, msg = rng.choice(fuzzed.seeds)
            payload = msg.SerializeToString()
            if rng.random() < 0.8:
                payload = mutate_message(rng, payload)
            frames.append(frame(2 * k + 1, name, payload))
            names.append(name)
        replies = session(fuzzed.agent, frames)
        for sid, code in replies:
            by_method.setdefault(names[(sid - 1) // 2], set()).add(code)
        answered += len(replies)
        if i % 50 == 0:
            fuzzed.agent.assert_serving(timeout=20)
    fuzzed.agent.assert_serving(timeout=20)
    assert answered > SESSIONS  # the agent answered (not only closed)
    # valid requests got through too: containers were created and removed, calls succeeded
    assert {name for name, codes in by_method.items() if 0 in codes} >= {
        "CreateSandbox", "CreateContainer", "StartContainer", "RemoveContainer", "UpdateInterface",
        "UpdateRoutes", "AddARPNeighbors", "SignalProcess"}
    # mutations reached the validation of every method, not only the frame checks
    assert {name for name, codes in by_method.items() if codes - {0}} >= {
        "CreateContainer", "CreateSandbox", "ExecProcess", "UpdateInterface", "UpdateRoutes", "AddARPNeighbors",
        "WaitProcess", "SignalProcess", "RemoveContainer"}


# ---------------------------------------------------------------------------- hypothesis: messages from the descriptors


def message_strategy(descriptor: pb_descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Values for every field of a message type (nested messages a few levels deep)."""
    fd = pb_descriptor.FieldDescriptor
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in descriptor.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value: st.SearchStrategy[Any] = st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=2)
        elif f.type == fd.TYPE_MESSAGE:
            if depth >= 3:
                continue
            value = message_strategy(f.message_type, depth + 1)
        elif f.type == fd.TYPE_STRING:
            value = st.one_of(st.text(max_size=24), st.sampled_from(
                ["/", "/proc", "..", "c1", "CAP_KILL", "RLIMIT_NOFILE", "tmpfs", "bind", "rbind", "ro", "pid",
                 "mount", "uts", "lo", "127.0.0.1", "10.0.0.0/8", "default", "virtio-fs", "9p", "true"]))
        elif f.type == fd.TYPE_BYTES:
            value = st.binary(max_size=32)
        elif f.type == fd.TYPE_BOOL:
            value = st.booleans()
        elif f.type == fd.TYPE_ENUM:
            value = st.sampled_from([v.number for v in f.enum_type.values])
        elif f.type in (fd.TYPE_INT64, fd.TYPE_SINT64, fd.TYPE_SFIXED64):
            value = st.integers(-(1 << 63), (1 << 63) - 1)
        elif f.type in (fd.TYPE_UINT64, fd.TYPE_FIXED64):
            value = st.integers(0, (1 << 64) - 1)
        elif f.type in (fd.TYPE_INT32, fd.TYPE_SINT32, fd.TYPE_SFIXED32):
            value = st.integers(-(1 << 31), (1 << 31) - 1)
        else:
            value = st.integers(0, (1 << 32) - 1)
        if f.is_repeated and not (f.message_type is not None and f.message_type.GetOptions().map_entry):
            value = st.lists(value, max_size=3)
        fields[f.name] = value
    return st.fixed_dictionaries({}, optional=fields)


def build(message_type: type[Message], values: dict[str, Any]) -> Message:
    msg = message_type()
    _fill(msg, values)
    return msg


def _fill(msg: Message, values: dict[str, Any]) -> None:
    for name, value in values.items():
        f = msg.DESCRIPTOR.fields_by_name[name]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            getattr(msg, name).update(value)
        elif f.message_type is not None and f.is_repeated:
            for item in value:
                _fill(getattr(msg, name).add(), item)
        elif f.message_type is not None:
            sub = getattr(msg, name)
            sub.SetInParent()
            _fill(sub, value)
        elif f.is_repeated:
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)


GENERATED: list[tuple[str, type[Message]]] = [
    ("CreateContainer", agent_pb2.CreateContainerRequest),
    ("ExecProcess", agent_pb2.ExecProcessRequest),
    ("CreateSandbox", agent_pb2.CreateSandboxRequest),
    ("UpdateInterface", agent_pb2.UpdateInterfaceRequest),
    ("UpdateRoutes", agent_pb2.UpdateRoutesRequest),
    ("AddARPNeighbors", agent_pb2.AddARPNeighborsRequest),
    ("SignalProcess", agent_pb2.SignalProcessRequest),
    ("RemoveContainer", agent_pb2.RemoveContainerRequest),
    ("WriteStdin", agent_pb2.WriteStreamRequest),
    ("ReadStdout", agent_pb2.ReadStreamRequest),
    ("WaitProcess", agent_pb2.WaitProcessRequest),
    ("StartContainer", agent_pb2.StartContainerRequest),
    ("CloseStdin", agent_pb2.CloseStdinRequest),
]


def _generated_request() -> st.SearchStrategy[tuple[str, bytes]]:
    def one(item: tuple[str, type[Message]]) -> st.SearchStrategy[tuple[str, bytes]]:
        name, message_type = item
        return message_strategy(message_type.DESCRIPTOR).map(
            lambda values: (name, build(message_type, values).SerializeToString()))

    return st.one_of([one(item) for item in GENERATED])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(requests=st.lists(_generated_request(), min_size=1, max_size=4))
def test_generated_lifecycle_messages(fuzzed: Fuzzed, requests: list[tuple[str, bytes]]) -> None:
    replies = session(fuzzed.agent, [frame(2 * i + 1, name, payload) for i, (name, payload) in enumerate(requests)])
    assert all(code in KNOWN_CODES for _, code in replies)
    fuzzed.agent.assert_serving(timeout=20)


def test_every_lifecycle_method_has_seeds(fuzzed: Fuzzed) -> None:
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    not_fuzzed = {"DestroySandbox", "GetOOMEvent"}  # the first ends the agent; the second is unimplemented
    seeded = {name for name, _ in fuzzed.seeds}
    generated = {name for name, _ in GENERATED}
    assert {m.name for m in service.methods} - not_fuzzed <= seeded
    assert {m.name for m in service.methods} - not_fuzzed - {"GetGuestDetails", "ReadStderr"} <= generated

