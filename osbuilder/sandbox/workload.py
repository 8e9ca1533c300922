"""One container from start to end, as the runtime runs it, with its output copied as it comes.

After StartContainer, ReadStdout and ReadStderr are called in a loop each (two threads) while a
third waits in WaitProcess; the main thread only watches the clock (`--timeout`) and the user
(Ctrl-C, SIGTERM). A timeout kills the workload (exit status 137); an interrupt sends it SIGTERM
(SIGKILL after a grace period). In every case the container is removed, the sandbox destroyed and
the VM powered off in that order, and whatever still runs is stopped (`Sandbox.close`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from osbuilder.boot.guest import GuestFailed
from osbuilder.errors import BuildError, OsbuilderError
from osbuilder.sandbox.ocispec import ContainerConfig
from osbuilder.sandbox.sandbox import CALL_TIMEOUT, AgentCallError, Sandbox, SandboxPlan
from osbuilder.ttrpc.client import FOREVER, Code, TtrpcError, TtrpcStatusError

log = logging.getLogger(__name__)

Sink = Callable[[bytes], None]
STOP_GRACE = 10.0  # after SIGTERM on an interrupt, before SIGKILL
KILL_WAIT = 30.0  # after SIGKILL, for WaitProcess to answer
DRAIN_SECONDS = 15.0  # after the exit, for the output streams to reach their end
STDIN_CHUNK = 64 * 1024
TIMINGS = ("agent_ready", "create_container", "container_created", "container_started", "exited", "powered_off")


class ProcessStreams:
    """Copies a process's stdout and stderr to sinks while it runs, and feeds its stdin."""

    def __init__(self, sandbox: Sandbox, container_id: str, exec_id: str, *, stdout: Sink, stderr: Sink,
                 stdin: IO[bytes] | None = None) -> None:
        self.sandbox = sandbox
        self.container_id = container_id
        self.exec_id = exec_id
        self._sinks = {"ReadStdout": stdout, "ReadStderr": stderr}
        self._stdin = stdin
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def start(self) -> None:
        client = self.sandbox.client
        readers = {"ReadStdout": client.read_stdout, "ReadStderr": client.read_stderr}
        for name, read in readers.items():
            thread = threading.Thread(target=self._copy, args=(name, read), daemon=True, name=name)
            thread.start()
            self._threads.append(thread)
        if self._stdin is None:
            # Like a container started without -i: the process reads end-of-file at once.
            self.sandbox.call("CloseStdin", lambda: client.close_stdin(self.container_id, self.exec_id,
                                                                       timeout=CALL_TIMEOUT), self.container_id)
        else:
            writer = threading.Thread(target=self._feed, args=(self._stdin,), daemon=True, name="WriteStdin")
            writer.start()

    def _copy(self, name: str, read: Callable[[str, str], bytes]) -> None:
        sink = self._sinks[name]
        while True:
            try:
                data = read(self.container_id, self.exec_id)
            except TtrpcStatusError as exc:
                if exc.code != Code.NOT_FOUND:  # the process is gone: nothing more to read
                    self.errors.append(f"{name}: {exc}")
                return
            except TtrpcError as exc:
                self.errors.append(f"{name}: {exc}")
                return
            if not data:
                return
            sink(data)

    def _feed(self, source: IO[bytes]) -> None:
        client = self.sandbox.client
        try:
            while True:
                chunk = os.read(source.fileno(), STDIN_CHUNK)
                if not chunk:
                    break
                while chunk:
                    written = client.write_stdin(self.container_id, self.exec_id, chunk, timeout=FOREVER)
                    if written <= 0:
                        raise OSError(f"WriteStdin took {written} of {len(chunk)} bytes")
                    chunk = chunk[written:]
            client.close_stdin(self.container_id, self.exec_id, timeout=CALL_TIMEOUT)
        except (TtrpcError, OSError) as exc:
            # The process may exit without reading all of its input, as it may on a host.
            log.debug("stdin: %s", exc)

    def finish(self, timeout: float) -> bool:
        """Wait for both output streams to end; False when they did not within `timeout`."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        return not any(thread.is_alive() for thread in self._threads)


class _Waiter:
    """WaitProcess in a thread, so that the main thread stays free for the clock and for signals."""

    def __init__(self, sandbox: Sandbox, container_id: str, exec_id: str) -> None:
        self.done = threading.Event()
        self.status: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._wait, args=(sandbox, container_id, exec_id), daemon=True,
                                        name="WaitProcess")

    def start(self) -> _Waiter:
        self._thread.start()
        return self

    def _wait(self, sandbox: Sandbox, container_id: str, exec_id: str) -> None:
        try:
            self.status = sandbox.wait(container_id, exec_id)
        except BaseException as exc:  # handed to the main thread
            self.error = exc
        finally:
            self.done.set()

    def result(self, timeout: float) -> int | None:
        if not self.done.wait(timeout):
            return None
        if self.error is not None:
            raise self.error
        return self.status


@dataclass
class RunReport:
    ok: bool = False
    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    shared_fs: str = ""
    dax: bool | None = None
    root: dict[str, str] | None = None
    agent: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    sandbox_id: str = ""
    container_id: str = ""
    accel: str = ""
    transport: str = ""
    kind: str = ""  # image | initrd
    virtiofsd: str | None = None
    timed_out: bool = False
    console_tail: list[str] = field(default_factory=list)
    failure: OsbuilderError | None = field(default=None, repr=False)

    def failure_with_console(self) -> OsbuilderError:
        """The failure, its message followed by the console lines that matter (for the text output)."""
        assert self.failure is not None
        if not self.console_tail:
            return self.failure
        shown = "\n".join(f"    | {line}" for line in self.console_tail)
        return dataclasses.replace(self.failure, fix=f"{self.failure.fix}\n  console:\n{shown}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("failure")
        data["timings"] = {key: self.timings.get(key) for key in TIMINGS}
        return data


@dataclass(frozen=True)
class RunIO:
    stdout: Sink
    stderr: Sink
    stdin: IO[bytes] | None = None
    timeout: float | None = None  # seconds the workload may run; then SIGKILL (137)


def _failure(exc: BaseException, sandbox: Sandbox) -> OsbuilderError:
    if isinstance(exc, OsbuilderError):
        return exc
    return BuildError(problem=str(exc), where=f"sandbox {sandbox.plan.sandbox_id}",
                      fix="see the guest console lines (all of them with --console-log FILE)")


def _wait_for_exit(sandbox: Sandbox, container_id: str, io: RunIO, report: RunReport) -> tuple[int, BaseException | None]:
    """The exit status; on the deadline the workload is killed, on an interrupt it is stopped and the
    interrupt is handed back to be raised once the sandbox is down."""
    waiter = _Waiter(sandbox, container_id, container_id).start()
    deadline = None if io.timeout is None else time.monotonic() + io.timeout
    try:
        while True:
            status = waiter.result(0.2)
            if status is not None:
                return status, None
            if deadline is not None and time.monotonic() >= deadline:
                report.timed_out = True
                log.info("the workload ran longer than %s s: killing it", io.timeout)
                sandbox.signal(container_id, container_id, signal.SIGKILL)
                status = waiter.result(KILL_WAIT)
                if status is None:
                    raise GuestFailed(f"the workload did not exit within {KILL_WAIT:.0f} s of SIGKILL")
                return status, None
    except (TtrpcError, GuestFailed, OsbuilderError):
        raise
    except BaseException as interrupt:  # Ctrl-C, SIGTERM: stop the workload, then tear down in order
        log.info("stopping the workload (%s)", type(interrupt).__name__)
        for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, KILL_WAIT)):
            try:
                sandbox.signal(container_id, container_id, sig)
            except OsbuilderError as exc:
                log.debug("%s", exc)
            status = waiter.result(grace)
            if status is not None:
                return status, interrupt
        raise interrupt from None


def _run_container(sandbox: Sandbox, container_id: str, config: ContainerConfig, io: RunIO,
                   report: RunReport) -> BaseException | None:
    """Create, start, stream and wait, then remove (whatever happened after the create)."""
    report.timings["create_container"] = sandbox.since_start()
    sandbox.create_container(container_id, config)
    interrupt: BaseException | None = None
    try:
        report.timings["container_created"] = sandbox.since_start()
        streams = ProcessStreams(sandbox, container_id, container_id, stdout=io.stdout, stderr=io.stderr,
                                 stdin=io.stdin)
        sandbox.start_container(container_id)
        report.timings["container_started"] = sandbox.since_start()
        streams.start()
        report.exit_status, interrupt = _wait_for_exit(sandbox, container_id, io, report)
        report.timings["exited"] = sandbox.since_start()
        if not streams.finish(DRAIN_SECONDS):
            raise GuestFailed(f"the output streams did not end within {DRAIN_SECONDS:.0f} s of the exit")
        if streams.errors:
            raise GuestFailed("reading the output failed: " + "; ".join(streams.errors))
    finally:
        _quietly(report, sandbox, lambda: sandbox.remove_container(container_id))
    return interrupt


def run_workload(plan: SandboxPlan, config: ContainerConfig, container_id: str, io: RunIO) -> RunReport:
    """Boot, run the container, tear down in the runtime's order. Failures are in the report
    (`failure`, `error`); an interrupt is raised again once everything is down."""
    report = RunReport(shared_fs=plan.shared_fs, sandbox_id=plan.sandbox_id, container_id=container_id,
                       accel=plan.vm.accel, transport=plan.vm.transport,
                       kind="image" if plan.vm.image is not None else "initrd",
                       virtiofsd=plan.virtiofsd.path if plan.virtiofsd else None)
    sandbox = Sandbox(plan)
    interrupt: BaseException | None = None
    try:
        sandbox.start()
        if sandbox.root is not None:
            report.root = sandbox.root.to_json()
            report.dax = sandbox.root.dax if plan.vm.image is not None and plan.vm.nvdimm else None
        try:
            interrupt = _run_container(sandbox, container_id, config, io, report)
        except (GuestFailed, OsbuilderError, TtrpcError) as exc:
            report.failure = report.failure or _failure(exc, sandbox)
        _quietly(report, sandbox, sandbox.destroy)
        if report.timed_out:
            report.error = f"the workload ran longer than --timeout {io.timeout:g} s and was killed (SIGKILL)"
    except (GuestFailed, OsbuilderError, TtrpcError) as exc:
        report.failure = report.failure or _failure(exc, sandbox)
    finally:
        if report.failure is not None:
            report.error = report.failure.message()
            # An answer of the agent speaks for itself; anything else is explained by the guest's
            # console and the daemon's output.
            if not (isinstance(report.failure, AgentCallError) and report.failure.code is not None):
                report.console_tail = sandbox.console_tail()
                daemon = sandbox.virtiofsd_output()
                if daemon:
                    report.console_tail += [f"virtiofsd: {line}" for line in daemon.splitlines()]
        report.timings = {**sandbox.timings, **report.timings}
        report.agent = {"version": sandbox.agent_version} if sandbox.agent_version else {}
        sandbox.close()
    report.ok = report.failure is None and not report.timed_out
    if interrupt is not None:
        raise interrupt
    return report


def _quietly(report: RunReport, sandbox: Sandbox, step: Callable[[], None]) -> None:
    """A teardown step: its failure is reported (unless an earlier one is) but does not stop the next."""
    try:
        step()
    except (GuestFailed, OsbuilderError, TtrpcError) as exc:
        if report.failure is None:
            report.failure = _failure(exc, sandbox)
        else:
            log.debug("teardown: %s", exc)
