"""The NVDIMM pfn info block (`struct nd_pfn_sb`) that turns the image into an fsdax namespace.

QEMU exposes the image file as an NVDIMM; the guest's pfn driver reads this 4096-byte block at
namespace offset 4 KiB and maps the data from `dataoff` (2 MiB) on, where it finds MBR #2 and the
rootfs partition: `/dev/pmem0p1`, mounted with DAX. This replaces Kata's nsdax.gpl.c; the field values
and the Fletcher-64 checksum are byte-identical to its output.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OFFSET = 4096  # SZ_4K: where the block sits in the namespace (the image file)
SIZE = 4096
SIGNATURE = b"NVDIMM_PFN_INFO\0"
MODE_NONE, MODE_RAM, MODE_PMEM = 0, 1, 2
MODE_NAMES = {MODE_NONE: "none", MODE_RAM: "ram", MODE_PMEM: "pmem"}
CHECKSUM_OFFSET = SIZE - 8
DEFAULT_DATAOFF = 2 << 20
DEFAULT_ALIGN = 2 << 20
# nsdax's output for the defaults (dataoff = align = 2 MiB); the tests pin it.
GOLDEN_CHECKSUM = 0x685B032BE3943830

# signature, uuid, parent_uuid, flags, version_major, version_minor, dataoff, npfns, mode,
# start_pad, end_trunc, align (little endian; padding up to the checksum is zero)
_FORMAT = "<16s16s16sIHHQQIIII"
_MASK64 = (1 << 64) - 1


class PfnError(ValueError):
    """The block is missing or corrupt (the message says which field)."""


@dataclass(frozen=True)
class PfnInfo:
    dataoff: int = DEFAULT_DATAOFF
    align: int = DEFAULT_ALIGN
    mode: int = MODE_RAM
    version_major: int = 0
    version_minor: int = 2
    npfns: int = 0
    flags: int = 0
    start_pad: int = 0
    end_trunc: int = 0
    uuid: bytes = bytes(16)
    parent_uuid: bytes = bytes(16)
    checksum: int = 0  # as read; encode() always writes the correct one
    checksum_ok: bool = True

    def to_json(self) -> dict[str, object]:
        return {
            "signature": SIGNATURE.rstrip(b"\0").decode(),
            "uuid": self.uuid.hex(), "parent_uuid": self.parent_uuid.hex(), "flags": self.flags,
            "version": f"{self.version_major}.{self.version_minor}", "dataoff": self.dataoff,
            "npfns": self.npfns, "mode": MODE_NAMES.get(self.mode, str(self.mode)), "start_pad": self.start_pad,
            "end_trunc": self.end_trunc, "align": self.align, "checksum": f"0x{self.checksum:016x}",
            "checksum_ok": self.checksum_ok,
        }


def fletcher64(block: bytes) -> int:
    """The kernel's nd_fletcher64: sums of little-endian u32 words, lo wrapping at 32 bits."""
    lo = hi = 0
    for (word,) in struct.iter_unpack("<I", block):
        lo = (lo + word) & 0xFFFFFFFF
        hi = (hi + lo) & _MASK64
    return ((hi << 32) | lo) & _MASK64


def checksum(block: bytes) -> int:
    """nd_sb_checksum: Fletcher-64 of the block with its checksum field taken as zero."""
    return fletcher64(block[:CHECKSUM_OFFSET] + bytes(8))


def encode(info: PfnInfo) -> bytes:
    block = bytearray(SIZE)
    struct.pack_into(_FORMAT, block, 0, SIGNATURE, info.uuid, info.parent_uuid, info.flags, info.version_major,
                     info.version_minor, info.dataoff, info.npfns, info.mode, info.start_pad, info.end_trunc,
                     info.align)
    struct.pack_into("<Q", block, CHECKSUM_OFFSET, checksum(bytes(block)))
    return bytes(block)


def decode(block: bytes) -> PfnInfo:
    """Parse a block; raise PfnError when there is no pfn signature. A wrong checksum is reported
    in `checksum_ok` so that an inspector can show the fields anyway."""
    if len(block) < SIZE:
        raise PfnError(f"need {SIZE} bytes, got {len(block)}")
    (signature, uuid, parent_uuid, flags, major, minor, dataoff, npfns, mode, start_pad, end_trunc,
     align) = struct.unpack_from(_FORMAT, block, 0)
    if signature != SIGNATURE:
        raise PfnError(f"no NVDIMM_PFN_INFO signature at byte {OFFSET}")
    (stored,) = struct.unpack_from("<Q", block, CHECKSUM_OFFSET)
    return PfnInfo(dataoff, align, mode, major, minor, npfns, flags, start_pad, end_trunc, uuid, parent_uuid,
                   stored, stored == checksum(block[:SIZE]))
