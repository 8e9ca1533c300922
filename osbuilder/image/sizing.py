"""Image sizes computed from the tree, without trial filesystems.

Kata probes: it makes filesystems of growing sizes on loop devices until `df` shows enough room
(up to 20 attempts, and a tiny image when all fail). Here the size comes from a model:

- ext4: the blocks the tree needs (each file rounded up to whole blocks, extent index blocks for
  very fragmented files, directory blocks including the 20 % slack e2fsck -D leaves in indexed
  directories, long symlinks, hard links counted once) plus the filesystem's own overhead, which
  is mke2fs's arithmetic repeated (groups, superblock backups, group descriptors and reserved GDT
  blocks, bitmaps, inode tables for an explicit inode count, the default journal size, root and
  lost+found, the last-group trimming) and the 3 % reserved blocks. The model matches mke2fs 1.47
  block for block on empty filesystems; the tests pin that.
- xfs: an estimate (mkfs.xfs's metadata is less predictable): data + inode chunks + directories,
  plus the log and 2 %, at least mkfs.xfs's 300 MB minimum.
- erofs: the filesystem is built first and measured (it is compressed; nothing to predict).

The builder still grows an image a bounded number of times if mkfs reports no space, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from osbuilder.image.layout import DAX_HEADER_SIZE, MIB, ROOTFS_START, hash_boundary_mib
from osbuilder.image.verity import hash_area_size
from osbuilder.tree import DIR, FILE, SYMLINK, TreeScan

INODE_SIZE = 256
INODE_RATIO = 16384  # mke2fs's default bytes per inode
RESERVED_PERCENT = 3  # Kata's tune2fs -m 3
FIRST_INODE = 11  # inodes 1..10 are reserved, 11 is lost+found
DESC_SIZE = 64  # group descriptor size with the 64bit feature
MAX_EXTENT_BLOCKS = 32768
HTREE_FILL = 0.8  # e2fsck -D leaves 20 % slack in indexed directory leaves
FAST_SYMLINK_MAX = 59  # targets up to 59 bytes live in the inode
LOST_FOUND_BYTES = 16384
XFS_MIN_BYTES = 300 * 1000 * 1000  # mkfs.xfs refuses smaller filesystems
XFS_LOG_BYTES = 64 * MIB
XFS_INODE_SIZE = 512


@dataclass(frozen=True)
class TreeNeeds:
    """What the tree needs inside a filesystem with a given block size."""

    block_size: int
    file_blocks: int
    directory_blocks: int
    symlink_blocks: int
    index_blocks: int
    inodes: int  # inodes used, the reserved ones included

    @property
    def blocks(self) -> int:
        return self.file_blocks + self.directory_blocks + self.symlink_blocks + self.index_blocks

    def to_json(self) -> dict[str, int]:
        return {"block_size": self.block_size, "file_blocks": self.file_blocks,
                "directory_blocks": self.directory_blocks, "symlink_blocks": self.symlink_blocks,
                "index_blocks": self.index_blocks, "blocks": self.blocks, "inodes": self.inodes}


def _dirent_size(name: bytes) -> int:
    return (8 + len(name) + 3) & ~3


def tree_needs(scan: TreeScan, block_size: int, extra_inodes: int = 0) -> TreeNeeds:
    """Blocks and inodes the tree takes in ext4 (mke2fs -d, then e2fsck -D)."""
    usable = block_size - 12  # metadata_csum puts a 12-byte tail in every directory block
    extents_per_index_block = (block_size - 12) // 12
    blocks_per_group = block_size * 8
    file_blocks = index_blocks = symlink_blocks = 0
    directory_bytes: dict[str, int] = {}
    for entry in scan.entries[1:]:
        parent = entry.path.rpartition("/")[0]
        directory_bytes[parent] = directory_bytes.get(parent, 0) + _dirent_size(entry.name.encode(errors="surrogateescape"))
    for entry in scan.unique_inodes():
        if entry.kind == FILE and entry.size:
            blocks = -(-entry.size // block_size)
            file_blocks += blocks
            # One extent per 32768 blocks, plus one per block group the file may cross.
            extents = -(-blocks // MAX_EXTENT_BLOCKS) + blocks // blocks_per_group
            if extents > 4:
                index_blocks += -(-extents // extents_per_index_block)
        elif entry.kind == SYMLINK and len(entry.target.encode(errors="surrogateescape")) > FAST_SYMLINK_MAX:
            symlink_blocks += 1
    directory_blocks = 0
    directory_bytes.setdefault("", 0)
    directory_bytes[""] += _dirent_size(b"lost+found")
    for entry in scan.entries:
        if entry.kind != DIR:
            continue
        used = 24 + directory_bytes.get(entry.path, 0)  # "." and ".." take 12 bytes each
        linear = -(-used // usable)
        if linear <= 1:
            directory_blocks += 1
            continue
        leaves = math.ceil(used / (usable * HTREE_FILL))
        # dx_root, the leaves, and interior index blocks when the root's ~500 slots run out.
        interior = 0 if leaves <= (block_size - 40) // 8 else -(-leaves // ((block_size - 16) // 8))
        directory_blocks += max(linear, 1 + leaves + interior)
    inodes = FIRST_INODE + len(scan.unique_inodes()) + extra_inodes
    return TreeNeeds(block_size, file_blocks, directory_blocks, symlink_blocks, index_blocks, inodes)


def journal_blocks(blocks: int) -> int:
    """ext2fs_default_journal_size() (in filesystem blocks)."""
    for limit, size in ((2048, 0), (32768, 1024), (256 * 1024, 4096), (512 * 1024, 8192), (4096 * 1024, 16384),
                        (8192 * 1024, 32768), (16384 * 1024, 65536), (32768 * 1024, 131072)):
        if blocks < limit:
            return size
    return 262144


def _backup_groups(groups: int) -> int:
    """Groups that hold a superblock copy with sparse_super: 0, 1 and powers of 3, 5 and 7."""
    count = min(groups, 2)
    for base in (3, 5, 7):
        power = base
        while power < groups:
            count += 1
            power *= base
    return count


@dataclass(frozen=True)
class Ext4Geometry:
    blocks: int  # as given to mke2fs
    block_size: int
    inodes: int  # as given with -N
    groups: int
    inodes_per_group: int
    overhead: int  # blocks mke2fs uses itself (metadata, journal, root, lost+found)
    reserved: int  # root-reserved blocks (-m 3)
    usable_blocks: int  # blocks left for the tree (after trimming, overhead and reserved)

    def to_json(self) -> dict[str, int]:
        return {"blocks": self.blocks, "block_size": self.block_size, "inodes": self.inodes, "groups": self.groups,
                "inodes_per_group": self.inodes_per_group, "overhead_blocks": self.overhead,
                "reserved_blocks": self.reserved, "usable_blocks": self.usable_blocks}


def default_inodes(blocks: int, block_size: int) -> int:
    return blocks * block_size // INODE_RATIO


def ext4_geometry(blocks: int, block_size: int, inodes: int) -> Ext4Geometry:
    """mke2fs's layout for `blocks` blocks and `inodes` inodes (-N), and what remains usable
    (ext2fs_initialize's arithmetic, including its retry after dropping a too-small last group)."""
    first_data_block = 1 if block_size == 1024 else 0
    blocks_per_group = block_size * 8
    descriptors_per_block = block_size // DESC_SIZE
    effective = blocks
    while True:
        groups = -(-(effective - first_data_block) // blocks_per_group)
        descriptor_blocks = -(-groups // descriptors_per_block)
        ipg = min(-(-inodes // groups), block_size * 8)
        table_blocks = -(-ipg * INODE_SIZE // block_size)
        ipg = (table_blocks * block_size // INODE_SIZE) & ~7
        table_blocks = -(-ipg * INODE_SIZE // block_size)
        max_blocks = effective * 1024 if effective < 0xFFFFFFFF // 1024 else 0xFFFFFFFF
        reserve_groups = -(-(max_blocks - first_data_block) // blocks_per_group)
        reserved_gdt = min(-(-reserve_groups // descriptors_per_block) - descriptor_blocks, block_size // 4)
        last_is_backup = _backup_groups(groups) > _backup_groups(groups - 1)
        last_overhead = 2 + table_blocks + ((1 + descriptor_blocks + reserved_gdt) if last_is_backup else 0)
        last = (effective - first_data_block) % blocks_per_group
        if last and groups > 1 and last < last_overhead + 50:
            effective -= last  # mke2fs drops a last group too small for its metadata and 50 blocks
            continue
        break
    superblocks = _backup_groups(groups) * (1 + descriptor_blocks + reserved_gdt)
    fixed = 1 + LOST_FOUND_BYTES // block_size + 1  # root directory, lost+found, the resize inode's block
    overhead = (superblocks + 2 * groups + groups * table_blocks + journal_blocks(effective) + fixed
                + first_data_block)
    reserved = effective * RESERVED_PERCENT // 100
    usable = effective - overhead - reserved
    return Ext4Geometry(blocks, block_size, ipg * groups, groups, ipg, overhead, reserved, usable)


def ext4_inode_count(needs: TreeNeeds, blocks: int, free_bytes: int) -> int:
    """-N: the default ratio, but never fewer than the tree needs plus headroom for free space."""
    headroom = max(16, needs.inodes // 20) + free_bytes // INODE_RATIO
    return max(default_inodes(blocks, needs.block_size), needs.inodes + headroom)


def ext4_min_blocks(needs: TreeNeeds, free_bytes: int = 0) -> Ext4Geometry:
    """The smallest ext4 that holds the tree with `free_bytes` to spare (above the reserved blocks)."""
    wanted = needs.blocks + -(-free_bytes // needs.block_size)
    blocks = max(wanted, 2048)
    for _ in range(100):
        geometry = ext4_geometry(blocks, needs.block_size, ext4_inode_count(needs, blocks, free_bytes))
        if geometry.usable_blocks >= wanted and geometry.inodes >= needs.inodes:
            return geometry
        if geometry.inodes < needs.inodes:  # inode tables are full: more groups are needed
            blocks = max(blocks + 1, -(-needs.inodes // (needs.block_size * 8)) * needs.block_size * 8)
        else:
            blocks += max(wanted - geometry.usable_blocks, 1)
    raise AssertionError("ext4 sizing did not converge")


def ext4_fits(needs: TreeNeeds, blocks: int, free_bytes: int) -> Ext4Geometry | None:
    geometry = ext4_geometry(blocks, needs.block_size, ext4_inode_count(needs, blocks, free_bytes))
    wanted = needs.blocks + -(-free_bytes // needs.block_size)
    return geometry if geometry.usable_blocks >= wanted and geometry.inodes >= needs.inodes else None


def xfs_min_bytes(scan: TreeScan, block_size: int, free_bytes: int) -> int:
    """An estimate for mkfs.xfs -p (which copies hard links as separate files)."""
    data = 0
    directories = 0
    inodes = 0
    for entry in scan.entries:
        inodes += 1
        if entry.kind == FILE:
            data += -(-entry.size // block_size) * block_size
        elif entry.kind == DIR:
            directories += block_size
        elif entry.kind == SYMLINK and len(entry.target) > 300:
            data += block_size
    inode_bytes = -(-inodes // 64) * 64 * XFS_INODE_SIZE
    payload = data + directories + inode_bytes + free_bytes
    return max(XFS_MIN_BYTES, int(payload * 1.05) + XFS_LOG_BYTES + payload // 50 + 16 * MIB)


@dataclass(frozen=True)
class ImageSize:
    size_mib: int
    minimum_fs_bytes: int  # what the filesystem needs at least
    reason: str  # how the size was reached (alignment, minimum, measured split)


def image_size_mib(fs_bytes: int, *, dax_header: bool, measured: bool, alignment_mib: int,
                   block_size: int = 4096) -> ImageSize:
    """The smallest image size (a multiple of `alignment_mib`) whose rootfs partition holds
    `fs_bytes` and, when measured, whose hash partition holds the verity tree of that partition."""
    prefix = (DAX_HEADER_SIZE + ROOTFS_START) // MIB if dax_header else ROOTFS_START // MIB
    fs_mib = -(-fs_bytes // MIB)
    size = prefix + fs_mib
    alignment = max(1, alignment_mib)
    size = -(-size // alignment) * alignment
    reason = f"{prefix} MiB headers + {fs_mib} MiB filesystem, rounded up to {alignment} MiB"
    for _ in range(10000):
        if not measured:
            return ImageSize(size, fs_bytes, reason)
        boundary = hash_boundary_mib(size)
        root_bytes = (boundary - prefix) * MIB
        if boundary > prefix and root_bytes >= fs_bytes and \
                (size - boundary) * MIB >= hash_area_size(root_bytes // block_size, block_size):
            return ImageSize(size, fs_bytes, reason + "; measured: 99 % data, 1 % hash")
        size += alignment
    raise AssertionError("no measured layout found")


def kata_erofs_size_mib(fs_bytes: int, *, dax_header: bool, measured: bool) -> int:
    """Kata's erofs image size: floor((bytes + 1 MiB) / 1 MiB) + 1 + 1 (its own 1 MiB start),
    measured: *100/99 + 1, plus the 2 MiB DAX prefix; never aligned."""
    size = (fs_bytes + MIB) // MIB + 1 + ROOTFS_START // MIB
    if measured:
        size = size * 100 // 99 + 1
    return size + (DAX_HEADER_SIZE // MIB if dax_header else 0)
