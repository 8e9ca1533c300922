"""The agent runs containers on this host (root, its own mount/UTS/network namespaces, --listen-unix):
the sandbox and container lifecycle end to end, stdio, exec, signals, removal, several calls in flight
on one connection, and a clear error (with the agent still serving) for every bad request.

The container root is busybox-static with its applet links; the spec is `runc spec`'s default, as Kata
constrains it (no terminal, no network namespace), converted by osbuilder.sandbox.protospec."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from osbuilder.ttrpc.client import (
    MESSAGE_TYPE_REQUEST,
    Code,
    TtrpcClient,
    TtrpcStatusError,
    encode_frame,
    encode_request,
)
from osbuilder.ttrpc.protos import agent_pb2, oci_pb2

if TYPE_CHECKING:
    from conftest import AgentProcess, Workloads  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.integration

MIB = 1 << 20


@pytest.fixture
def client(ns_agent: AgentProcess) -> TtrpcClient:
    c = ns_agent.connect(timeout=30)
    c.create_sandbox(hostname="osb-sandbox", sandbox_id="sandbox1")
    return c


def status_error(fn: Any, *args: Any, **kwargs: Any) -> TtrpcStatusError:
    with pytest.raises(TtrpcStatusError) as exc:
        fn(*args, **kwargs)
    return exc.value


# ---------------------------------------------------------------------------- the lifecycle


def test_exit_code_and_separate_streams(client: TtrpcClient, busybox_root: Path, workloads: type[Workloads],
                                        ns_agent: AgentProcess) -> None:
    spec = workloads.spec(busybox_root, ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 42"])
    r = workloads.run(client, "c1", spec)
    assert (r.status, r.stdout, r.stderr) == (42, b"to-stdout\n", b"to-stderr\n")
    assert client.is_serving()


def test_one_mebibyte_of_output_arrives_intact(client: TtrpcClient, busybox_root: Path,
                                               workloads: type[Workloads]) -> None:
    script = f"head -c {MIB} /dev/urandom > /dev/shm/blob && sha256sum /dev/shm/blob >&2 && cat /dev/shm/blob"
    r = workloads.run(client, "big", workloads.spec(busybox_root, ["sh", "-c", script]))
    assert r.status == 0, r.stderr
    assert len(r.stdout) == MIB
    assert r.stderr.split()[0].decode() == hashlib.sha256(r.stdout).hexdigest()


def test_stdin_reaches_the_workload(client: TtrpcClient, busybox_root: Path, workloads: type[Workloads]) -> None:
    data = os.urandom(MIB)  # more than a pipe holds: the agent finishes the write as the workload reads
    r = workloads.run(client, "in", workloads.spec(busybox_root, ["sh", "-c", "sha256sum; wc -c </dev/null"]),
                      stdin=data)
    assert r.status == 0, r.stderr
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_signalled_process_reports_128_plus_signal(client: TtrpcClient, busybox_root: Path,
                                                   workloads: type[Workloads]) -> None:
    # A shell that is PID 1 of its namespace ignores `kill -TERM $$` (as under runc); one below it does not.
    r = workloads.run(client, "sig", workloads.spec(busybox_root, ["sh", "-c", "sh -c 'kill -TERM $$'; exit $?"]))
    assert r.status == 143
    client.create_container(container_id="k", exec_id="k", spec=workloads.spec(busybox_root, ["sleep", "1000"]))
    client.start_container("k")
    client.signal_process("k", "k", signal.SIGKILL)
    assert client.wait_process("k", "k", timeout=30) == 128 + signal.SIGKILL
    client.remove_container("k")


def test_signal_reaches_a_handler(client: TtrpcClient, busybox_root: Path, workloads: type[Workloads]) -> None:
    spec = workloads.spec(busybox_root, ["sh", "-c", "trap 'echo got-term; exit 3' TERM; echo ready; "
                                                       "while :; do sleep 0.05; done"])
    client.create_container(container_id="t", exec_id="t", spec=spec)
    client.start_container("t")
    assert client.read_stdout("t", "t") == b"ready\n"
    client.signal_process("t", "t", signal.SIGTERM)
    assert client.wait_process("t", "t", timeout=30) == 3
    assert client.read_stdout("t", "t") == b"got-term\n"
    assert client.read_stdout("t", "t") == b""
    client.remove_container("t")


def test_exec_runs_in_the_container(client: TtrpcClient, busybox_root: Path, workloads: type[Workloads]) -> None:
    spec = workloads.spec(busybox_root, ["sh", "-c", "echo $$ > /dev/shm/init-pid; exec cat"])
    client.create_container(container_id="e", exec_id="e", spec=spec)
    client.start_container("e")
    process = oci_pb2.Process(Args=["sh", "-c", "echo $$ $(cat /dev/shm/init-pid) $(hostname); exit 7"],
                              Env=["PATH=/bin"], Cwd="/")
    client.exec_process(container_id="e", exec_id="x1", process=process)
    out, err, threads = workloads.drain(client, "e", "x1")
    assert client.wait_process("e", "x1", timeout=30) == 7
    for t in threads:
        t.join(30)
    pid, init_pid, hostname = b"".join(out).decode().split()
    # same pid namespace (the container's process is 1 there, the exec'd one another) and hostname
    assert init_pid == "1" and pid != "1" and hostname == "runc", (out, err)
    # an exec'd shell is not the namespace's init: it dies of its own SIGTERM
    process = oci_pb2.Process(Args=["sh", "-c", "kill -TERM $$"], Env=["PATH=/bin"], Cwd="/")
    client.exec_process(container_id="e", exec_id="x2", process=process)
    assert client.wait_process("e", "x2", timeout=30) == 143
    client.close_stdin("e", "e")
    assert client.wait_process("e", "e", timeout=30) == 0
    client.remove_container("e")


def test_two_containers_one_after_the_other(client: TtrpcClient, busybox_root: Path,
                                            workloads: type[Workloads]) -> None:
    first = workloads.run(client, "one", workloads.spec(busybox_root, ["sh", "-c", "echo first; exit 1"]))
    second = workloads.run(client, "two", workloads.spec(busybox_root, ["sh", "-c", "echo second"]))
    assert (first.status, first.stdout, second.status, second.stdout) == (1, b"first\n", 0, b"second\n")
    # the first one is gone: its id is free again
    again = workloads.run(client, "one", workloads.spec(busybox_root, ["true"]))
    assert again.status == 0


def test_remove_kills_a_running_container(client: TtrpcClient, busybox_root: Path,
                                          workloads: type[Workloads]) -> None:
    client.create_container(container_id="s", exec_id="s", spec=workloads.spec(busybox_root, ["sleep", "1000"]))
    client.start_container("s")
    statuses: list[int] = []
    waiter = threading.Thread(target=lambda: statuses.append(client.wait_process("s", "s")))
    waiter.start()
    client.remove_container("s", timeout_seconds=10)
    waiter.join(30)
    assert statuses == [128 + signal.SIGKILL]
    assert status_error(client.start_container, "s").code == Code.NOT_FOUND


def test_remove_of_a_created_container_and_timeout_zero(client: TtrpcClient, busybox_root: Path,
                                                         workloads: type[Workloads]) -> None:
    client.create_container(container_id="c", exec_id="c", spec=workloads.spec(busybox_root, ["true"]))
    client.remove_container("c", timeout_seconds=0)  # 0: as long as it takes (SIGKILL is quick)
    assert status_error(client.wait_process, "c", "c").code == Code.NOT_FOUND


def test_wait_pending_while_other_calls_are_answered(client: TtrpcClient, busybox_root: Path,
                                                     workloads: type[Workloads]) -> None:
    client.create_container(container_id="w", exec_id="w", spec=workloads.spec(busybox_root, ["sleep", "1000"]))
    client.start_container("w")
    results: list[int] = []
    waiters = [threading.Thread(target=lambda: results.append(client.wait_process("w", "w"))) for _ in range(3)]
    reader = threading.Thread(target=lambda: results.append(len(client.read_stdout("w", "w"))))
    for t in (*waiters, reader):
        t.start()
    time.sleep(0.3)  # the calls above are now pending in the agent
    for _ in range(20):
        assert client.check() == 1  # on the same connection, while four calls wait
    assert client.version().agent_version
    assert results == []
    client.signal_process("w", "", signal.SIGKILL)  # empty exec_id: every process of the container
    for t in (*waiters, reader):
        t.join(30)
    assert sorted(results) == [0, 137, 137, 137]  # the read gets the end of the stream
    client.remove_container("w")


def test_output_of_lingering_children_ends_after_the_exit(client: TtrpcClient, busybox_root: Path,
                                                          workloads: type[Workloads]) -> None:
    spec = workloads.spec(busybox_root, ["sh", "-c", "exec cat"])
    client.create_container(container_id="l", exec_id="l", spec=spec)
    client.start_container("l")
    # the exec'd shell leaves a child that still holds its stdout
    process = oci_pb2.Process(Args=["sh", "-c", "sleep 30 & echo parent-done"], Env=["PATH=/bin"], Cwd="/")
    client.exec_process(container_id="l", exec_id="x", process=process)
    assert client.wait_process("l", "x", timeout=30) == 0
    data = b""
    while chunk := client.read_stdout("l", "x", timeout=20):
        data += chunk
    assert data == b"parent-done\n"
    client.remove_container("l")


def test_destroy_sandbox_takes_running_containers_down(ns_agent: AgentProcess, client: TtrpcClient,
                                                       busybox_root: Path, workloads: type[Workloads]) -> None:
    client.create_container(container_id="d", exec_id="d", spec=workloads.spec(busybox_root, ["sleep", "1000"]))
    client.start_container("d")
    pid = container_pids(ns_agent)
    assert pid
    client.destroy_sandbox()
    assert ns_agent.wait(20) == 0
    assert not any(Path(f"/proc/{p}").exists() for p in pid)


def container_pids(agent: AgentProcess) -> list[int]:
    """The agent's children (the agent itself runs under unshare and sh's exec)."""
    text = Path(f"/proc/{agent.proc.pid}/task/{agent.proc.pid}/children").read_text()
    return [int(p) for p in text.split()]


# ---------------------------------------------------------------------------- sandbox


def test_sandbox_hostname_and_bind_storage(ns_agent: AgentProcess, busybox_root: Path, tmp_path: Path,
                                           workloads: type[Workloads]) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("from the host\n")
    mount_point = tmp_path / "guest" / "shared"
    with ns_agent.connect() as c:
        c.create_sandbox(hostname="sbx-host", sandbox_id="sb2", storages=[agent_pb2.Storage(
            driver="watchable-bind", source=str(shared), fstype="bind", mount_point=str(mount_point))])
        err = status_error(c.create_sandbox, hostname="again", sandbox_id="sb3")
        assert err.code == Code.ALREADY_EXISTS and "sb3" in err.message and "sb2" in err.message
        spec_json = workloads.spec_json(busybox_root, ["sh", "-c", "hostname; cat /mnt/hello.txt"])
        # no UTS namespace: the container sees the sandbox's hostname
        spec_json["linux"]["namespaces"] = [n for n in spec_json["linux"]["namespaces"] if n["type"] != "uts"]
        del spec_json["hostname"]
        spec_json["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(mount_point),
                                    "options": ["rbind", "ro"]})
        r = workloads.run(c, "st", workloads.to_proto(spec_json))
        assert (r.status, r.stdout) == (0, b"sbx-host\nfrom the host\n"), r.stderr
        agent_pid = container_parent(ns_agent)
        mounts = Path(f"/proc/{agent_pid}/mountinfo").read_text()
        assert f" {mount_point} " in mounts  # in the agent's mount namespace ...
        c.destroy_sandbox()
    assert ns_agent.wait(20) == 0
    assert f" {mount_point} " not in Path("/proc/self/mountinfo").read_text()  # ... and not the host's


def container_parent(agent: AgentProcess) -> int:
    """The agent's pid (unshare execs sh, which execs the agent: same process)."""
    return agent.proc.pid


