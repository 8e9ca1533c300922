"""Cache entries of the single-file assets: the image, the initrd and the bundle.

Each is an entry `<kind>/<key>` (osbuilder.cache) named by the key its planner computes (the same
one `osbuilder matrix` lists), holding the asset under a fixed name and, in its metadata, what the
build reported. A step builds into the entry and then copies the files where it was asked to, so a
hit, here or pulled from the remote cache, costs one copy and no rootfs at all.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.cache import BUILT, Cache
from osbuilder.errors import BuildError
from osbuilder.outputs import atomic_output

IMAGE_KIND = "image"
INITRD_KIND = "initrd"
BUNDLE_KIND = "bundle"
# The files of the entries.
ENTRY_IMAGE = "kata-containers.img"
ENTRY_ROOT_HASH = "root_hash.txt"  # a measured image's
ENTRY_INITRD = "kata-containers-initrd.img"
ENTRY_BUNDLE = "kata-static.tar.zst"


@dataclass(frozen=True)
class Delivered:
    key: str
    source: str  # local | remote | built
    meta: dict[str, Any]  # what the build recorded with the entry
    entry: Path

    @property
    def report(self) -> dict[str, Any]:
        """The builder's --json as it was when the entry was built."""
        report = self.meta.get("report")
        return dict(report) if isinstance(report, dict) else {}

    def cache_fields(self) -> dict[str, Any]:
        return {"cache": self.source, "cache_hit": self.source != BUILT, "cache_key": self.key,
                "content_key": self.key}


def deliver(cache: Cache, kind: str, key: str, inputs: Mapping[str, Any],
            build: Callable[[Path], dict[str, Any]], outputs: Mapping[str, Path | None]) -> Delivered:
    """The entry (found, pulled or built by `build(staging)`, which returns what to record), and a
    copy of each of its files named in `outputs` at the path given (None: not wanted)."""
    with cache.using(kind, key, build, inputs=inputs) as hit:
        meta = cache.entry_meta(kind, key)
        for name, target in outputs.items():
            if target is None:
                continue
            source = hit.path / name
            if not source.is_file():
                raise BuildError(problem=f"the {kind} entry {key[:16]} has no {name}", where=str(hit.path),
                                 fix="remove the entry (osbuilder cache prune --older-than 0) and build again")
            with atomic_output(target) as temporary:
                shutil.copyfile(source, temporary)
    return Delivered(key, hit.source, meta, hit.path)
