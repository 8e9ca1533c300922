"""rootfs directory → compressed newc initrd: `build_initrd(rootfs_dir, options) -> InitrdResult`.

Kata's rules (initrd_builder.sh): /sbin/init must be executable or a symlink, the agent must be in
/usr/bin unless it is the init, and the kernel runs /init: when the tree has none, the archive gets
`/init -> /sbin/init` (agent as init) or `/init -> /lib/systemd/systemd` (systemd), added to the
archive only (the tree is never modified). The cpio is written in Python and piped through a
compressor that uses every core.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from libarchive.exception import ArchiveError

from osbuilder import codegraph, progress, runner, staging
from osbuilder.cache import content_key
from osbuilder.errors import BuildError, UsageError
from osbuilder.idmap import IdMapping, default_id_mapping
from osbuilder.initrd import cpio
from osbuilder.initrd.compression import CODECS, DEFAULT, Codec
from osbuilder.outputs import atomic_output, check_output_path
from osbuilder.rootfs.check import DEFAULT_AGENT, RootfsFacts, check_rootfs, lexists_in_root
from osbuilder.toolprobe import version_line
from osbuilder.tree import (
    SYMLINK,
    Entry,
    environment_epoch,
    scan_tree,
    source_date_epoch,
    unreadable_entries,
)

log = logging.getLogger(__name__)

INIT_AGENT = "/sbin/init"
EVIDENCE_MODULE = "osbuilder.evidence.assets"  # the SBOM and budgets, which its cache entry holds
BUILDER_MODULE = "osbuilder.initrd.builder"  # the code part of an initrd's content key
INIT_SYSTEMD = "/lib/systemd/systemd"  # direct: multi-level links were not followed reliably (Kata)


@dataclass(frozen=True)
class InitrdOptions:
    output: Path = Path("kata-containers-initrd.img")
    compression: str = DEFAULT
    level: int | None = None  # default: the codec's
    agent_init: bool = False  # AGENT_INIT
    skip_rootfs_check: bool = False
    agent_bin: str = DEFAULT_AGENT
    source_date_epoch: int | None = None
    id_mapping: IdMapping | None = None

    def codec(self) -> Codec:
        return CODECS[self.compression]

    def content_key(self, rootfs_key: str, environment: Mapping[str, str] | None = None) -> str:
        """The key of the initrd these options make from a keyed rootfs: what `osbuilder matrix`
        reports for CI, build-initrd --json as content_key, and the initrd's cache entry is named by."""
        return content_key(self.key_inputs(rootfs_key, environment))

    def key_inputs(self, rootfs_key: str, environment: Mapping[str, str] | None = None) -> dict[str, object]:
        """What content_key is the digest of (recorded with the cache entry)."""
        epoch = self.source_date_epoch if self.source_date_epoch is not None else environment_epoch(environment)
        return {"code": codegraph.code_digest(BUILDER_MODULE, EVIDENCE_MODULE), "rootfs": rootfs_key,
                "compression": self.compression, "level": self.effective_level(),
                "compressor": self.compressor(), "agent_init": self.agent_init, "source_date_epoch": epoch}

    def compressor(self) -> str | None:
        """The compressor's version: another program (pigz for gzip) or release makes other bytes."""
        argv = self.codec().argv(self.effective_level())
        return version_line(argv[0], step=f"compress the initrd with {self.compression}") if argv else None

    def effective_level(self) -> int:
        return self.codec().default_level if self.level is None else self.level


@dataclass(frozen=True)
class InitrdResult:
    path: Path
    compression: str
    level: int
    compressor: list[str]
    entries: int
    data_bytes: int
    cpio_bytes: int
    size: int
    init_target: str
    init_added: bool
    epoch: int
    epoch_source: str
    rootfs: RootfsFacts | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True, "initrd": str(self.path), "size": self.size, "compression": self.compression,
            "level": self.level, "compressor": self.compressor, "entries": self.entries,
            "data_bytes": self.data_bytes, "cpio_bytes": self.cpio_bytes, "init": self.init_target,
            "init_added": self.init_added, "source_date_epoch": self.epoch, "source_date_epoch_from": self.epoch_source,
            "rootfs": {"init": self.rootfs.init, "init_target": self.rootfs.init_target, "agent": self.rootfs.agent}
            if self.rootfs else None,
            "timings": self.timings,
        }


