"""Read one small file out of an erofs filesystem inside an image, in Python (no mount, no copy).

Enough of the format for metadata files such as /var/lib/osbuilder/osbuilder.yaml: the superblock,
compact and extended inodes, directory blocks, and the uncompressed data layouts (flat, and flat
with an inline tail). mkfs.erofs stores a file uncompressed when compression would not save a whole
block, which is always the case for files smaller than a block. Compressed or chunked files return
None with the reason; the caller then falls back to fsck.erofs --extract.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from osbuilder.image.superblock import EROFS_MAGIC

SUPERBLOCK_OFFSET = 1024
FLAT_PLAIN, COMPRESSED_FULL, FLAT_INLINE, COMPRESSED_COMPACT, CHUNK_BASED = range(5)
_DIRENT_SIZE = 12
MAX_FILE = 16 << 20


class ErofsError(ValueError):
    pass


@dataclass(frozen=True)
class Inode:
    nid: int
    mode: int
    size: int
    layout: int
    raw_blkaddr: int
    inline_offset: int  # where an inline tail starts (absolute within the fs)


class Reader:
    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self.offset = offset
        sb = self._read(SUPERBLOCK_OFFSET, 128)
        if struct.unpack_from("<I", sb, 0)[0] != EROFS_MAGIC:
            raise ErofsError("no erofs superblock")
        self.block_size = 1 << sb[12]
        (self.root_nid,) = struct.unpack_from("<H", sb, 14)
        (self.meta_blkaddr,) = struct.unpack_from("<I", sb, 40)

    def _read(self, position: int, length: int) -> bytes:
        data = os.pread(self.fd, length, self.offset + position)
        if len(data) != length:
            raise ErofsError(f"short read at {position}")
        return data

    def inode(self, nid: int) -> Inode:
        position = self.meta_blkaddr * self.block_size + nid * 32
        head = self._read(position, 64)
        (i_format, xattr_count, mode) = struct.unpack_from("<HHH", head, 0)
        extended = i_format & 1
        layout = (i_format >> 1) & 7
        if extended:
            (size,) = struct.unpack_from("<Q", head, 8)
            inode_size = 64
        else:
            (size,) = struct.unpack_from("<I", head, 8)
            inode_size = 32
        (raw_blkaddr,) = struct.unpack_from("<I", head, 16)
        xattr_size = 12 + (xattr_count - 1) * 4 if xattr_count else 0
        return Inode(nid, mode, size, layout, raw_blkaddr, position + inode_size + xattr_size)

    def data(self, inode: Inode) -> bytes:
        if inode.size > MAX_FILE:
            raise ErofsError(f"file too large to read here ({inode.size} bytes)")
        if inode.layout == FLAT_PLAIN:
            return self._read(inode.raw_blkaddr * self.block_size, inode.size) if inode.size else b""
        if inode.layout == FLAT_INLINE:
            whole = inode.size - inode.size % self.block_size
            head = self._read(inode.raw_blkaddr * self.block_size, whole) if whole else b""
            return head + self._read(inode.inline_offset, inode.size % self.block_size)
        raise ErofsError("compressed" if inode.layout in (COMPRESSED_FULL, COMPRESSED_COMPACT) else "chunk-based")

    def lookup(self, directory: Inode, name: bytes) -> int | None:
        content = self.data(directory)
        for start in range(0, len(content), self.block_size):
            block = content[start:start + self.block_size]
            (first_nameoff,) = struct.unpack_from("<H", block, 8)
            count = first_nameoff // _DIRENT_SIZE
            entries = [struct.unpack_from("<QHBB", block, i * _DIRENT_SIZE) for i in range(count)]
            for index, (nid, nameoff, _type, _reserved) in enumerate(entries):
                end = entries[index + 1][1] if index + 1 < count else len(block)
                entry_name = block[nameoff:end].split(b"\0", 1)[0]
                if entry_name == name:
                    return int(nid)
        return None

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes; None if it does not exist. Symlinks are not followed."""
        inode = self.inode(self.root_nid)
        for part in [p for p in path.split("/") if p]:
            if not stat.S_ISDIR(inode.mode):
                return None
            nid = self.lookup(inode, os.fsencode(part))
            if nid is None:
                return None
            inode = self.inode(nid)
        if not stat.S_ISREG(inode.mode):
            return None
        return self.data(inode)
