"""Containers in a cgroup v2 group: the agent given a private cgroup2 mount (--cgroup-root), as it mounts
one at /sys/fs/cgroup when it is PID 1 in a VM. This host runs cgroup v1 for the memory, pids and cpu
controllers, so its cgroup2 hierarchy may lack them: then a limit is refused with an error naming the
controller, and the limits themselves are checked where the controllers exist (the VM tests)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from osbuilder.ttrpc.client import Code, TtrpcClient, TtrpcStatusError

if TYPE_CHECKING:
    from conftest import AgentProcess, Harness, Workloads  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.integration

def host_cgroup2() -> Path | None:
    """Where this host shows the cgroup2 hierarchy (the same one a fresh cgroup2 mount shows)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2" and fields[3] == "/":
            return Path(fields[4])
    return None


@pytest.fixture
def cgroup_agent(agent_binary: Path, run_agent: Callable[..., AgentProcess], tmp_path: Path,
                 harness: type[Harness]) -> Iterator[tuple[AgentProcess, Path, str]]:
    reason = harness.namespaces_usable()
    if reason:
        pytest.skip(reason)
    host = host_cgroup2()
    if host is None:
        pytest.skip("this host has no cgroup2 hierarchy")
    mount = tmp_path / "cgroup2"
    mount.mkdir()
    agent = run_agent(agent_binary, "--cgroup-root", str(mount),
                      prefix=harness.namespaced_prefix(tmp_path, mount_cgroup2=mount))
    parent = f"osb-test-{uuid.uuid4().hex[:10]}"
    yield agent, host, parent
    agent.stop()
    deadline = time.monotonic() + 10  # the agent's children die with it (parent-death signal)
    for d in sorted((host / parent).glob("**/"), key=lambda p: len(p.parts), reverse=True):
        while True:
            try:
                d.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def test_container_runs_in_its_own_group(cgroup_agent: tuple[AgentProcess, Path, str], busybox_root: Path,
                                         workloads: type[Workloads]) -> None:
    agent, host, parent = cgroup_agent
    spec = workloads.spec(busybox_root, ["sh", "-c", "grep ^0:: /proc/self/cgroup; exec cat"])
    spec.Linux.CgroupsPath = f"/{parent}/c1"
    with agent.connect() as c:
        c.create_sandbox(hostname="cg", sandbox_id="cg")
        c.create_container(container_id="c1", exec_id="c1", spec=spec)
        group = host / parent / "c1"
        assert group.is_dir()
        c.start_container("c1")
        assert c.read_stdout("c1", "c1") == f"0::/{parent}/c1\n".encode()
        deadline = time.monotonic() + 10  # grep may still be on its way out
        while len((group / "cgroup.procs").read_text().split()) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len((group / "cgroup.procs").read_text().split()) == 1
        c.close_stdin("c1", "c1")
        assert c.wait_process("c1", "c1") == 0
        c.remove_container("c1")
    deadline = time.monotonic() + 15  # removed at once, or retried while the kernel empties it
    while group.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group.exists()


def test_systemd_style_cgroups_path(cgroup_agent: tuple[AgentProcess, Path, str], busybox_root: Path,
                                    workloads: type[Workloads]) -> None:
    agent, _, parent = cgroup_agent
    spec = workloads.spec(busybox_root, ["sh", "-c", "grep ^0:: /proc/self/cgroup"])
    spec.Linux.CgroupsPath = f"{parent}:osb:c3"  # slice:prefix:name
    with agent.connect() as c:
        c.create_sandbox(hostname="cg", sandbox_id="cg")
        r = workloads.run(c, "c3", spec)
    assert (r.status, r.stdout) == (0, f"0::/{parent}/osb-c3.scope\n".encode())


