"""rootfs directory → Kata disk image: `build_image(rootfs_dir, options) -> ImageResult`.

No root, loop devices, mounts or parted: the filesystem is made from the directory by its mkfs
(-d / protofile / erofs), the MBRs and the pfn block are written in Python, the dm-verity tree is
computed in Python. Every identifier (disk signature, filesystem UUID, ext4 hash seed, verity salt)
is derived from the inputs unless given, and every timestamp is clamped to the build epoch, so the
same tree gives the same bytes wherever and whenever it is built.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from osbuilder import codegraph, runner, staging
from osbuilder.cache import content_key
from osbuilder.errors import UsageError
from osbuilder.idmap import IdMapping, default_id_mapping
from osbuilder.image import filesystems, layout, sizing, verity
from osbuilder.image.ext4times import clamp_times
from osbuilder.image.layout import DEFAULT_ALIGNMENT_MB, MIB, ImageLayout
from osbuilder.image.superblock import FsInfo, probe
from osbuilder.kernelcmdline import FS_TYPES, VerityLine
from osbuilder.outputs import atomic_output, check_output_path
from osbuilder.rootfs.check import DEFAULT_AGENT, RootfsFacts, check_rootfs
from osbuilder.toolprobe import version_line
from osbuilder.tree import TreeScan, environment_epoch, scan_tree, source_date_epoch, unreadable_entries

log = logging.getLogger(__name__)

EVIDENCE_MODULE = "osbuilder.evidence.assets"  # the SBOM and budgets, which its cache entry holds
BUILDER_MODULE = "osbuilder.image.builder"  # the code part of an image's content key
MAX_GROW = 3  # times an image is enlarged when mkfs reports no space despite the estimate
VERITY_BLOCK_SIZE = 4096
BLOCK_SIZES = {"ext4": (1024, 2048, 4096), "xfs": (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
               "erofs": (4096,)}
_NAMESPACE = "osbuilder-image"


@dataclass(frozen=True)
class ImageOptions:
    """Everything that determines the image (Kata's variable in brackets)."""

    output: Path = Path("kata-containers.img")
    fs_type: str = "ext4"  # FS_TYPE
    root_free_space_mb: int = 0  # ROOT_FREE_SPACE
    alignment_mb: int = DEFAULT_ALIGNMENT_MB  # IMAGE_SIZE_ALIGNMENT_MB; erofs images are never aligned
    block_size: int = 4096  # BLOCK_SIZE
    dax_header: bool = True  # not SKIP_DAX_HEADER
    measured: bool = False  # MEASURED_ROOTFS
    agent_init: bool = False  # AGENT_INIT
    skip_rootfs_check: bool = False  # SKIP_ROOTFS_CHECK
    agent_bin: str = DEFAULT_AGENT  # AGENT_BIN
    variant: str = ""  # BUILD_VARIANT: names root_hash_<variant>.txt
    root_hash_file: Path | None = None  # default: root_hash.txt / root_hash_<variant>.txt next to the image
    # Identifier overrides; derived from the inputs when None.
    disk_signature: int | None = None
    fs_uuid: str | None = None
    hash_seed: str | None = None
    verity_salt: str | None = None  # hex
    source_date_epoch: int | None = None  # default: $SOURCE_DATE_EPOCH, else the newest mtime in the tree
    seed: str | None = None  # what identifiers derive from; default: the tree's metadata digest
    id_mapping: IdMapping | None = None  # default: osbuilder.idmap.default_id_mapping(rootfs)

    def content_key(self, environment: Mapping[str, str] | None = None) -> str:
        """The key of the image these options make from a keyed rootfs (seed: its cache key): what
        `osbuilder matrix` reports for CI, build-image --json as content_key, and the image's cache
        entry is named by."""
        return content_key(self.key_inputs(environment))

    def key_inputs(self, environment: Mapping[str, str] | None = None) -> dict[str, object]:
        """What content_key is the digest of (recorded with the cache entry)."""
        inputs = {**self.cache_inputs(), "code": codegraph.code_digest(BUILDER_MODULE, EVIDENCE_MODULE),
                  "tools": tool_versions(self.fs_type)}
        if self.source_date_epoch is None:  # else the newest mtime in the tree, which the seed covers
            inputs["source_date_epoch"] = environment_epoch(environment)
        return inputs

    def cache_inputs(self) -> dict[str, object]:
        """The options that determine the output bytes (for a pipeline's cache key)."""
        return {"fs_type": self.fs_type, "root_free_space_mb": self.root_free_space_mb,
                "alignment_mb": self.alignment_mb, "block_size": self.block_size, "dax_header": self.dax_header,
                "measured": self.measured, "disk_signature": self.disk_signature, "fs_uuid": self.fs_uuid,
                "hash_seed": self.hash_seed, "verity_salt": self.verity_salt, "seed": self.seed,
                "source_date_epoch": self.source_date_epoch}

    def root_hash_path(self) -> Path:
        if self.root_hash_file is not None:
            return self.root_hash_file
        name = f"root_hash_{self.variant}.txt" if self.variant else "root_hash.txt"
        return Path(os.path.abspath(self.output)).parent / name


@dataclass(frozen=True)
class Identifiers:
    disk_signature: int
    fs_uuid: str
    hash_seed: str
    verity_salt: str
    seed: str

    def to_json(self) -> dict[str, str]:
        return {"disk_signature": f"0x{self.disk_signature:08x}", "fs_uuid": self.fs_uuid, "hash_seed": self.hash_seed,
                "verity_salt": self.verity_salt, "seed": self.seed}


@dataclass(frozen=True)
class ImageResult:
    path: Path
    layout: ImageLayout
    filesystem: FsInfo
    identifiers: Identifiers
    epoch: int
    epoch_source: str
    verity: VerityLine | None = None
    root_hash_file: Path | None = None
    rootfs: RootfsFacts | None = None
    sizing: dict[str, object] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def kernel_root_params(self, *, nvdimm: bool) -> list[str]:
        return self.layout.kernel_root_params(nvdimm=nvdimm, verity=self.verity)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True, "image": str(self.path), "size": self.layout.size, "layout": self.layout.to_json(),
            "filesystem": self.filesystem.to_json(), "identifiers": self.identifiers.to_json(),
            "source_date_epoch": self.epoch, "source_date_epoch_from": self.epoch_source,
            "verity": self.verity.to_json() if self.verity else None,
            "root_hash_file": str(self.root_hash_file) if self.root_hash_file else None,
            "rootfs": {"init": self.rootfs.init, "init_target": self.rootfs.init_target, "agent": self.rootfs.agent}
            if self.rootfs else None,
            "sizing": self.sizing, "timings": self.timings,
        }