# ---------------------------------------------------------------------------- bad requests


def test_container_calls_before_create_sandbox(ns_agent: AgentProcess, busybox_root: Path,
                                               workloads: type[Workloads]) -> None:
    with ns_agent.connect() as c:
        err = status_error(c.create_container, container_id="c", exec_id="c",
                           spec=workloads.spec(busybox_root, ["true"]))
        assert err.code == Code.FAILED_PRECONDITION and "CreateSandbox" in err.message
        assert c.check() == 1


def spec_with(busybox_root: Path, workloads: type[Workloads], change: Any) -> oci_pb2.Spec:
    spec = workloads.spec(busybox_root, ["true"])
    change(spec)
    return spec


BAD_SPECS = [
    ("no-args", lambda s: s.Process.ClearField("Args"), "OCI.Process.Args"),
    ("empty-command", lambda s: s.Process.Args.__setitem__(0, ""), "OCI.Process.Args[0]"),
    ("no-process", lambda s: s.ClearField("Process"), "OCI.Process"),
    ("no-root", lambda s: s.ClearField("Root"), "OCI.Root.Path"),
    ("relative-root", lambda s: setattr(s.Root, "Path", "rootfs"), "OCI.Root.Path"),
    ("missing-root", lambda s: setattr(s.Root, "Path", "/nonexistent/root"), "/nonexistent/root"),
    ("relative-mount", lambda s: setattr(s.Mounts[0], "destination", "proc"), "OCI.Mounts[0].destination"),
    ("mount-without-type", lambda s: setattr(s.Mounts[1], "type", ""), "OCI.Mounts[1].type"),
    ("relative-cwd", lambda s: setattr(s.Process, "Cwd", "tmp"), "OCI.Process.Cwd"),
    ("env-without-equals", lambda s: s.Process.Env.append("NOEQUALS"), "OCI.Process.Env[2]"),
    ("terminal", lambda s: setattr(s.Process, "Terminal", True), "OCI.Process.Terminal"),
    ("unknown-capability", lambda s: s.Process.Capabilities.Bounding.append("CAP_NOPE"), "CAP_NOPE"),
    ("unknown-rlimit", lambda s: s.Process.Rlimits.add(Type="RLIMIT_NOPE", Hard=1, Soft=1), "RLIMIT_NOPE"),
    ("soft-above-hard", lambda s: s.Process.Rlimits.add(Type="RLIMIT_CORE", Hard=1, Soft=2), "Rlimits[1]"),
    ("no-mount-namespace", lambda s: [s.Linux.Namespaces.remove(n) for n in list(s.Linux.Namespaces)
                                      if n.Type == "mount"], "mount namespace"),
    ("user-namespace", lambda s: s.Linux.Namespaces.add(Type="user"), "user namespaces"),
    ("unknown-namespace", lambda s: s.Linux.Namespaces.add(Type="nope"), "\"nope\""),
    ("hostname-without-uts", lambda s: [s.Linux.Namespaces.remove(n) for n in list(s.Linux.Namespaces)
                                        if n.Type == "uts"], "OCI.Hostname"),
    ("seccomp", lambda s: s.Linux.Seccomp.SetInParent(), "OCI.Linux.Seccomp"),
    ("id-mappings", lambda s: s.Linux.UIDMappings.add(HostID=0, ContainerID=0, Size=1), "UIDMappings"),
    ("masked-relative", lambda s: s.Linux.MaskedPaths.append("proc/x"), "OCI.Linux.MaskedPaths"),
    ("bad-propagation", lambda s: setattr(s.Linux, "RootfsPropagation", "sideways"), "RootfsPropagation"),
    ("bad-device", lambda s: s.Linux.Devices.add(Path="/dev/x", Type="z"), "OCI.Linux.Devices[0].Type"),
    ("negative-memory", lambda s: setattr(s.Linux.Resources.Memory, "Limit", -5), "Memory.Limit"),
    ("cgroup-dots", lambda s: setattr(s.Linux, "CgroupsPath", "/a/../b"), "CgroupsPath"),
    ("sysctl-path", lambda s: s.Linux.Sysctl.__setitem__("../x", "1"), "OCI.Linux.Sysctl"),
    ("no-such-command", lambda s: s.Process.Args.__setitem__(0, "no-such-command"),
     "executable file not found"),
    ("not-executable", lambda s: s.Process.Args.__setitem__(0, "/etc/passwd"), "permission denied"),
    ("bind-relative-source", lambda s: s.Mounts.add(destination="/mnt", type="bind", source="rel",
                                                    options=["rbind"]), "OCI.Mounts[7].source"),
    ("bind-missing-source", lambda s: s.Mounts.add(destination="/mnt", type="bind", source="/nonexistent",
                                                   options=["rbind"]), "/nonexistent"),
    ("bad-mount-option", lambda s: s.Mounts[3].options.append("nonsense=1"), "OCI.Mounts[3]"),
]