def test_remove_kills_every_process_of_the_group(cgroup_agent: tuple[AgentProcess, Path, str],
                                                 busybox_root: Path, workloads: type[Workloads]) -> None:
    """Without a pid namespace, killing the container's process leaves its children: the group does not."""
    agent, host, parent = cgroup_agent
    spec = without_pid_namespace(workloads.spec(busybox_root, ["sh", "-c",
                                                                "sleep 1000 & sleep 1000 & echo started; wait"]))
    spec.Linux.CgroupsPath = f"/{parent}/c2"
    with agent.connect() as c:
        c.create_sandbox(hostname="cg", sandbox_id="cg")
        c.create_container(container_id="c2", exec_id="c2", spec=spec)
        c.start_container("c2")
        assert c.read_stdout("c2", "c2") == b"started\n"
        pids = [int(p) for p in (host / parent / "c2" / "cgroup.procs").read_text().split()]
        assert len(pids) == 3
        c.remove_container("c2", timeout_seconds=10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def without_pid_namespace(spec: Any) -> Any:
    for ns in list(spec.Linux.Namespaces):
        if ns.Type == "pid":
            spec.Linux.Namespaces.remove(ns)
    return spec


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return status != "Z"


def test_limits_are_written_or_refused_by_controller(cgroup_agent: tuple[AgentProcess, Path, str],
                                                     busybox_root: Path, workloads: type[Workloads]) -> None:
    agent, host, parent = cgroup_agent
    available = set((host / "cgroup.controllers").read_text().split())
    cases = [("memory", "Memory", lambda s: setattr(s.Linux.Resources.Memory, "Limit", 64 << 20), "memory.max",
              str(64 << 20)),
             ("pids", "Pids", lambda s: setattr(s.Linux.Resources.Pids, "Limit", 42), "pids.max", "42"),
             ("cpu", "CPU", lambda s: (setattr(s.Linux.Resources.CPU, "Quota", 50000),
                                       setattr(s.Linux.Resources.CPU, "Period", 100000)), "cpu.max", "50000 100000")]
    with agent.connect() as c:
        c.create_sandbox(hostname="cg", sandbox_id="cg")
        for i, (controller, field, change, knob, value) in enumerate(cases):
            spec = workloads.spec(busybox_root, ["sh", "-c", f"cat /sys/fs/cgroup/{parent}/l{i}/{knob}"])
            change(spec)
            spec.Linux.CgroupsPath = f"/{parent}/l{i}"
            cid = f"l{i}"
            if controller in available:
                r = workloads.run(c, cid, spec)
                assert (r.status, r.stdout.decode().strip()) == (0, value), r.stderr
                continue
            with pytest.raises(TtrpcStatusError) as exc:
                c.create_container(container_id=cid, exec_id=cid, spec=spec)
            assert exc.value.code == Code.FAILED_PRECONDITION
            assert f"OCI.Linux.Resources.{field}" in exc.value.message
            assert f"the {controller} controller is not available" in exc.value.message
            assert not (host / parent / cid).exists()
        assert c.check() == 1


def test_signal_to_every_process_goes_through_the_group(cgroup_agent: tuple[AgentProcess, Path, str],
                                                         busybox_root: Path, workloads: type[Workloads]) -> None:
    agent, host, parent = cgroup_agent
    spec = without_pid_namespace(workloads.spec(busybox_root, ["sh", "-c",
                                                                "sleep 1000 & echo started; wait; echo waited"]))
    spec.Linux.CgroupsPath = f"/{parent}/s"
    client: TtrpcClient
    with agent.connect() as client:
        client.create_sandbox(hostname="cg", sandbox_id="cg")
        client.create_container(container_id="s", exec_id="s", spec=spec)
        client.start_container("s")
        assert client.read_stdout("s", "s") == b"started\n"
        # exec_id "": every process in the container, the sleep included (sh waits for it, then goes on)
        client.signal_process("s", "", signal.SIGTERM)
        assert client.wait_process("s", "s") == 128 + signal.SIGTERM
        procs = host / parent / "s" / "cgroup.procs"
        deadline = time.monotonic() + 10
        while procs.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procs.read_text().strip() == ""  # the sleep got it too
        client.remove_container("s")