# --- options ---------------------------------------------------------------------------------------

def parse_disk_signature(value: str, where: str = "--disk-signature") -> int:
    try:
        number = int(value, 16) if value.lower().startswith("0x") or len(value) == 8 else int(value)
    except ValueError:
        raise UsageError(problem=f"not a 32-bit number: {value!r}", where=where,
                         fix="give 8 hex digits, e.g. 0x4b415441") from None
    if not 0 < number <= 0xFFFFFFFF:
        raise UsageError(problem=f"out of range: {value}", where=where, fix="give a non-zero 32-bit value")
    return number


def parse_uuid(value: str, where: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise UsageError(problem=f"not a UUID: {value!r}", where=where,
                         fix="e.g. 6ba7b810-9dad-41d1-80b4-00c04fd430c8") from None


def parse_salt(value: str, where: str = "--verity-salt") -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise UsageError(problem=f"not hex: {value!r}", where=where, fix="give an even number of hex digits") from None
    if not 0 < len(raw) <= 256:
        raise UsageError(problem=f"a salt of {len(raw)} bytes", where=where, fix="give 1 to 256 bytes (64 hex digits)")
    return raw.hex()


def validate(options: ImageOptions) -> ImageOptions:
    """Bad options are bad input (exit 2), detected before any work."""
    if options.fs_type not in FS_TYPES:
        raise UsageError(problem=f"unknown filesystem type {options.fs_type!r}", where="--fs-type (FS_TYPE)",
                         fix="use one of: " + ", ".join(FS_TYPES))
    if options.block_size not in BLOCK_SIZES[options.fs_type]:
        raise UsageError(problem=f"block size {options.block_size} is not valid for {options.fs_type}",
                         where="--block-size (BLOCK_SIZE)",
                         fix="use one of: " + ", ".join(map(str, BLOCK_SIZES[options.fs_type])))
    if options.root_free_space_mb < 0:
        raise UsageError(problem="negative free space", where="--root-free-space (ROOT_FREE_SPACE)", fix="give MB >= 0")
    if options.alignment_mb < 1:
        raise UsageError(problem="the alignment must be at least 1 MiB", where="--alignment-mb (IMAGE_SIZE_ALIGNMENT_MB)",
                         fix="give a positive number of MiB (Kata's default is 128)")
    if options.dax_header and options.block_size != 4096:
        log.warning("DAX needs a filesystem block size equal to the page size (4096); --block-size %d "
                    "images mount without DAX", options.block_size)
    return replace(
        options,
        fs_uuid=parse_uuid(options.fs_uuid, "--fs-uuid") if options.fs_uuid else None,
        hash_seed=parse_uuid(options.hash_seed, "--hash-seed") if options.hash_seed else None,
        verity_salt=parse_salt(options.verity_salt) if options.verity_salt else None,
    )


def required_tools(fs_type: str) -> list[str]:
    return {"ext4": ["mkfs.ext4", "debugfs", "e2fsck"], "erofs": ["mkfs.erofs"], "xfs": ["mkfs.xfs"]}[fs_type]


def tool_versions(fs_type: str) -> dict[str, str]:
    """Versions of the tools that shape the image bytes, for the image's cache key."""
    probes = {"ext4": ("mke2fs", ["-V"]), "erofs": ("dump.erofs", ["-V"]), "xfs": ("mkfs.xfs", ["-V"])}
    tool, args = probes[fs_type]
    return {tool: version_line(tool, args, f"build an {fs_type} image")}


# --- identifiers ------------------------------------------------------------------------------------

def _derive(seed: str, purpose: str) -> bytes:
    return hashlib.sha256(f"{_NAMESPACE}:{purpose}:{seed}".encode()).digest()


def derive_identifiers(seed: str, options: ImageOptions) -> Identifiers:
    signature = options.disk_signature or int.from_bytes(_derive(seed, "disk-signature")[:4], "little") or 1
    fs_uuid = options.fs_uuid or str(uuid.UUID(bytes=_derive(seed, "fs-uuid")[:16], version=4))
    hash_seed = options.hash_seed or str(uuid.UUID(bytes=_derive(seed, "ext4-hash-seed")[:16], version=4))
    salt = options.verity_salt or _derive(seed, "verity-salt").hex()
    return Identifiers(signature, fs_uuid, hash_seed, salt, seed)


# --- the build ------------------------------------------------------------------------------------

def build_image(rootfs_dir: Path, options: ImageOptions | None = None) -> ImageResult:
    options = validate(options or ImageOptions())
    timings: dict[str, float] = {}
    started = time.perf_counter()
    output = check_output_path(options.output)
    staging.sweep(output.parent)  # what a killed build left next to its output
    root_hash_path = check_output_path(options.root_hash_path(), "--root-hash-file") if options.measured else None
    for tool in required_tools(options.fs_type):
        runner.require_tool(tool, f"build an {options.fs_type} image")
    rootfs_dir = Path(os.path.abspath(rootfs_dir))
    facts = None if options.skip_rootfs_check else check_rootfs(rootfs_dir, agent_init=options.agent_init,
                                                                agent_bin=options.agent_bin)
    scan = scan_tree(rootfs_dir)
    mapping = options.id_mapping or default_id_mapping(rootfs_dir)
    blocked = unreadable_entries(scan, mapping)
    if blocked:
        raise UsageError(problem=f"{len(blocked)} entries of the rootfs are not readable, e.g. " + ", ".join(blocked[:5]),
                         where=str(rootfs_dir),
                         fix="run as root, or give a tree you own (osbuilder then maps you to root)")
    epoch, epoch_source = source_date_epoch(options.source_date_epoch, scan)
    # The resolved epoch counts, not where it came from (option or environment).
    shaping = {k: v for k, v in options.cache_inputs().items() if k not in ("seed", "source_date_epoch")}
    seed = options.seed or content_key({"tree": scan.digest(epoch, mapping), "epoch": epoch, "options": shaping})
    identifiers = derive_identifiers(seed, options)
    machine_id = filesystems.plan_machine_id(scan, mapping)
    timings["scan"] = time.perf_counter() - started
    log.info("building a %s image of %s (%d entries, epoch %d from %s, ids %s)", options.fs_type, rootfs_dir,
             len(scan.entries), epoch, epoch_source, mapping.name)

    with staging.temporary_directory(output.parent, "image") as workdir, atomic_output(output) as temporary:
        builder = {"ext4": _build_ext4, "erofs": _build_erofs, "xfs": _build_xfs}[options.fs_type]
        image_layout, sizing_report = builder(scan, options, identifiers, epoch, mapping, machine_id, temporary,
                                              workdir, timings)
        step = time.perf_counter()
        _write_headers(temporary, image_layout)
        line = None
        if options.measured:
            line = _format_verity(temporary, image_layout, identifiers)
            timings["verity"] = time.perf_counter() - step
        info = probe(temporary, image_layout.root.offset)
        if info is None:
            raise AssertionError("the filesystem is not where the layout says")
        if root_hash_path is not None and line is not None:
            with atomic_output(root_hash_path) as hash_temporary:
                hash_temporary.write_text(line.format() + "\n")
    timings["total"] = time.perf_counter() - started
    final_layout = replace(image_layout, fs_type=options.fs_type)
    log.info("wrote %s: %d MiB, %s at %d, %s", output, final_layout.size // MIB, options.fs_type,
             final_layout.root.offset, "measured" if options.measured else "not measured")
    return ImageResult(output, final_layout, info, identifiers, epoch, epoch_source, line,
                       root_hash_path if line else None, facts, sizing_report,
                       {key: round(value, 3) for key, value in timings.items()})


def _plan_layout(size_mib: int, options: ImageOptions, identifiers: Identifiers) -> ImageLayout:
    return layout.plan(size_mib, dax_header=options.dax_header, measured=options.measured,
                       disk_signature=identifiers.disk_signature, fs_type=options.fs_type)


def _until_it_fits(size_mib: int, options: ImageOptions, tool: str,
                   make: Callable[[int], ImageLayout]) -> tuple[ImageLayout, int]:
    """Run `make(size_mib)`; when mkfs reports no space, grow the image by a quarter (at least one
    alignment step) and retry, at most MAX_GROW times, saying so each time."""
    grown = 0
    while True:
        try:
            return make(size_mib), grown
        except filesystems.NoSpace:
            if grown >= MAX_GROW:
                raise
            grown += 1
            step = max(options.alignment_mb, -(-size_mib // 4))
            bigger = -(-(size_mib + step) // options.alignment_mb) * options.alignment_mb
            log.warning("%s: the size estimate (%d MiB) was too small; growing the image to %d MiB (attempt %d "
                        "of %d). Please report this with the rootfs's size.", tool, size_mib, bigger, grown, MAX_GROW)
            size_mib = bigger


def _build_ext4(scan: TreeScan, options: ImageOptions, identifiers: Identifiers, epoch: int, mapping: IdMapping,
                machine_id: filesystems.MachineIdPlan, image: Path, workdir: Path,
                timings: dict[str, float]) -> tuple[ImageLayout, dict[str, object]]:
    block_size = options.block_size
    free_bytes = options.root_free_space_mb * MIB
    needs = sizing.tree_needs(scan, block_size, extra_inodes=1 if machine_id.action == "create" else 0)
    minimum = sizing.ext4_min_blocks(needs, free_bytes)
    planned = sizing.image_size_mib(minimum.blocks * block_size, dax_header=options.dax_header,
                                    measured=options.measured, alignment_mib=options.alignment_mb)
    root = scan.entries[0]
    step = time.perf_counter()

    def make(size_mib: int) -> ImageLayout:
        candidate = _plan_layout(size_mib, options, identifiers)
        inodes = sizing.ext4_inode_count(needs, candidate.root.size // block_size, free_bytes)
        with image.open("wb") as handle:  # a fresh, sparse file each attempt
            handle.truncate(candidate.size)
        filesystems.mkfs_ext4(image, offset=candidate.root.offset, blocks=candidate.root.size // block_size,
                              tree=scan.root, block_size=block_size, inodes=inodes, fs_uuid=identifiers.fs_uuid,
                              hash_seed=identifiers.hash_seed,
                              root_owner=(mapping.guest_uid(root.uid), mapping.guest_gid(root.gid)),
                              epoch=epoch, mapping=mapping, workdir=workdir)
        return candidate

    image_layout, grown = _until_it_fits(planned.size_mib, options, "mkfs.ext4", make)
    fs_blocks = image_layout.root.size // block_size
    timings["mkfs"] = time.perf_counter() - step
    step = time.perf_counter()
    offset = image_layout.root.offset
    filesystems.ext4_machine_id(image, offset, machine_id, epoch, workdir)
    filesystems.ext4_optimize_directories(image, offset, epoch)
    clamp_times(image, offset, epoch)
    timings["ext4_finish"] = time.perf_counter() - step
    inodes = sizing.ext4_inode_count(needs, fs_blocks, free_bytes)  # as make() computed it for this size
    geometry = sizing.ext4_geometry(fs_blocks, block_size, inodes)
    report: dict[str, object] = {
        "method": "model", "tree": needs.to_json(), "minimum_fs_blocks": minimum.blocks,
        "minimum_fs_bytes": minimum.blocks * block_size, "planned_image_mib": planned.size_mib,
        "reason": planned.reason, "grown": grown, "fs_blocks": fs_blocks, "geometry": geometry.to_json(),
        "machine_id": machine_id.action,
    }
    return image_layout, report


def _erofs_layout(fs_bytes: int, options: ImageOptions, identifiers: Identifiers) -> ImageLayout:
    size_mib = sizing.kata_erofs_size_mib(fs_bytes, dax_header=options.dax_header, measured=options.measured)
    for _ in range(1000):
        candidate = _plan_layout(size_mib, options, identifiers)
        hash_ok = candidate.hash is None or candidate.hash.size >= verity.hash_area_size(
            candidate.root.size // VERITY_BLOCK_SIZE, VERITY_BLOCK_SIZE)
        if candidate.root.size >= fs_bytes and hash_ok:
            return candidate
        size_mib += 1
    raise AssertionError("no erofs layout found")


def _build_erofs(scan: TreeScan, options: ImageOptions, identifiers: Identifiers, epoch: int, mapping: IdMapping,
                 machine_id: filesystems.MachineIdPlan, image: Path, workdir: Path,
                 timings: dict[str, float]) -> tuple[ImageLayout, dict[str, object]]:
    if options.root_free_space_mb:
        log.info("erofs is read-only: --root-free-space is ignored")
    step = time.perf_counter()
    source = scan.root
    staged = None
    if machine_id.changes_tree:
        staged = filesystems.stage_tree(scan, machine_id, epoch, [scan.root.parent, workdir])
        source = staged
        timings["stage"] = time.perf_counter() - step
    blob = workdir / "rootfs.erofs"
    try:
        step = time.perf_counter()
        filesystems.mkfs_erofs(blob, source, fs_uuid=identifiers.fs_uuid, epoch=epoch, mapping=mapping)
        timings["mkfs"] = time.perf_counter() - step
    finally:
        if staged is not None:
            filesystems.remove_stage(staged)
    fs_bytes = blob.stat().st_size
    image_layout = _erofs_layout(fs_bytes, options, identifiers)
    method = filesystems.place_filesystem(blob, image, image_layout.root.offset, image_layout.size)
    report: dict[str, object] = {"method": "measured (erofs is built first)", "fs_bytes": fs_bytes,
                                 "image_mib": image_layout.size // MIB, "placed_by": method,
                                 "machine_id": machine_id.action, "staged": staged is not None}
    return image_layout, report


def _build_xfs(scan: TreeScan, options: ImageOptions, identifiers: Identifiers, epoch: int, mapping: IdMapping,
               machine_id: filesystems.MachineIdPlan, image: Path, workdir: Path,
               timings: dict[str, float]) -> tuple[ImageLayout, dict[str, object]]:
    empty = workdir / "machine-id"
    empty.write_bytes(b"")
    protofile = workdir / "protofile"
    protofile.write_text(filesystems.xfs_protofile(scan, mapping, machine_id, empty))
    estimate = sizing.xfs_min_bytes(scan, options.block_size, options.root_free_space_mb * MIB)
    planned = sizing.image_size_mib(estimate, dax_header=options.dax_header, measured=options.measured,
                                    alignment_mib=options.alignment_mb)
    blob = workdir / "rootfs.xfs"
    step = time.perf_counter()

    def make(size_mib: int) -> ImageLayout:
        candidate = _plan_layout(size_mib, options, identifiers)
        filesystems.mkfs_xfs(blob, candidate.root.size, protofile, block_size=options.block_size,
                             fs_uuid=identifiers.fs_uuid, mapping=mapping)
        return candidate

    image_layout, grown = _until_it_fits(planned.size_mib, options, "mkfs.xfs", make)
    timings["mkfs"] = time.perf_counter() - step
    method = filesystems.place_filesystem(blob, image, image_layout.root.offset, image_layout.size)
    log.info("xfs: mkfs.xfs stamps the build time on every inode; xfs images are not bit-reproducible")
    report: dict[str, object] = {"method": "estimate", "estimated_fs_bytes": estimate, "planned_image_mib": planned.size_mib,
                                 "grown": grown, "placed_by": method, "machine_id": machine_id.action}
    return image_layout, report


def _write_headers(image: Path, image_layout: ImageLayout) -> None:
    fd = os.open(image, os.O_RDWR)
    try:
        for offset, data in image_layout.headers():
            os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _format_verity(image: Path, image_layout: ImageLayout, identifiers: Identifiers) -> VerityLine:
    assert image_layout.hash is not None
    fd = os.open(image, os.O_RDWR)
    try:
        return verity.format_region(fd, data_offset=image_layout.root.offset,
                                    data_blocks=image_layout.root.size // VERITY_BLOCK_SIZE,
                                    hash_offset=image_layout.hash.offset, salt=bytes.fromhex(identifiers.verity_salt),
                                    data_block_size=VERITY_BLOCK_SIZE, hash_block_size=VERITY_BLOCK_SIZE)
    finally:
        os.close(fd)

