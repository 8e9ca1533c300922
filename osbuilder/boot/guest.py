"""Reaching the agent of a booting guest, and saying why when it cannot be reached.

Shared by the boot check and the sandbox: connect to the agent channel, ask Health/Check until the
agent serves, and fail as soon as the guest has stopped making progress (a panic, an init that
cannot run, a corrupt verity block: osbuilder.boot.diagnose), naming what the console shows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from osbuilder.boot import diagnose
from osbuilder.boot.qemu import ConsoleLine, RunningVm
from osbuilder.ttrpc.client import TtrpcClient, TtrpcError, TtrpcTimeout

# The reference agent's start line (agent/README.md): the root it runs on, from /proc/self/mountinfo.
AGENT_LINE = re.compile(r"osbuilder-agent: version=(?P<version>\S+) pid=(?P<pid>\d+) root=(?P<device>\S+) "
                        r"fstype=(?P<fstype>\S+) options=(?P<options>\S*)")


@dataclass(frozen=True)
class RootMount:
    """The guest's root as the agent saw it at start."""

    device: str
    fstype: str
    options: str
    agent_version: str
    at: float  # seconds since QEMU started

    @property
    def dax(self) -> bool:
        return any(option == "dax" or (option.startswith("dax=") and option != "dax=never")
                   for option in self.options.split(","))

    def to_json(self) -> dict[str, str]:
        return {"device": self.device, "fstype": self.fstype, "options": self.options}


def agent_root(vm: RunningVm, wait: float) -> RootMount | None:
    """The agent's start line, waiting up to `wait` seconds for it (it comes before the agent serves,
    so it is normally there already)."""
    until = time.monotonic() + wait
    while True:
        line = vm.first(lambda text: AGENT_LINE.search(text) is not None)
        if line is not None:
            match = AGENT_LINE.search(line.text)
            assert match is not None
            return RootMount(match["device"], match["fstype"], match["options"], match["version"], line.at)
        if time.monotonic() >= until or vm.exited():
            return None
        time.sleep(0.1)


NOTABLE = re.compile(r"panic|DAX|VFS|Kernel|error|failed|verity|device-mapper|unable|cannot|osbuilder-agent|agent",
                     re.IGNORECASE)


def relevant_console(lines: list[ConsoleLine]) -> list[str]:
    """What a failure report shows of the console: notable lines (panics, mount and DAX messages)
    and the last few."""
    notable = [line.text for line in lines if NOTABLE.search(line.text)][-25:]
    tail = [line.text for line in lines[-15:]]
    return list(dict.fromkeys(notable + tail))


class GuestFailed(Exception):
    """The guest did not come up, or a call to its agent failed; the message says why."""


def console_causes(vm: RunningVm) -> str:
    return diagnose.describe(diagnose.causes(vm.snapshot()))


def failure(message: str, vm: RunningVm) -> GuestFailed:
    """A GuestFailed whose message ends with what the console shows, when it shows a cause."""
    shown = console_causes(vm)
    return GuestFailed(f"{message}; the console shows: {shown}" if shown else message)


def _check_progress(vm: RunningVm, waiting_for: str) -> None:
    if vm.exited():
        raise failure(f"the VM stopped (QEMU exit status {vm.process.returncode}) before {waiting_for}", vm)
    found = diagnose.stopped(vm.snapshot(), time.monotonic() - vm.started)
    if found is not None:
        raise GuestFailed(f"the guest stopped before {waiting_for}: {diagnose.describe(found)}")


def connect(open_channel: Callable[[], TtrpcClient], vm: RunningVm, deadline: float) -> TtrpcClient:
    """Open the agent channel (QEMU's socket at once, vsock once the guest listens)."""
    last = ""
    while time.monotonic() < deadline:
        _check_progress(vm, "the agent channel could be opened")
        try:
            return open_channel()
        except (OSError, TtrpcError) as exc:
            last = str(exc)
            time.sleep(0.2)
    raise failure(f"could not connect to the agent channel before the deadline ({last})", vm)


def wait_serving(client: TtrpcClient, vm: RunningVm, deadline: float, *, poll_interval: float = 1.0,
                 deadline_text: str = "the deadline") -> None:
    """Ask Health/Check until the agent answers SERVING. Requests sent before the agent listens are
    answered late (virtio-serial buffers them); the client skips those stale replies by stream id."""
    while True:
        _check_progress(vm, "the agent answered")
        left = deadline - time.monotonic()
        if left <= 0:
            raise failure(f"the agent did not answer Health/Check within {deadline_text}", vm)
        try:
            serving = client.is_serving(timeout=min(poll_interval * 2, left))
        except TtrpcTimeout:
            continue
        except TtrpcError as exc:
            raise failure(f"Health/Check failed: {exc}", vm) from exc
        if serving:
            return
        time.sleep(poll_interval)