@pytest.mark.parametrize(("change", "needle"), [(c, n) for _, c, n in BAD_SPECS], ids=[i for i, _, _ in BAD_SPECS])
def test_bad_spec_is_refused_and_the_agent_keeps_serving(client: TtrpcClient, busybox_root: Path,
                                                         workloads: type[Workloads], change: Any,
                                                         needle: str) -> None:
    err = status_error(client.create_container, container_id="bad", exec_id="bad",
                       spec=spec_with(busybox_root, workloads, change))
    assert err.code in (Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION), err
    assert needle in err.message and err.message.startswith("CreateContainer: "), err.message
    assert client.check() == 1
    # nothing of it stayed: the id can be used right away
    r = workloads.run(client, "bad", workloads.spec(busybox_root, ["true"]))
    assert r.status == 0


def test_malformed_spec_bytes(ns_agent: AgentProcess) -> None:
    body = agent_pb2.CreateContainerRequest(container_id="m", exec_id="m").SerializeToString()
    body += b"\x32\x05\x12\x10abc"  # OCI (field 6) holding a Process whose length runs past its end
    with ns_agent.connect() as c:
        c.send_raw(encode_frame(1, MESSAGE_TYPE_REQUEST, encode_request("grpc.AgentService", "CreateContainer",
                                                                          body)))
        sid, resp = c.read_response()
        assert sid == 1 and resp.status.code == Code.INVALID_ARGUMENT
        assert resp.status.message == "CreateContainer: OCI.Process: malformed protobuf field"
    with ns_agent.connect() as c:
        assert c.check() == 1


