"""What `osbuilder inspect` knows how to read. Each module here defines `INSPECTOR` (named after
its kind); adding a kind of file (a kernel, a release bundle) means adding a module, nothing else.

An inspector recognises a file from its first bytes (`detect`) and returns a `Report`: the decoded
data (for --json), a text rendering, and the problems found. A file with problems is invalid: the
command exits 1 and names them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbuilder.plugins import collect, module_names

HEAD_SIZE = 64 * 1024  # what detect() sees


@dataclass(frozen=True)
class InspectOptions:
    root_hash_file: Path | None = None  # the dm-verity record of a measured image
    verify: bool = False  # recompute expensive checks (the whole verity tree)


@dataclass
class Report:
    kind: str
    data: dict[str, object]
    text: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"ok": not self.problems, "kind": self.kind, **self.data, "problems": self.problems}


@dataclass(frozen=True)
class Inspector:
    kind: str
    description: str
    detect: Callable[[bytes, int], bool]  # (first HEAD_SIZE bytes, file size)
    inspect: Callable[[Path, InspectOptions], Report]
    order: int = 50  # lower is asked first (specific formats before general ones)


def parse_json(content: bytes | str | None) -> Any:
    """A JSON file read out of an asset (the rootfs builder's manifest.json), or None."""
    if not content:
        return None
    try:
        return json.loads(content)
    except json.JSONDecodeError:
        return None


def discover() -> list[Inspector]:
    inspectors = collect(__name__, __path__, "INSPECTOR", Inspector)
    return sorted(inspectors, key=lambda inspector: (inspector.order, inspector.kind))


def kinds() -> list[str]:
    """For --help without importing every inspector (a module's name is its inspector's kind)."""
    return module_names(__path__)


def identify(path: Path) -> Inspector | None:
    with path.open("rb") as handle:
        head = handle.read(HEAD_SIZE)
        size = handle.seek(0, 2)
    return next((inspector for inspector in discover() if inspector.detect(head, size)), None)
