"""The command runner: typed failures with the command line and output tail; children never outlive us."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from osbuilder import runner
from osbuilder.errors import CommandError, UsageError


def test_success_captures_output() -> None:
    result = runner.run(["sh", "-c", "echo out; echo err >&2"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")


def test_failure_carries_command_status_and_tail() -> None:
    script = "for i in $(seq 1 40); do echo line$i >&2; done; exit 3"
    with pytest.raises(CommandError) as caught:
        runner.run(["sh", "-c", script], what="the test step")
    error = caught.value
    assert error.returncode == 3
    assert list(error.argv) == ["sh", "-c", script]
    assert error.stderr_tail.splitlines()[-1] == "line40"
    assert "line1\n" not in error.stderr_tail  # only the tail
    assert "the test step failed with exit status 3" in error.message()
    assert "sh -c" in error.where


def test_missing_tool_names_the_debian_package() -> None:
    with pytest.raises(UsageError) as caught:
        runner.require_tool("surely-not-a-tool-xyz")
    assert "not found" in caught.value.problem
    env_path = os.environ["PATH"]
    try:
        os.environ["PATH"] = "/nonexistent"
        with pytest.raises(UsageError) as missing:
            runner.run(["mmdebstrap", "--version"])
        assert "apt-get install mmdebstrap" in missing.value.fix
    finally:
        os.environ["PATH"] = env_path


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    with pytest.raises(CommandError, match="did not finish"):
        runner.run(["sh", "-c", script], timeout=1)
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        if not _running(grandchild):
            break
        time.sleep(0.05)
    assert not _running(grandchild)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a reaper we do not control)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _start_parent(script: str, pid_file: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A Python parent running `script`, which writes the pids to watch into pid_file."""
    process = subprocess.Popen([sys.executable, "-c", script])
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    return process, [int(word) for word in pid_file.read_text().split()]


def _assert_gone(pid: int, what: str) -> None:
    for _ in range(100):
        if not _running(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"{what} {pid} outlived its SIGKILLed parent")


def test_streaming_calls_on_line() -> None:
    seen: list[str] = []
    runner.run(["sh", "-c", "echo a; echo b >&2; echo c"], stream=True, on_line=seen.append)
    assert sorted(seen) == ["a", "b", "c"]


def test_spawned_child_dies_with_its_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = textwrap.dedent(f"""
        import time
        from osbuilder import runner
        child = runner.spawn(["sleep", "300"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(300)
    """)
    process, (child,) = _start_parent(parent, pid_file)
    os.kill(child, 0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    _assert_gone(child, "the spawned child")


def test_tool_version_is_memoised_per_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "slowtool"
    calls = tmp_path / "calls"
    tool.write_text(f"#!/bin/sh\necho run >> {calls}\necho 'slowtool 1.0'\necho more\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    memo = tmp_path / "versions.json"
    assert runner.tool_version("slowtool", memo) == "slowtool 1.0"
    assert runner.tool_version("slowtool", memo) == "slowtool 1.0"
    assert calls.read_text() == "run\n"
    tool.write_text(f"#!/bin/sh\necho run >> {calls}\necho 'slowtool 2.0'\n")  # upgraded in place
    os.utime(tool, ns=(1, 1))
    assert runner.tool_version("slowtool", memo) == "slowtool 2.0"
    assert calls.read_text() == "run\nrun\n"


def test_spawned_child_gets_pass_fds_as_3_and_up(tmp_path: Path) -> None:
    """As Kata hands virtiofsd its socket: the descriptors are the child's 3, 4, ... in order, and the
    child inherits no other descriptor of ours."""
    first_read, first_write = os.pipe()
    second_read, second_write = os.pipe()
    os.write(first_write, b"first")
    os.write(second_write, b"second")
    os.close(first_write)
    os.close(second_write)
    script = ("import os; print(os.read(3, 16).decode(), os.read(4, 16).decode(), "
              "sorted(int(fd) for fd in os.listdir('/proc/self/fd')))")
    out = tmp_path / "out"
    try:
        with out.open("wb") as sink:
            # Passed in the reverse order of their numbers: each must land at its position.
            child = runner.spawn([sys.executable, "-c", script], stdout=sink, pass_fds=(second_read, first_read))
            assert child.wait(timeout=30) == 0
    finally:
        os.close(first_read)
        os.close(second_read)
    words = out.read_text().split(" ", 2)
    assert words[:2] == ["second", "first"]
    assert words[2].strip() == "[0, 1, 2, 3, 4, 5]"  # stdio, the two passed, and listdir's own


@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root")
def test_a_mount_namespace_is_private_and_dies_with_osbuilder(tmp_path: Path) -> None:
    target = tmp_path / "inside"
    target.mkdir()
    pid_file = tmp_path / "holder.pid"
    parent = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from osbuilder import runner
        namespace = runner.MountNamespace("test").start()
        namespace.run(["mount", "-t", "tmpfs", "osbuilder-test", {str(target)!r}], what="mount")
        namespace.host_path(Path({str(target)!r}) / "file").write_text("in the namespace")
        child = namespace.spawn(["sleep", "300"])
        open({str(pid_file)!r}, "w").write(f"{{namespace.pid}} {{child.pid}}")
        time.sleep(300)
    """)
    process, (holder, child) = _start_parent(parent, pid_file)
    try:
        assert os.readlink(f"/proc/{child}/ns/mnt") == os.readlink(f"/proc/{holder}/ns/mnt")
        assert os.readlink(f"/proc/{holder}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        # The host sees neither the mount nor what was written into it.
        assert not (target / "file").exists()
        assert str(target) not in Path("/proc/self/mountinfo").read_text()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    _assert_gone(holder, "the namespace's holder")
    _assert_gone(child, "the process in the namespace")