@pytest.mark.parametrize("bad_id", ["", "../etc", "a/b", "-dash-first", "x" * 129, "sp ace"])
def test_bad_container_ids(client: TtrpcClient, busybox_root: Path, workloads: type[Workloads],
                           bad_id: str) -> None:
    err = status_error(client.create_container, container_id=bad_id, exec_id="e",
                       spec=workloads.spec(busybox_root, ["true"]))
    assert err.code == Code.INVALID_ARGUMENT and "container_id" in err.message
    err = status_error(client.wait_process, bad_id, "e")
    assert err.code == Code.INVALID_ARGUMENT and "container_id" in err.message
    assert client.check() == 1


def test_state_errors_name_the_container(client: TtrpcClient, busybox_root: Path,
                                         workloads: type[Workloads]) -> None:
    for call, args in [(client.start_container, ("ghost",)), (client.wait_process, ("ghost", "ghost")),
                       (client.read_stdout, ("ghost", "ghost")), (client.write_stdin, ("ghost", "ghost", b"x")),
                       (client.close_stdin, ("ghost", "ghost")), (client.signal_process, ("ghost", "", 9)),
                       (client.remove_container, ("ghost",))]:
        err = status_error(call, *args)
        assert err.code == Code.NOT_FOUND and '"ghost"' in err.message, (call, err)
    err = status_error(client.exec_process, container_id="ghost", exec_id="x",
                       process=oci_pb2.Process(Args=["true"], Cwd="/"))
    assert err.code == Code.NOT_FOUND and '"ghost"' in err.message

    client.create_container(container_id="c", exec_id="c", spec=workloads.spec(busybox_root, ["sh", "-c", "exit 5"]))
    err = status_error(client.create_container, container_id="c", exec_id="c", spec=workloads.spec(busybox_root, ["true"]))
    assert err.code == Code.ALREADY_EXISTS and '"c"' in err.message
    err = status_error(client.exec_process, container_id="c", exec_id="x",
                       process=oci_pb2.Process(Args=["true"], Cwd="/"))
    assert err.code == Code.FAILED_PRECONDITION and "not running" in err.message
    err = status_error(client.wait_process, "c", "other")
    assert err.code == Code.NOT_FOUND and '"other"' in err.message
    err = status_error(client.read_stdout, "c", "c", 0)
    assert err.code == Code.INVALID_ARGUMENT and "len" in err.message
    client.start_container("c")
    err = status_error(client.start_container, "c")
    assert err.code == Code.FAILED_PRECONDITION and '"c"' in err.message
    assert client.wait_process("c", "c") == 5
    err = status_error(client.exec_process, container_id="c", exec_id="x",
                       process=oci_pb2.Process(Args=["true"], Cwd="/"))
    assert err.code == Code.FAILED_PRECONDITION and "stopped" in err.message
    err = status_error(client.signal_process, "c", "c", 99)
    assert err.code == Code.INVALID_ARGUMENT and "signal" in err.message
    client.remove_container("c")
    assert client.check() == 1