def validate(options: InitrdOptions) -> None:
    if options.compression not in CODECS:
        raise UsageError(problem=f"unknown compression {options.compression!r}", where="--compression",
                         fix="use one of: " + ", ".join(CODECS))
    codec = options.codec()
    if options.level is not None and options.level not in codec.levels:
        raise UsageError(problem=f"level {options.level} is not valid for {codec.name}", where="--level",
                         fix=f"use {codec.levels.start}..{codec.levels.stop - 1}")
    argv = codec.argv(options.effective_level())
    if argv:
        runner.require_tool(argv[0], f"compress the initrd with {codec.name}")


def build_initrd(rootfs_dir: Path, options: InitrdOptions | None = None) -> InitrdResult:
    options = options or InitrdOptions()
    validate(options)
    started = time.perf_counter()
    output = check_output_path(options.output)
    staging.sweep(output.parent)  # what a killed build left next to its output
    rootfs_dir = Path(os.path.abspath(rootfs_dir))
    facts = None if options.skip_rootfs_check else check_rootfs(rootfs_dir, agent_init=options.agent_init,
                                                                initrd=True, agent_bin=options.agent_bin)
    scan = scan_tree(rootfs_dir)
    mapping = options.id_mapping or default_id_mapping(rootfs_dir)
    blocked = unreadable_entries(scan, mapping)
    if blocked:
        raise UsageError(problem=f"{len(blocked)} entries of the rootfs are not readable, e.g. "
                                 + ", ".join(blocked[:5]), where=str(rootfs_dir),
                         fix="run as root, or give a tree you own (osbuilder then maps you to root)")
    epoch, epoch_source = source_date_epoch(options.source_date_epoch, scan)
    extra: list[Entry] = []
    init_added = not lexists_in_root(rootfs_dir, "init")
    if init_added:
        target = INIT_AGENT if options.agent_init else INIT_SYSTEMD
        extra.append(Entry("init", SYMLINK, 0o777, 0, 0, len(target), epoch, 1, 0, 0, 0, target))
        init_target = target
    else:
        existing = scan.get("init")
        init_target = existing.target if existing is not None and existing.kind == SYMLINK else "/init"
    items = cpio.members(scan, mapping, epoch, extra)
    timings = {"scan": time.perf_counter() - started}
    codec = options.codec()
    level = options.effective_level()
    argv = codec.argv(level)
    total = sum(item.size for item in items)
    step = time.perf_counter()
    with atomic_output(output) as temporary, temporary.open("wb") as handle, \
            progress.bar(total, "initrd", unit="B") as bar:
        if not argv:
            stats = cpio.write(handle.fileno(), items, mapping, bar.update)
        else:
            stats = _write_compressed(argv, handle, items, mapping, bar.update)
        handle.flush()
        size = os.fstat(handle.fileno()).st_size
    timings["archive"] = time.perf_counter() - step
    timings["total"] = time.perf_counter() - started
    log.info("wrote %s: %d entries, %d bytes of cpio, %s level %d: %d bytes", output, stats.entries,
             stats.archive_bytes, codec.name, level, size)
    return InitrdResult(output, codec.name, level, argv, stats.entries, stats.data_bytes, stats.archive_bytes, size,
                        init_target, init_added, epoch, epoch_source, facts,
                        {key: round(value, 3) for key, value in timings.items()})


def _write_compressed(argv: list[str], handle: BinaryIO, items: list[cpio.Member], mapping: IdMapping,
                      update: Callable[[int], object]) -> cpio.ArchiveStats:
    stats: cpio.ArchiveStats | None = None
    failure: Exception | None = None
    with tempfile.TemporaryFile() as errors:
        process = runner.spawn(argv, stdin=subprocess.PIPE, stdout=handle, stderr=errors)
        try:
            assert process.stdin is not None
            try:
                stats = cpio.write(process.stdin.fileno(), items, mapping, update)
            except (OSError, ArchiveError) as error:  # the compressor went away (EPIPE): its message says why
                failure = error
            process.stdin.close()
            returncode = process.wait()
        finally:
            runner.terminate(process)
        errors.seek(0)
        tail = errors.read().decode(errors="replace")[-3000:]
    if returncode != 0 or stats is None:
        raise BuildError(problem=f"{argv[0]} failed with exit status {returncode}"
                                 + (f" ({failure})" if failure else ""), where=runner.format_argv(argv),
                         fix="see its message above; run it by hand to debug" + (f"\n{tail}" if tail else ""))
    return stats
