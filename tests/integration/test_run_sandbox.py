"""The sandbox through its Python API, in one booted guest (agent-as-init DAX image, virtio-fs, TCG):
resource limits, containers one after the other, ExecProcess, and bad requests the agent must refuse
by call and field while it keeps serving."""

from __future__ import annotations

import contextlib
import copy
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from osbuilder.boot.plan import Assets, VmChoices, plan_vm
from osbuilder.sandbox import ocispec
from osbuilder.sandbox.mountns import guest_rootfs
from osbuilder.sandbox.protospec import spec_message
from osbuilder.sandbox.sandbox import AgentCallError, Sandbox, SandboxPlan
from osbuilder.sandbox.virtiofsd import find_virtiofsd
from osbuilder.sandbox.workload import ProcessStreams
from tests.helpers.assets import BootAssets
from tests.helpers.containers import leftovers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def sandbox(assets: BootAssets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    run_dir = Path("/run") / f"osbuilder-test-{tmp_path_factory.mktemp('sbx').name}"
    vm, _root = plan_vm(VmChoices(accel="tcg", transport="serial"), Assets(assets.kernel, assets.agent_image, None))
    plan = SandboxPlan(vm=vm, shared_fs="virtio-fs", virtiofsd=find_virtiofsd(), boot_timeout=240, run_dir=run_dir)
    with Sandbox(plan) as started:
        yield started
        started.destroy()
    assert not leftovers(run_dir)
    run_dir.rmdir()


def _config(root: Path, args: list[str], edit: Any = None) -> ocispec.ContainerConfig:
    spec = copy.deepcopy(ocispec.RUNC_DEFAULT_SPEC)
    spec["root"]["path"] = str(root)
    spec["process"]["args"] = args
    if edit is not None:
        edit(spec)
    ocispec.check_spec(spec, "test")
    return ocispec.ContainerConfig(ocispec.constrained(spec), root, "test")


def _start(sandbox: Sandbox, container_id: str, config: ocispec.ContainerConfig
           ) -> tuple[ProcessStreams, bytearray, bytearray]:
    out, err = bytearray(), bytearray()
    sandbox.create_container(container_id, config)
    streams = ProcessStreams(sandbox, container_id, container_id, stdout=out.extend, stderr=err.extend)
    sandbox.start_container(container_id)
    streams.start()
    return streams, out, err


def _run(sandbox: Sandbox, container_id: str, config: ocispec.ContainerConfig) -> tuple[int, str, str]:
    streams, out, err = _start(sandbox, container_id, config)
    status = sandbox.wait(container_id, container_id)
    assert streams.finish(30) and not streams.errors, streams.errors
    sandbox.remove_container(container_id)
    return status, out.decode(), err.decode()


def _still_serving(sandbox: Sandbox, root: Path) -> None:
    assert sandbox.client.is_serving(timeout=30)
    assert _run(sandbox, "probe", _config(root, ["echo", "alive"])) == (0, "alive\n", "")


CGROUP_FILE = "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/{name}"


def test_a_memory_limit_shows_in_memory_max(sandbox: Sandbox, container_rootfs: Path) -> None:
    config = _config(container_rootfs, ["sh", "-c", CGROUP_FILE.format(name="memory.max")],
                     lambda spec: spec["linux"]["resources"].update(memory={"limit": 64 << 20}))
    assert _run(sandbox, "memory", config) == (0, f"{64 << 20}\n", "")


def test_a_pids_limit_stops_a_fork_bomb_and_the_agent_survives(sandbox: Sandbox, container_rootfs: Path) -> None:
    # The bomb runs in a subshell, and the shell uses builtins only after it (a loop to let it hit the
    # limit, read, echo): dash, Ubuntu's sh, exits when one of its own forks fails.
    bomb = ("(f() { f | f & }; f); i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; "
            "read -r cg < /proc/self/cgroup; cg=${cg#0::}; "
            "read -r max < /sys/fs/cgroup$cg/pids.max; read -r events < /sys/fs/cgroup$cg/pids.events; "
            "echo $max; echo $events")
    config = _config(container_rootfs, ["sh", "-c", bomb],
                     lambda spec: spec["linux"]["resources"].update(pids={"limit": 24}))
    status, out, err = _run(sandbox, "bomb", config)
    limit, events = out.splitlines()
    assert status == 0 and limit == "24", (out, err[-500:])
    assert events.startswith("max ") and int(events.split()[1]) > 0  # the limit refused forks
    assert re.search(r"can't fork|Cannot fork", err), err[-500:]  # busybox sh; dash (Ubuntu's sh)
    _still_serving(sandbox, container_rootfs)


def test_two_containers_one_after_the_other(sandbox: Sandbox, container_rootfs: Path) -> None:
    assert _run(sandbox, "first", _config(container_rootfs, ["sh", "-c", "echo one; hostname"])) == \
        (0, "one\nrunc\n", "")
    renamed = _config(container_rootfs, ["sh", "-c", "echo two >&2; hostname"],
                      lambda spec: spec.update(hostname="second"))
    assert _run(sandbox, "second", renamed) == (0, "second\n", "two\n")


def test_exec_process_runs_a_second_process_in_a_running_container(sandbox: Sandbox,
                                                                   container_rootfs: Path) -> None:
    config = _config(container_rootfs, ["sh", "-c", "echo $$ > /dev/shm/init.pid; echo ready; exec sleep 600"])
    streams, out, _err = _start(sandbox, "running", config)
    process = dict(config.spec["process"], args=["sh", "-c", "cat /dev/shm/init.pid; echo $$; hostname"])
    sandbox.exec_process("running", "exec-1", process)
    exec_out, exec_err = bytearray(), bytearray()
    exec_streams = ProcessStreams(sandbox, "running", "exec-1", stdout=exec_out.extend, stderr=exec_err.extend)
    exec_streams.start()
    assert sandbox.wait("running", "exec-1") == 0
    assert exec_streams.finish(30)
    init_pid, exec_pid, hostname = exec_out.decode().split()
    assert init_pid == "1" and exec_pid != "1"  # the same PID namespace as the container's init
    assert hostname == "runc" and exec_err == b""
    # Not PID 1 of the namespace, so a process of its own signal dies: 128 + SIGTERM.
    sandbox.exec_process("running", "exec-2", dict(config.spec["process"], args=["sh", "-c", "kill -TERM $$"]))
    assert sandbox.wait("running", "exec-2") == 128 + signal.SIGTERM
    sandbox.signal("running", "running", signal.SIGKILL)
    assert sandbox.wait("running", "running") == 128 + signal.SIGKILL
    assert streams.finish(30) and out == b"ready\n"
    sandbox.remove_container("running")


def _refused(call: Any, *words: str) -> AgentCallError:
    with pytest.raises(AgentCallError) as caught:
        call()
    message = caught.value.message()
    for word in words:
        assert re.search(word, message, re.IGNORECASE), message
    assert caught.value.exit_code in (1, 2)
    return caught.value


def test_bad_requests_are_refused_by_call_and_field(sandbox: Sandbox, container_rootfs: Path) -> None:
    good = _config(container_rootfs, ["true"])
    spec = spec_message(good.spec, root_path=guest_rootfs("nowhere"))
    _refused(lambda: sandbox.create_container_raw("no-root", spec), "CreateContainer", "no-root", "root")
    _still_serving(sandbox, container_rootfs)

    # Past the host's own checks (a ContainerConfig made directly): the root is bound, the agent must
    # refuse the spec itself.
    no_args = dict(good.spec, process=dict(good.spec["process"], args=[]))
    _refused(lambda: sandbox.create_container("no-args", ocispec.ContainerConfig(no_args, container_rootfs, "test")),
             "CreateContainer", "no-args", "args")
    _still_serving(sandbox, container_rootfs)

    bogus = dict(good.spec, linux=dict(good.spec["linux"], namespaces=[{"type": "pid"}, {"type": "bogus"}]))
    _refused(lambda: sandbox.create_container("malformed", ocispec.ContainerConfig(bogus, container_rootfs, "test")),
             "CreateContainer", "malformed", "namespace|bogus")
    _still_serving(sandbox, container_rootfs)

    _refused(lambda: sandbox.start_container("unknown-id"), "StartContainer", "unknown-id", "NOT_FOUND")
    _refused(lambda: sandbox.wait("unknown-id", "unknown-id"), "WaitProcess", "unknown-id")
    _still_serving(sandbox, container_rootfs)

    sandbox.create_container("twice", _config(container_rootfs, ["sleep", "60"]))
    _refused(lambda: sandbox.create_container("twice", _config(container_rootfs, ["true"])), "CreateContainer",
             "twice", "ALREADY_EXISTS")
    sandbox.remove_container("twice")
    _still_serving(sandbox, container_rootfs)

    def missing_command() -> None:
        status, out, err = _run(sandbox, "missing", _config(container_rootfs, ["/no/such/command"]))
        raise AssertionError(f"ran with status {status}: {out!r} {err!r}")

    _refused(missing_command, r"(Create|Start)Container", "/no/such/command")
    with contextlib.suppress(AgentCallError):
        sandbox.remove_container("missing")  # when StartContainer refused it, the container exists
    _still_serving(sandbox, container_rootfs)