def test_exec_errors(client: TtrpcClient, busybox_root: Path, workloads: type[Workloads]) -> None:
    client.create_container(container_id="c", exec_id="c", spec=workloads.spec(busybox_root, ["sh", "-c", "exec cat"]))
    client.start_container("c")
    err = status_error(client.exec_process, container_id="c", exec_id="x",
                       process=oci_pb2.Process(Args=["no-such-command"], Env=["PATH=/bin"], Cwd="/"))
    assert err.code == Code.INVALID_ARGUMENT and "process.Args[0]" in err.message
    assert "executable file not found" in err.message
    err = status_error(client.exec_process, container_id="c", exec_id="c",
                       process=oci_pb2.Process(Args=["true"], Env=["PATH=/bin"], Cwd="/"))
    assert err.code == Code.ALREADY_EXISTS
    err = status_error(client.exec_process, container_id="c", exec_id="y", process=oci_pb2.Process(Cwd="/"))
    assert err.code == Code.INVALID_ARGUMENT and "process.Args" in err.message
    client.exec_process(container_id="c", exec_id="z", process=oci_pb2.Process(Args=["sleep", "100"],
                                                                                Env=["PATH=/bin"], Cwd="/"))
    err = status_error(client.exec_process, container_id="c", exec_id="z",
                       process=oci_pb2.Process(Args=["true"], Env=["PATH=/bin"], Cwd="/"))
    assert err.code == Code.ALREADY_EXISTS and '"z"' in err.message
    client.signal_process("c", "z", signal.SIGKILL)
    assert client.wait_process("c", "z") == 137
    # an exited process's id can be used again
    client.exec_process(container_id="c", exec_id="z", process=oci_pb2.Process(Args=["true"], Env=["PATH=/bin"],
                                                                                Cwd="/"))
    assert client.wait_process("c", "z") == 0
    client.remove_container("c")
    assert client.check() == 1


