"""Fixtures for the reference agent (agent/) and the ttRPC client (osbuilder/ttrpc/).

Integration tests build the agent with its Makefile (musl-gcc, static) into a temporary directory and
run it with ``--listen-unix`` (and ``--console -`` so that the start line lands on stdout).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from osbuilder.ttrpc.client import TtrpcClient

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
            code, err = agent.stop()
            assert code == 0, f"agent exited with {code} on SIGTERM:\n{err}"
            assert "AddressSanitizer" not in err and "runtime error" not in err, err


class Harness:
    """Helpers for test modules (reached through the `harness` fixture, so no test imports conftest)."""

    build_agent = staticmethod(build_agent)
    make_env = staticmethod(make_env)
    start_agent = staticmethod(start_agent)
    agent_version_file = staticmethod(agent_version_file)
    repo_root = REPO_ROOT
    agent_dir = AGENT_DIR


@pytest.fixture(scope="session")
def harness() -> type[Harness]:
    return Harness


@pytest.fixture(params=["musl-static", "sanitizers"])
def agent(request: pytest.FixtureRequest, run_agent: Callable[..., AgentProcess]) -> AgentProcess:
    """A running agent: the release build, and the AddressSanitizer/UBSan build where gcc can make it."""
    binary: Path = request.getfixturevalue("agent_binary" if request.param == "musl-static"
                                           else "sanitizer_binary")
    return run_agent(binary)
