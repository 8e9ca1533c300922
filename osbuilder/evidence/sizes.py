"""What makes a rootfs big: its packages by installed size and its directories by size (the
report's charts and the largest contributors a size budget names)."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from osbuilder.debarchive import parse_stanzas


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    detail: str = ""


def installed_sizes(status: str | None) -> list[Bar]:
    bars = []
    for stanza in parse_stanzas(status or ""):
        if stanza.get("Status", "").endswith(" installed"):
            bars.append(Bar(stanza.get("Package", "?"), int(stanza.get("Installed-Size", "0") or 0) * 1024,
                            stanza.get("Version", "")))
    return sorted(bars, key=lambda bar: (-bar.value, bar.label))


def directory_sizes(tree: Path, depth: int = 3) -> list[Bar]:
    """Bytes below each directory up to `depth` levels (apparent sizes), largest first; a directory
    is listed only when its children do not already account for most of it."""
    totals: dict[str, int] = defaultdict(int)
    for directory, _subdirectories, files in os.walk(tree):
        relative = Path(directory).relative_to(tree).parts
        size = sum(os.lstat(os.path.join(directory, name)).st_size for name in files)
        for level in range(1, min(len(relative), depth) + 1):
            totals["/" + "/".join(relative[:level])] += size
    leaves = [path for path in totals if path.count("/") == depth or not any(
        other.startswith(path + "/") for other in totals)]
    return sorted((Bar(path, totals[path]) for path in leaves), key=lambda bar: (-bar.value, bar.label))