def test_exec_failure_is_reported_by_start(client: TtrpcClient, busybox_root: Path, tmp_path: Path,
                                           workloads: type[Workloads]) -> None:
    """A command found at create but that the kernel cannot exec: StartContainer says so (through the
    close-on-exec pipe) instead of hanging."""
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(busybox_root), str(root)], check=True)
    bad = root / "bin" / "not-a-program"
    bad.write_bytes(b"\x00\x01garbage")
    bad.chmod(0o755)
    client.create_container(container_id="x", exec_id="x", spec=workloads.spec(root, ["not-a-program"]))
    err = status_error(client.start_container, "x")
    assert err.code == Code.INVALID_ARGUMENT and "Exec format error" in err.message, err.message
    assert err.message.startswith("StartContainer: OCI.Process.Args[0]")
    assert client.wait_process("x", "x") == 127
    client.remove_container("x")
    assert client.check() == 1


def test_bad_storages_and_duplicate_sandbox_fields(ns_agent: AgentProcess, tmp_path: Path) -> None:
    with ns_agent.connect() as c:
        err = status_error(c.create_sandbox, hostname="h", sandbox_id="s",
                           storages=[agent_pb2.Storage(driver="blk", source="vda", mount_point="/x")])
        assert err.code == Code.INVALID_ARGUMENT and "storages[0].driver" in err.message and "blk" in err.message
        err = status_error(c.create_sandbox, hostname="h", sandbox_id="s",
                           storages=[agent_pb2.Storage(driver="virtio-fs", source="", mount_point="/x")])
        assert err.code == Code.INVALID_ARGUMENT and "storages[0].source" in err.message
        err = status_error(c.create_sandbox, hostname="h", sandbox_id="s",
                           storages=[agent_pb2.Storage(driver="9p", source="tag", mount_point="rel")])
        assert err.code == Code.INVALID_ARGUMENT and "storages[0].mount_point" in err.message
        err = status_error(c.create_sandbox, hostname="h", sandbox_id="")
        assert err.code == Code.INVALID_ARGUMENT and "sandbox_id" in err.message
        err = status_error(c.create_sandbox, hostname="h" * 65, sandbox_id="s")
        assert err.code == Code.INVALID_ARGUMENT and "hostname" in err.message
        # a share that does not exist: the mount fails and names the storage
        err = status_error(c.create_sandbox, hostname="h", sandbox_id="s", storages=[agent_pb2.Storage(
            driver="virtio-fs", source="kataShared", fstype="virtiofs", mount_point=str(tmp_path / "none"))])
        assert err.code == Code.FAILED_PRECONDITION and "storages[0]" in err.message and "kataShared" in err.message
        c.create_sandbox(hostname="h", sandbox_id="s")  # the failed ones left nothing behind
        assert c.check() == 1


