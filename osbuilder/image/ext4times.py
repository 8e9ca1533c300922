"""Clamp every inode's timestamps in an ext4 filesystem, through libext2fs (no mount).

mke2fs 1.47.0 -d copies atime, ctime and mtime from the source tree. ctime cannot be set from user
space (copying a tree sets it to "now") and atime changes when files are read, so images of the
same tree would differ. After mkfs, every in-use inode gets:

    mtime  = min(mtime, epoch)      (the tree's modification times, clamped)
    atime = ctime = crtime = epoch

Path-based `debugfs sif` commands take ~30 µs each (a path lookup per command); iterating the inode
table with libext2fs takes a few ms for 10 000 inodes, and the library recomputes the inode
checksums itself. libext2fs.so.2 comes with e2fsprogs (Debian package libext2fs2).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from osbuilder.errors import BuildError

_EXT2_FLAG_RW = 0x01
_EXT2_FLAG_64BITS = 0x20000
_EXTRA = {"ctime": 132, "mtime": 136, "atime": 140, "crtime": 148}
_GOOD_OLD_INODE_SIZE = 128


@functools.cache
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("ext2fs") or "libext2fs.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise BuildError(problem=f"cannot load libext2fs: {exc}", where="libext2fs.so.2",
                         fix="apt-get install libext2fs2 (it comes with e2fsprogs)") from exc
    handle = ctypes.POINTER(ctypes.c_void_p)
    lib.ext2fs_open2.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_void_p, handle]
    lib.ext2fs_open2.restype = ctypes.c_long
    lib.ext2fs_open_inode_scan.argtypes = [ctypes.c_void_p, ctypes.c_int, handle]
    lib.ext2fs_open_inode_scan.restype = ctypes.c_long
    lib.ext2fs_get_next_inode_full.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
                                               ctypes.c_int]
    lib.ext2fs_get_next_inode_full.restype = ctypes.c_long
    lib.ext2fs_close_inode_scan.argtypes = [ctypes.c_void_p]
    lib.ext2fs_close_inode_scan.restype = None
    lib.ext2fs_write_inode_full.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_int]
    lib.ext2fs_write_inode_full.restype = ctypes.c_long
    lib.ext2fs_close_free.argtypes = [handle]
    lib.ext2fs_close_free.restype = ctypes.c_long
    return lib


def _check(code: int, what: str, where: str) -> None:
    if code:
        raise BuildError(problem=f"libext2fs: {what} failed with error code {code}", where=where,
                         fix="check the filesystem with e2fsck -fn; this is a bug if mkfs succeeded")


def _decode_time(low: int, extra: int) -> int:
    signed = low - (1 << 32) if low & 0x80000000 else low
    return signed + ((extra & 3) << 32)


def _encode_time(seconds: int) -> tuple[int, int]:
    """ext4's 34-bit seconds: a signed 32-bit low part and two epoch bits in the extra field."""
    low = seconds & 0xFFFFFFFF
    signed = low - (1 << 32) if low & 0x80000000 else low
    return low, ((seconds - signed) >> 32) & 3


@contextlib.contextmanager
def _fake_time(epoch: int) -> Iterator[None]:
    # libext2fs stamps the superblock's write time from E2FSPROGS_FAKE_TIME when it is set.
    previous = os.environ.get("E2FSPROGS_FAKE_TIME")
    os.environ["E2FSPROGS_FAKE_TIME"] = str(epoch)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("E2FSPROGS_FAKE_TIME", None)
        else:
            os.environ["E2FSPROGS_FAKE_TIME"] = previous


