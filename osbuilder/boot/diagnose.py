"""Why a guest did not come up, read from its console.

A boot or a run that fails should name what the console shows (a dm-verity block that does not
match its hash, a kernel panic, an init the kernel cannot execute, a root it cannot mount) instead of
only "the agent did not answer". A guest in which such a thing happened has stopped making
progress: `stopped()` says so a moment after the line appears, so the caller fails at once rather
than at its deadline.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

# After a fatal line, wait this long for the lines that follow it (a panic's reason comes after the
# failed init) before reporting.
FATAL_GRACE = 1.5
# After a suspicious but not necessarily fatal line (a corrupt block, the OOM killer), a guest whose
# console has been silent this long, with no agent answering, has stopped making progress.
STALL_SECONDS = 10.0


class TimedLine(Protocol):
    @property
    def at(self) -> float: ...  # seconds since QEMU started

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class Cause:
    kind: str  # verity | panic | init | root | dax | oom
    summary: str
    line: str
    at: float
    fatal: bool  # the guest cannot reach its agent after this


def _errno_text(value: str) -> str:
    number = abs(int(value))
    name = errno.errorcode.get(number, "")
    return f"error {value}" + (f", {name}" if name else "")


def _verity(match: re.Match[str]) -> str:
    return (f"dm-verity: {match['type']} block {match['block']} of {match['device']} is corrupted (the image does "
            "not match its root hash)")


def _panic(match: re.Match[str]) -> str:
    return f"kernel panic: {match['reason'].strip()}"


def _init(match: re.Match[str]) -> str:
    return f"init {match['path']} could not be executed ({_errno_text(match['error'])})"


def _no_init(match: re.Match[str]) -> str:
    del match
    return "no working init found in the root filesystem"


def _root(match: re.Match[str]) -> str:
    return f"the kernel could not mount its root: {match['reason'].strip()}"


def _dax(match: re.Match[str]) -> str:
    del match
    return "the image cannot be mounted with DAX (no NVDIMM pfn block: build it with the DAX header)"


def _oom(match: re.Match[str]) -> str:
    return f"the guest ran out of memory (killed {match['victim']})"


# (kind, pattern, summary, fatal). The kernel's own wording (init/main.c, dm-verity-target.c,
# fs/ext4, mm/oom_kill.c); anchored on phrases user space does not print.
_RULES: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str], bool], ...] = (
    ("verity", re.compile(r"device-mapper: verity: (?P<device>\S+): (?P<type>data|metadata) block (?P<block>\d+) "
                          r"is corrupted"), _verity, False),
    ("init", re.compile(r"Starting init: (?P<path>\S+) exists but couldn't execute it \(error (?P<error>-?\d+)\)"),
     _init, True),
    ("init", re.compile(r"Requested init (?P<path>\S+) failed \(error (?P<error>-?\d+)\)"), _init, True),
    # rdinit= that cannot run: the kernel goes on to mount a root and try the default inits.
    ("init", re.compile(r"Failed to execute (?P<path>\S+) \(error (?P<error>-?\d+)\)"), _init, False),
    ("init", re.compile(r"No working init found"), _no_init, True),
    ("root", re.compile(r"VFS: (?P<reason>(?:Cannot open root device|Unable to mount root fs).*)"), _root, True),
    ("dax", re.compile(r"DAX unsupported by block device"), _dax, True),
    ("panic", re.compile(r"Kernel panic - not syncing: (?P<reason>.*)"), _panic, True),
    ("oom", re.compile(r"Out of memory: Killed process \d+ \((?P<victim>[^)]*)\)"), _oom, False),
)


def causes(lines: Sequence[TimedLine]) -> list[Cause]:
    """Every cause the console shows, in order, each kind and summary once."""
    found: list[Cause] = []
    seen: set[str] = set()
    for line in lines:
        for kind, pattern, summarise, fatal in _RULES:
            match = pattern.search(line.text)
            if match is None:
                continue
            summary = summarise(match)
            if summary not in seen:
                seen.add(summary)
                found.append(Cause(kind, summary, line.text.strip(), line.at, fatal))
            break
    return found


def describe(found: Sequence[Cause]) -> str:
    """One sentence for an error message: the causes in the order the guest met them."""
    return "; ".join(cause.summary for cause in found)


def stopped(lines: Sequence[TimedLine], now: float, *, grace: float = FATAL_GRACE,
            stall: float = STALL_SECONDS) -> list[Cause] | None:
    """The causes, when the guest has stopped making progress because of them; else None.

    `now` is in the lines' clock (seconds since QEMU started). A fatal cause stops the guest once
    `grace` has passed; other causes only when the console has then been silent for `stall`."""
    found = causes(lines)
    if not found:
        return None
    first_fatal = next((cause for cause in found if cause.fatal), None)
    if first_fatal is not None and now - first_fatal.at >= grace:
        return found
    if lines and now - lines[-1].at >= stall:
        return found
    return None