def test_resources_without_cgroup2_are_refused(client: TtrpcClient, busybox_root: Path,
                                               workloads: type[Workloads]) -> None:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        pytest.skip("this host has cgroup v2 at /sys/fs/cgroup (see test_agent_cgroup.py)")
    spec = workloads.spec(busybox_root, ["true"])
    spec.Linux.Resources.Memory.Limit = 64 * MIB
    err = status_error(client.create_container, container_id="r", exec_id="r", spec=spec)
    assert err.code == Code.FAILED_PRECONDITION and "OCI.Linux.Resources.Memory" in err.message
    assert client.check() == 1


def test_large_spec_is_not_truncated(client: TtrpcClient, busybox_root: Path, workloads: type[Workloads]) -> None:
    spec = workloads.spec(busybox_root, ["sh", "-c", "env | grep -c ^OSB_; echo $OSB_1999"])
    spec.Process.Env.extend(f"OSB_{i}={'v' * 200}{i}" for i in range(2000))  # ~ 420 KiB of spec
    assert spec.ByteSize() > 400_000
    r = workloads.run(client, "large", spec)
    assert (r.status, r.stdout) == (0, b"2000\n" + b"v" * 200 + b"1999\n"), r.stderr


# ---------------------------------------------------------------------------- the network calls


def ip_in(agent: AgentProcess, *args: str) -> str:
    return subprocess.run(["nsenter", "-t", str(agent.proc.pid), "-n", "ip", *args], capture_output=True,
                          text=True, check=True).stdout