def clamp_times(path: Path, offset: int, epoch: int, inode_size: int = 256) -> int:
    """Normalise the timestamps of every in-use inode; returns how many inodes were rewritten."""
    lib = _library()
    where = f"{path}?offset={offset}"
    fs = ctypes.c_void_p()
    manager = ctypes.c_void_p.in_dll(lib, "unix_io_manager")
    with _fake_time(epoch):
        _check(lib.ext2fs_open2(os.fsencode(path), f"offset={offset}".encode(), _EXT2_FLAG_RW | _EXT2_FLAG_64BITS,
                                0, 0, manager, ctypes.byref(fs)), "opening the filesystem", where)
        changed = 0
        try:
            scan = ctypes.c_void_p()
            _check(lib.ext2fs_open_inode_scan(fs, 0, ctypes.byref(scan)), "scanning inodes", where)
            buffer = ctypes.create_string_buffer(inode_size)
            ino = ctypes.c_uint()
            low_epoch, extra_epoch = _encode_time(epoch)
            try:
                while True:
                    _check(lib.ext2fs_get_next_inode_full(scan, ctypes.byref(ino), buffer, inode_size),
                           "reading an inode", where)
                    if ino.value == 0:
                        break
                    raw = bytearray(buffer.raw)
                    mode, links = struct.unpack_from("<H", raw, 0)[0], struct.unpack_from("<H", raw, 26)[0]
                    if mode == 0 or links == 0:
                        continue
                    if _rewrite(raw, epoch, low_epoch, extra_epoch, inode_size):
                        ctypes.memmove(buffer, bytes(raw), inode_size)
                        _check(lib.ext2fs_write_inode_full(fs, ino.value, buffer, inode_size),
                               f"writing inode {ino.value}", where)
                        changed += 1
            finally:
                lib.ext2fs_close_inode_scan(scan)
        finally:
            _check(lib.ext2fs_close_free(ctypes.byref(fs)), "closing the filesystem", where)
    return changed


_BASE = struct.Struct("<III")  # atime, ctime, mtime at offset 8
_EXTRA_FIELDS = struct.Struct("<HHIIIII")  # extra_isize, checksum_hi, ctime/mtime/atime extra, crtime, crtime extra


def _rewrite(raw: bytearray, epoch: int, low_epoch: int, extra_epoch: int, inode_size: int) -> bool:
    """Apply the rule to one raw inode; False when it already holds."""
    atime, ctime, mtime_low = _BASE.unpack_from(raw, 8)
    large = inode_size > _GOOD_OLD_INODE_SIZE
    if large:
        extra_isize, checksum_hi, ctime_extra, mtime_extra, atime_extra, crtime, crtime_extra = \
            _EXTRA_FIELDS.unpack_from(raw, _GOOD_OLD_INODE_SIZE)
        covered = _GOOD_OLD_INODE_SIZE + extra_isize  # the extra fields this inode really has
    else:
        extra_isize = checksum_hi = ctime_extra = atime_extra = crtime = crtime_extra = 0
        mtime_extra = 0
        covered = _GOOD_OLD_INODE_SIZE
    if covered < _EXTRA["mtime"] + 4:
        mtime_extra = 0
    new_mtime_low, new_mtime_epoch = _encode_time(min(_decode_time(mtime_low, mtime_extra), epoch))
    _BASE.pack_into(raw, 8, low_epoch, low_epoch, new_mtime_low)
    if covered >= _EXTRA["crtime"] + 4:
        # Nanoseconds are dropped (mke2fs -d does not copy them either); the two epoch bits stay.
        _EXTRA_FIELDS.pack_into(raw, _GOOD_OLD_INODE_SIZE, extra_isize, checksum_hi, extra_epoch, new_mtime_epoch,
                                extra_epoch, low_epoch, extra_epoch)
        new: tuple[int, ...] = (low_epoch, low_epoch, new_mtime_low, extra_epoch, new_mtime_epoch, extra_epoch, low_epoch, extra_epoch)
        old: tuple[int, ...] = (atime, ctime, mtime_low, ctime_extra, mtime_extra, atime_extra, crtime, crtime_extra)
    else:
        new = (low_epoch, low_epoch, new_mtime_low)
        old = (atime, ctime, mtime_low)
    return new != old
