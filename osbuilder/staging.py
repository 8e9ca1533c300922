"""Staging entries: what a running osbuilder writes before renaming it into place, named so that a
later run can tell whose they are.

An entry next to an output is `.<name>.osbuilder-<role>.<pid>[.<unique>]`, an entry of its own in a
temporary directory `.osbuilder-<role>.<pid>.<unique>`. A build that is killed outright (SIGKILL, an
OOM kill, a CI timeout) cannot remove its entries; the next run that writes to the same place
`sweep`s the entries whose process is gone, and says what it removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

MARK = "osbuilder-"
_NAME = re.compile(r"^\.(?:(?P<name>.+)\.)?" + MARK + r"(?P<role>[a-z][a-z0-9-]*)\.(?P<pid>\d+)(?:\.[^/]*)?$")


def entry_path(destination: Path, role: str) -> Path:
    """The staging path of `destination` for `role` (new, old, tmp, ...), beside it."""
    return destination.with_name(f".{destination.name}.{MARK}{role}.{os.getpid()}")


def make_directory(parent: Path, role: str) -> Path:
    """A fresh staging directory of this process in `parent`."""
    return Path(tempfile.mkdtemp(prefix=f".{MARK}{role}.{os.getpid()}.", dir=parent))


@contextlib.contextmanager
def temporary_directory(parent: Path | None, role: str) -> Iterator[Path]:
    """A staging directory of this process (in the temporary directory by default), removed after."""
    path = make_directory(parent if parent is not None else Path(tempfile.gettempdir()), role)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_temporary() -> list[Path]:
    """sweep() of the temporary directory (boot sockets, bundle extractions, keyring copies): only
    this user's entries, as the directory is shared."""
    return sweep(Path(tempfile.gettempdir()), only_own=True)


def owner(name: str) -> int | None:
    """The pid in a staging entry's name, or None if the name is not one."""
    match = _NAME.match(name)
    return int(match["pid"]) if match else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def sweep(directory: Path, remover: Callable[[Path], None] | None = None,
          legacy: Callable[[str], int | None] | None = None, only_own: bool = False) -> list[Path]:
    """Remove the staging entries in `directory` whose process is gone; return them. `remover`
    deletes what the caller cannot delete directly (trees of subordinate ids); `legacy` reads the
    owner from names of an older convention; `only_own` leaves entries of other users alone (a
    shared directory). An entry that cannot be removed (something is still mounted in it) is
    reported and left."""
    removed: list[Path] = []
    try:
        children = list(directory.iterdir())
    except OSError:
        return removed
    for child in children:
        pid = owner(child.name)
        if pid is None and legacy is not None:
            pid = legacy(child.name)
        if pid is None or pid == os.getpid() or alive(pid):
            continue
        with contextlib.suppress(OSError):
            if only_own and os.geteuid() != 0 and child.lstat().st_uid != os.geteuid():
                continue  # another user's: not ours to judge

        try:
            (remover or _remove)(child)
        except Exception as error:  # a sweep must not stop the build that runs it
            log.warning("cannot remove %s, left by process %d, which is gone: %s", child, pid, error)
            continue
        log.info("removed %s, left by process %d, which is gone", child, pid)
        removed.append(child)
    return removed
