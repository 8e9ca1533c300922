"""Filesystem superblocks (ext4, erofs, xfs) read in Python from a region of an image file."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path

EXT4_MAGIC = 0xEF53
EROFS_MAGIC = 0xE0F5E1E2
XFS_MAGIC = b"XFSB"

_EXT4_COMPAT = {0x4: "has_journal", 0x8: "ext_attr", 0x10: "resize_inode", 0x20: "dir_index"}
_EXT4_INCOMPAT = {0x2: "filetype", 0x40: "extent", 0x80: "64bit", 0x200: "flex_bg", 0x8000: "inline_data",
                  0x2000: "metadata_csum_seed"}
_EXT4_RO_COMPAT = {0x1: "sparse_super", 0x2: "large_file", 0x8: "huge_file", 0x20: "dir_nlink",
                   0x40: "extra_isize", 0x400: "metadata_csum", 0x1000: "orphan_present"}


@dataclass(frozen=True)
class FsInfo:
    fs_type: str
    uuid: str
    block_size: int
    blocks: int
    label: str = ""
    details: dict[str, object] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.block_size * self.blocks

    def to_json(self) -> dict[str, object]:
        return {"type": self.fs_type, "uuid": self.uuid, "label": self.label, "block_size": self.block_size,
                "blocks": self.blocks, "size": self.size, **self.details}


def _flags(value: int, names: dict[int, str]) -> list[str]:
    return [name for bit, name in sorted(names.items()) if value & bit]


def _label(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def parse_ext4(block: bytes) -> FsInfo | None:
    """`block` starts at the filesystem's byte 1024 (the primary superblock)."""
    if len(block) < 1024 or struct.unpack_from("<H", block, 56)[0] != EXT4_MAGIC:
        return None
    inodes, blocks_lo, reserved_lo, free_lo, free_inodes, _first, log_block = struct.unpack_from("<7I", block, 0)
    blocks_hi, reserved_hi, free_hi = struct.unpack_from("<3I", block, 0x150)
    compat, incompat, ro_compat = struct.unpack_from("<3I", block, 92)
    is64 = bool(incompat & 0x80)
    blocks = blocks_lo | ((blocks_hi << 32) if is64 else 0)
    (inode_size,) = struct.unpack_from("<H", block, 88)
    (mkfs_time,) = struct.unpack_from("<I", block, 264)
    (write_time,) = struct.unpack_from("<I", block, 48)
    details: dict[str, object] = {
        "inodes": inodes, "free_inodes": free_inodes, "inode_size": inode_size,
        "free_blocks": free_lo | ((free_hi << 32) if is64 else 0),
        "reserved_blocks": reserved_lo | ((reserved_hi << 32) if is64 else 0),
        "hash_seed": str(uuid.UUID(bytes=block[236:252])),
        "features": _flags(compat, _EXT4_COMPAT) + _flags(incompat, _EXT4_INCOMPAT) + _flags(ro_compat, _EXT4_RO_COMPAT),
        "mkfs_time": mkfs_time, "write_time": write_time,
    }
    return FsInfo("ext4", str(uuid.UUID(bytes=block[104:120])), 1024 << log_block, blocks, _label(block[120:136]),
                  details)


def parse_erofs(block: bytes) -> FsInfo | None:
    """`block` starts at the filesystem's byte 1024."""
    if len(block) < 128 or struct.unpack_from("<I", block, 0)[0] != EROFS_MAGIC:
        return None
    blkszbits = block[12]
    (root_nid,) = struct.unpack_from("<H", block, 14)
    inos, build_time = struct.unpack_from("<QQ", block, 16)
    (blocks,) = struct.unpack_from("<I", block, 36)
    (meta_blkaddr,) = struct.unpack_from("<I", block, 40)
    details: dict[str, object] = {"inodes": inos, "build_time": build_time, "root_nid": root_nid,
                                  "meta_blkaddr": meta_blkaddr}
    return FsInfo("erofs", str(uuid.UUID(bytes=block[48:64])), 1 << blkszbits, blocks, _label(block[64:80]), details)


def parse_xfs(block: bytes) -> FsInfo | None:
    """`block` starts at the filesystem's byte 0."""
    if len(block) < 152 or block[:4] != XFS_MAGIC:
        return None
    (block_size,) = struct.unpack_from(">I", block, 4)
    (dblocks,) = struct.unpack_from(">Q", block, 8)
    (agblocks, agcount) = struct.unpack_from(">II", block, 84)
    (icount, ifree, fdblocks) = struct.unpack_from(">QQQ", block, 128)
    details: dict[str, object] = {"inodes": icount, "free_inodes": ifree, "free_blocks": fdblocks,
                                  "ag_count": agcount, "ag_blocks": agblocks}
    return FsInfo("xfs", str(uuid.UUID(bytes=block[32:48])), block_size, dblocks, _label(block[108:120]), details)


def probe(path: Path, offset: int) -> FsInfo | None:
    """The filesystem whose first byte is at `offset` in `path`, or None."""
    with path.open("rb") as handle:
        handle.seek(offset)
        head = handle.read(4096)
    return parse_xfs(head) or parse_ext4(head[1024:]) or parse_erofs(head[1024:])
