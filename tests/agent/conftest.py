"""Fixtures for the reference agent (agent/) and the ttRPC client (osbuilder/ttrpc/).

Integration tests build the agent with its Makefile (musl-gcc, static) into a temporary directory and
run it with ``--listen-unix`` (and ``--console -`` so that the start line lands on stdout).
"""

from __future__ import annotations

import copy
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from osbuilder.ttrpc.client import TtrpcClient
from osbuilder.ttrpc.protos import health_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_DIR = REPO_ROOT / "agent"
START_TIMEOUT = 10.0


def agent_version_file() -> str:
    return (AGENT_DIR / "VERSION").read_text().strip()


def make_env() -> dict[str, str]:
    """The environment for running agent/Makefile: no inherited MAKEFLAGS (they could set CC)."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def build_agent(out_dir: Path, *make_args: str) -> Path:
    """Runs agent/Makefile with O=out_dir; returns the binary."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    cc_overridden = any(a.startswith("CC=") for a in make_args)
    if not cc_overridden and shutil.which("musl-gcc") is None:
        pytest.skip("musl-gcc is not installed (Debian package musl-tools)")
    proc = subprocess.run(
        ["make", "-C", str(AGENT_DIR), f"O={out_dir}", *make_args],
        capture_output=True, text=True, env=make_env(), timeout=300,
    )
    assert proc.returncode == 0, f"agent build failed:\n{proc.stdout}\n{proc.stderr}"
    binary = out_dir / "kata-agent"
    assert binary.is_file()
    return binary


@pytest.fixture(scope="session")
def agent_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent built with its default toolchain (musl-gcc -static)."""
    return build_agent(tmp_path_factory.mktemp("agent-build"))


def _sanitizer_build(out_dir: Path) -> Path | None:
    """gcc + AddressSanitizer/UBSan build (dynamic); None when the toolchain cannot do it."""
    if shutil.which("gcc") is None:
        return None
    probe = subprocess.run(
        ["gcc", "-fsanitize=address,undefined", "-x", "c", "-o", str(out_dir / "probe"), "-"],
        input="int main(void){return 0;}", capture_output=True, text=True,
    )
    if probe.returncode != 0:
        return None
    san = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
    return build_agent(out_dir, "CC=gcc", "STATIC=", "STRIP=true", f"EXTRA_CFLAGS={san}",
                       "EXTRA_LDFLAGS=-fsanitize=address,undefined")


@pytest.fixture(scope="session")
def sanitizer_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = _sanitizer_build(tmp_path_factory.mktemp("agent-asan"))
    if binary is None:
        pytest.skip("gcc cannot build with -fsanitize=address,undefined here")
    return binary


@dataclass
class AgentProcess:
    """A running agent serving on a unix socket."""

    binary: Path
    socket_path: Path
    proc: subprocess.Popen[bytes]
    start_line: str = ""
    extra_args: Sequence[str] = field(default_factory=tuple)
    _result: tuple[int, str] | None = None

    def connect(self, timeout: float = 10.0) -> TtrpcClient:
        return TtrpcClient.connect_unix(str(self.socket_path), timeout=timeout, default_timeout=timeout)

    def raw_socket(self, timeout: float | None = 5.0) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(self.socket_path))
        return s

    def alive(self) -> bool:
        return self.proc.poll() is None

    def assert_serving(self, timeout: float = 10.0) -> None:
        """Alive, and answering a health check on a new connection."""
        assert self.alive(), self.stop()[1]
        with self.connect(timeout=timeout) as c:
            assert c.check() == health_pb2.HealthCheckResponse.SERVING

    def assert_clean_stop(self) -> None:
        """Stops an agent that must have lived through the test: still running, exit 0 on SIGTERM, and
        no sanitizer report."""
        alive = self.alive()
        code, err = self.stop()
        assert alive, f"the agent died during the test (exit {code}):\n{err}"
        assert code == 0, f"agent exited with {code} on SIGTERM:\n{err}"
        assert "AddressSanitizer" not in err and "runtime error" not in err, err

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> tuple[int, str]:
        """SIGTERM, wait; returns (exit status, stderr). Idempotent."""
        if self._result is not None:
            return self._result
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        try:
            _, err_b = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a stray process still holds the pipes
            err_b = b""
            for f in (self.proc.stdout, self.proc.stderr):
                if f:
                    f.close()
        err = (err_b or b"").decode(errors="replace")
        self._result = (self.proc.returncode, err)
        return self._result


def start_agent(binary: Path, workdir: Path, *extra_args: str, env: dict[str, str] | None = None,
                prefix: Sequence[str] = ()) -> AgentProcess:
    """Starts the agent with --listen-unix and --console -, waits for its start line and socket."""
    sock = workdir / f"agent-{time.monotonic_ns()}.sock"
    proc = subprocess.Popen(
        [*prefix, str(binary), "--listen-unix", str(sock), "--console", "-", *extra_args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env if env is not None else dict(os.environ),
    )
    assert proc.stdout is not None
    # the start line is printed once the agent listens; wait for it with a deadline
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline().decode(errors="replace").rstrip("\n") if ready else ""
    agent = AgentProcess(binary, sock, proc, line, extra_args)
    if not line:
        code, err = agent.stop()
        pytest.fail(f"agent printed no start line (exit {code}):\n{err}")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            agent.raw_socket().close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                code, err = agent.stop()
                pytest.fail(f"agent socket {sock} never accepted (exit {code}):\n{err}")
            time.sleep(0.02)
    return agent


@pytest.fixture
def run_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Factory: run_agent(binary, *args) -> AgentProcess; stopped (and checked) at teardown."""
    started: list[AgentProcess] = []

    def _run(binary: Path, *args: str, **kw: object) -> AgentProcess:
        agent = start_agent(binary, tmp_path, *args, **kw)  # type: ignore[arg-type]
        started.append(agent)
        return agent

    yield _run
    for agent in started:
        if agent.alive():
            agent.assert_clean_stop()