def test_network_calls(ns_agent: AgentProcess) -> None:
    from osbuilder.ttrpc.protos import types_pb2

    with ns_agent.connect() as c:
        lo = c.update_interface(types_pb2.Interface(name="lo", IPAddresses=[
            types_pb2.IPAddress(address="127.0.0.1", mask="8")]))
        assert lo.name == "lo"
        assert "UP" in ip_in(ns_agent, "link", "show", "lo").split("<")[1].split(">")[0].split(",")
        err = status_error(c.update_interface, types_pb2.Interface(name="eth0", mtu=1500))
        assert err.code == Code.NOT_FOUND and '"eth0"' in err.message
        err = status_error(c.update_interface, types_pb2.Interface(hwAddr="02:00:00:00:00:99"))
        assert err.code == Code.NOT_FOUND and "02:00:00:00:00:99" in err.message

        # a veth pair stands in for the VM's NIC (this host's kernel may lack the dummy driver)
        ip_in(ns_agent, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b")
        mac = ip_in(ns_agent, "link", "show", "veth-a").split("link/ether ")[1].split()[0]
        c.update_interface(types_pb2.Interface(hwAddr=mac, name="eth7", mtu=1400, IPAddresses=[
            types_pb2.IPAddress(address="10.9.8.7", mask="24"),
            types_pb2.IPAddress(family=types_pb2.v6, address="fd00::7", mask="64")]))
        link = ip_in(ns_agent, "addr", "show", "eth7")
        assert "mtu 1400" in link and "inet 10.9.8.7/24" in link and "inet6 fd00::7/64" in link
        assert ",UP" in link or "<UP" in link

        c.update_routes([types_pb2.Route(dest="10.20.0.0/16", gateway="10.9.8.1", device="eth7"),
                         types_pb2.Route(dest="192.168.77.0/24", device="eth7", scope=253)])
        routes = ip_in(ns_agent, "route", "show")
        assert "10.20.0.0/16 via 10.9.8.1 dev eth7" in routes and "192.168.77.0/24 dev eth7" in routes
        err = status_error(c.update_routes, [types_pb2.Route(dest="10.30.0.0/16", device="wlan9")])
        assert err.code == Code.NOT_FOUND and "routes.Routes[0].device" in err.message and "wlan9" in err.message
        err = status_error(c.update_routes, [types_pb2.Route(dest="10.30.0.0/99", device="eth7")])
        assert err.code == Code.INVALID_ARGUMENT and "dest" in err.message

        c.add_arp_neighbors([types_pb2.ARPNeighbor(toIPAddress=types_pb2.IPAddress(address="10.9.8.9"),
                                                   device="eth7", lladdr="02:11:22:33:44:55")])
        assert "10.9.8.9 dev eth7 lladdr 02:11:22:33:44:55 PERMANENT" in ip_in(ns_agent, "neigh", "show")
        err = status_error(c.add_arp_neighbors, [types_pb2.ARPNeighbor(
            toIPAddress=types_pb2.IPAddress(address="10.9.8.10"), device="nope0", lladdr="02:11:22:33:44:56")])
        assert err.code == Code.NOT_FOUND and '"nope0"' in err.message
        assert c.check() == 1


# ---------------------------------------------------------------------------- a user, groups, limits


def test_user_groups_home_and_capabilities(client: TtrpcClient, busybox_root: Path,
                                           workloads: type[Workloads]) -> None:
    spec_json = workloads.spec_json(busybox_root, ["sh", "-c", "id; echo $HOME; ulimit -n; "
                                                   "grep -E '^(Cap|NoNewPrivs|Groups)' /proc/self/status"])
    spec_json["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [7]}
    spec_json["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]
    r = workloads.run(client, "u", workloads.to_proto(spec_json))
    assert r.status == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith("uid=1000(tester) gid=1000(tester) "), lines
    assert lines[1:3] == ["/home/tester", "256"]
    status = dict(line.split(":\t") for line in lines[3:])
    assert status["CapBnd"] == "0000000020000420"  # KILL, NET_BIND_SERVICE, AUDIT_WRITE
    # a non-root execve keeps only ambient capabilities, and those need inheritable ones (as under runc)
    assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    # runc takes a numeric uid:gid's supplementary groups from the spec only (not /etc/group)
    assert status["Groups"].split() == ["7"]


def test_remove_while_the_container_is_being_created(client: TtrpcClient, busybox_root: Path,
                                                     workloads: type[Workloads]) -> None:
    """RemoveContainer arriving while CreateContainer's setup runs: both calls are answered."""
    spec = workloads.spec(busybox_root, ["true"])
    for i in range(3000):  # a setup that takes a while: many mounts
        spec.Mounts.add(destination=f"/dev/m{i}", type="tmpfs", source="tmpfs", options=["size=4k"])
    t0 = time.monotonic()
    client.create_container(container_id="slow", exec_id="slow", spec=spec)
    setup = time.monotonic() - t0
    client.remove_container("slow")
    outcome: list[BaseException | None] = []

    def create() -> None:
        try:
            client.create_container(container_id="slow", exec_id="slow", spec=spec)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=create)
    t.start()
    time.sleep(setup / 4)
    client.remove_container("slow", timeout_seconds=10)  # killed while being set up
    t.join(30)
    assert len(outcome) == 1
    err = outcome[0]
    if err is not None:  # the usual case: the setup was killed; else the remove came after it was done
        assert isinstance(err, TtrpcStatusError) and err.code in (Code.INTERNAL, Code.NOT_FOUND), err
        assert err.message.startswith("CreateContainer: ")
    assert status_error(client.start_container, "slow").code == Code.NOT_FOUND
    assert workloads.run(client, "slow", workloads.spec(busybox_root, ["true"])).status == 0
