"""Outputs appear atomically: written to a temporary path next to the destination, then renamed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from osbuilder import staging
from osbuilder.errors import UsageError


def check_output_path(destination: Path, option: str = "-o") -> Path:
    """Bad output locations are bad input (exit 2), found before any work starts."""
    destination = Path(os.path.abspath(destination))
    parent = destination.parent
    if not parent.is_dir():
        raise UsageError(problem=f"directory {parent} does not exist", where=f"{option} {destination}",
                         fix="create the directory first or choose another output path")
    if destination.is_dir():
        raise UsageError(problem=f"{destination} is a directory", where=f"{option} {destination}",
                         fix="give a file name, e.g. " + str(destination / "kata-containers.img"))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(problem=f"directory {parent} is not writable", where=f"{option} {destination}",
                         fix="choose a writable output directory")
    return destination


def temporary_path(destination: Path) -> Path:
    return staging.entry_path(destination, "tmp")


@contextlib.contextmanager
def atomic_output(destination: Path) -> Iterator[Path]:
    """Yield a temporary path next to `destination`; rename it into place when the block succeeds,
    remove it when the block fails (or is interrupted)."""
    temporary = temporary_path(destination)
    temporary.unlink(missing_ok=True)
    try:
        yield temporary
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(destination: Path, data: bytes) -> None:
    with atomic_output(destination) as temporary:
        temporary.write_bytes(data)