# ------------------------------------------------------------------------------- containers on this host

BUSYBOX = Path("/bin/busybox")
# The agent changes the hostname, mounts storages and configures interfaces: on this host it runs in
# its own mount, UTS and network namespaces. Inside, "/" is made read-only so that nothing a test (or
# the fuzzer) sends can create files on the host outside the test's directory, which stays writable.
NAMESPACE_SCRIPT = 'mount -o remount,bind,ro / && mount --bind "$0" "$0" && mount -o remount,bind,rw "$0"'


def namespaced_prefix(writable: Path, *, mount_cgroup2: Path | None = None) -> list[str]:
    """unshare(1) prefix for start_agent; mount_cgroup2: a private cgroup2 mount for --cgroup-root."""
    script = NAMESPACE_SCRIPT
    if mount_cgroup2 is not None:
        script += f" && mount -t cgroup2 none {mount_cgroup2}"
    return ["unshare", "--mount", "--uts", "--net", "--propagation", "private", "sh", "-c",
            script + ' && exec "$@"', str(writable)]


def namespaces_usable() -> str | None:
    """Why the agent cannot run containers here, or None."""
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts)"
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    probe = subprocess.run(["unshare", "--mount", "--uts", "--net", "--pid", "--fork", "--ipc", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        return f"cannot create namespaces here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def make_busybox_root(root: Path) -> Path:
    """A tiny container root: busybox-static with its applet links, /etc/passwd and /etc/group with a
    user "tester" (1000:1000, home /home/tester, also in group "staff" 50)."""
    if not BUSYBOX.is_file():
        pytest.skip("busybox-static is not installed (/bin/busybox)")
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "etc", "tmp", "mnt", "home/tester"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "tester:x:1000:1000:Tester:/home/tester:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nstaff:x:50:tester\ntester:x:1000:\n")
    return root


@pytest.fixture(scope="session")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_root(tmp_path_factory.mktemp("bbroot") / "rootfs")


def runc_spec() -> dict[str, Any]:
    """`runc spec` (the reference's own defaults), with the two changes Kata makes for a workload whose
    stdio are pipes: no terminal, no network namespace."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    if not _RUNC_SPEC:
        with tempfile.TemporaryDirectory(prefix="osb-runc-spec-") as d:
            subprocess.run(["runc", "spec"], cwd=d, check=True, capture_output=True)
            spec = json.loads((Path(d) / "config.json").read_text())
        spec["process"]["terminal"] = False
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
        _RUNC_SPEC.update(spec)
    return copy.deepcopy(_RUNC_SPEC)


_RUNC_SPEC: dict[str, Any] = {}


@dataclass
class RunResult:
    status: int
    stdout: bytes
    stderr: bytes


class Workloads:
    """Container specs and runs against an agent (reached through the `workloads` fixture)."""

    @staticmethod
    def spec_json(root: Path, args: Sequence[str], **changes: Any) -> dict[str, Any]:
        spec = runc_spec()
        spec["root"]["path"] = str(root)
        spec["process"]["args"] = list(args)
        for key, value in changes.items():
            spec[key] = value
        return spec

    @staticmethod
    def to_proto(spec: Mapping[str, Any]) -> Any:
        from osbuilder.sandbox.protospec import spec_message

        return spec_message(spec, root_path=str(spec["root"]["path"]))

    @classmethod
    def spec(cls, root: Path, args: Sequence[str], **changes: Any) -> Any:
        return cls.to_proto(cls.spec_json(root, args, **changes))

    @staticmethod
    def drain(client: TtrpcClient, cid: str, eid: str) -> tuple[list[bytes], list[bytes], list[threading.Thread]]:
        """Starts two threads reading stdout and stderr to their end."""
        out: list[bytes] = []
        err: list[bytes] = []

        def pump(read: Callable[[str, str], bytes], into: list[bytes]) -> None:
            while chunk := read(cid, eid):
                into.append(chunk)

        threads = [threading.Thread(target=pump, args=(client.read_stdout, out), daemon=True),
                   threading.Thread(target=pump, args=(client.read_stderr, err), daemon=True)]
        for t in threads:
            t.start()
        return out, err, threads

    @classmethod
    def run(cls, client: TtrpcClient, cid: str, spec: Any, *, stdin: bytes | None = None,
            remove: bool = True) -> RunResult:
        """Create, start, stream, wait (and remove), as the runtime does."""
        client.create_container(container_id=cid, exec_id=cid, spec=spec)
        client.start_container(cid)
        out, err, threads = cls.drain(client, cid, cid)
        if stdin is not None:
            client.write_stdin(cid, cid, stdin)
        client.close_stdin(cid, cid)
        status = client.wait_process(cid, cid, timeout=60)
        for t in threads:
            t.join(30)
            assert not t.is_alive(), "a stream did not end after the process exited"
        if remove:
            client.remove_container(cid, timeout_seconds=10)
        return RunResult(status, b"".join(out), b"".join(err))


@pytest.fixture(scope="session")
def workloads() -> type[Workloads]:
    return Workloads


class Harness:
    """Helpers for test modules (reached through the `harness` fixture, so no test imports conftest)."""

    build_agent = staticmethod(build_agent)
    make_env = staticmethod(make_env)
    start_agent = staticmethod(start_agent)
    agent_version_file = staticmethod(agent_version_file)
    namespaced_prefix = staticmethod(namespaced_prefix)
    namespaces_usable = staticmethod(namespaces_usable)
    make_busybox_root = staticmethod(make_busybox_root)
    repo_root = REPO_ROOT
    agent_dir = AGENT_DIR


@pytest.fixture(scope="session")
def harness() -> type[Harness]:
    return Harness


@pytest.fixture(params=["musl-static", "sanitizers"])
def ns_agent(request: pytest.FixtureRequest, run_agent: Callable[..., AgentProcess], tmp_path: Path) -> AgentProcess:
    """A running agent in its own mount, UTS and network namespaces (release and sanitizer builds)."""
    reason = namespaces_usable()
    if reason:
        pytest.skip(reason)
    binary: Path = request.getfixturevalue("agent_binary" if request.param == "musl-static"
                                           else "sanitizer_binary")
    return run_agent(binary, prefix=namespaced_prefix(tmp_path))


@pytest.fixture(params=["musl-static", "sanitizers"])
def agent(request: pytest.FixtureRequest, run_agent: Callable[..., AgentProcess]) -> AgentProcess:
    """A running agent: the release build, and the AddressSanitizer/UBSan build where gcc can make it."""
    binary: Path = request.getfixturevalue("agent_binary" if request.param == "musl-static"
                                           else "sanitizer_binary")
    return run_agent(binary)
