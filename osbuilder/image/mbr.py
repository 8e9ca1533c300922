"""DOS/MBR partition tables, written and read in Python (no parted, no loop devices).

Only what Kata's images use: up to four primary partitions, the 32-bit disk signature at byte 440
(derived from the inputs instead of parted's random one) and the 0x55AA boot signature. The boot code
area stays zero: the guest kernel is booted directly and never runs it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SECTOR = 512
SIGNATURE_OFFSET = 440
TABLE_OFFSET = 446
BOOT_MAGIC = b"\x55\xaa"
LINUX = 0x83
BOOTABLE = 0x80
# The geometry every partitioning tool assumes for CHS fields nobody reads any more.
_HEADS, _SECTORS = 255, 63
_CHS_MAX = (1023, 254, 63)


class MbrError(ValueError):
    """The bytes are not a valid MBR (the message says why)."""


@dataclass(frozen=True)
class Partition:
    start_lba: int
    sectors: int
    type: int = LINUX
    bootable: bool = False

    @property
    def offset(self) -> int:
        return self.start_lba * SECTOR

    @property
    def size(self) -> int:
        return self.sectors * SECTOR

    @property
    def end(self) -> int:
        """Byte offset just past the partition."""
        return self.offset + self.size

    def to_json(self, base: int = 0) -> dict[str, int | bool | str]:
        return {"start_lba": self.start_lba, "sectors": self.sectors, "type": f"0x{self.type:02x}",
                "bootable": self.bootable, "offset": base + self.offset, "size": self.size}


@dataclass(frozen=True)
class Mbr:
    disk_signature: int
    partitions: tuple[Partition, ...]

    def to_json(self, base: int = 0) -> dict[str, object]:
        return {"disk_signature": f"0x{self.disk_signature:08x}",
                "partitions": [partition.to_json(base) for partition in self.partitions]}


def _chs(lba: int) -> bytes:
    cylinder, rest = divmod(lba, _HEADS * _SECTORS)
    head, sector = divmod(rest, _SECTORS)
    if cylinder > _CHS_MAX[0]:
        cylinder, head, sector = _CHS_MAX[0], _CHS_MAX[1], _CHS_MAX[2] - 1
    return bytes((head, ((sector + 1) & 0x3F) | ((cylinder >> 2) & 0xC0), cylinder & 0xFF))


def encode(mbr: Mbr) -> bytes:
    if len(mbr.partitions) > 4:
        raise MbrError(f"an MBR holds at most 4 primary partitions, not {len(mbr.partitions)}")
    if not 0 <= mbr.disk_signature <= 0xFFFFFFFF:
        raise MbrError(f"disk signature {mbr.disk_signature:#x} does not fit in 32 bits")
    sector = bytearray(SECTOR)
    struct.pack_into("<I", sector, SIGNATURE_OFFSET, mbr.disk_signature)
    for index, partition in enumerate(mbr.partitions):
        if partition.start_lba <= 0 or partition.sectors <= 0:
            raise MbrError(f"partition {index + 1} is empty or starts at sector 0")
        if partition.start_lba + partition.sectors > 1 << 32:
            raise MbrError(f"partition {index + 1} ends beyond the 2 TiB an MBR can address")
        entry = (bytes((BOOTABLE if partition.bootable else 0,)) + _chs(partition.start_lba)
                 + bytes((partition.type,)) + _chs(partition.start_lba + partition.sectors - 1)
                 + struct.pack("<II", partition.start_lba, partition.sectors))
        sector[TABLE_OFFSET + 16 * index:TABLE_OFFSET + 16 * (index + 1)] = entry
    sector[510:512] = BOOT_MAGIC
    return bytes(sector)


def decode(data: bytes) -> Mbr:
    """Parse one 512-byte sector; empty slots are skipped, so partitions keep their table order."""
    if len(data) < SECTOR:
        raise MbrError(f"need {SECTOR} bytes, got {len(data)}")
    if data[510:512] != BOOT_MAGIC:
        raise MbrError(f"no MBR boot signature (55 aa) at byte 510, found {data[510:512].hex(' ')}")
    (signature,) = struct.unpack_from("<I", data, SIGNATURE_OFFSET)
    partitions = []
    for index in range(4):
        entry = data[TABLE_OFFSET + 16 * index:TABLE_OFFSET + 16 * (index + 1)]
        status, kind = entry[0], entry[4]
        start, sectors = struct.unpack_from("<II", entry, 8)
        if kind == 0 and start == 0 and sectors == 0:
            continue
        if status not in (0, BOOTABLE):
            raise MbrError(f"partition {index + 1} has an invalid status byte 0x{status:02x}")
        if kind == 0xEE:
            raise MbrError("this is a protective MBR (the disk uses GPT)")
        partitions.append(Partition(start, sectors, kind, status == BOOTABLE))
    return Mbr(signature, tuple(partitions))
