"""Kata's image layout as data: where the MBRs, the pfn block and the partitions are.

DAX image (the default), absolute offsets:

    0         MBR #1: p1 at 3 MiB (LBA 6144) to the end, type 0x83
    4 KiB     NVDIMM pfn info block (dataoff = align = 2 MiB, mode RAM, Fletcher-64)
    2 MiB     MBR #2: p1 at +1 MiB (LBA 2048), i.e. the same 3 MiB
    3 MiB     the filesystem, up to the end of the file

A virtio-blk guest reads MBR #1 (/dev/vda1 at 3 MiB); an NVDIMM guest's pfn driver starts the
namespace at dataoff, reads MBR #2 (/dev/pmem0p1 at 2 + 1 MiB). Both are the same bytes.
Measured images split the disk at floor(99 %) (in MiB): p1 data (bootable) up to there, p2 the
dm-verity hash tree after it. Kata computes MBR #2's boundary from the 2 MiB-smaller inner disk,
which can disagree with MBR #1 by 1 MiB for sizes that are not 128 MiB-aligned; here both MBRs use
MBR #1's boundary, so the two views always agree. Without the DAX header (--no-dax-header): one
MBR at 0, p1 at 1 MiB.

`ImageLayout` is what the builder writes and what `read_layout` decodes back; the boot check uses
it for partition offsets, the filesystem type and the kernel command line (§9.4 of the reference,
implemented once in osbuilder.kernelcmdline, which image and boot both use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from osbuilder.image import mbr, pfn
from osbuilder.kernelcmdline import RootSpec, VerityLine, root_params

MIB = 1 << 20
DAX_HEADER_SIZE = 2 * MIB  # MBR #1 + pfn block, before the inner disk
ROOTFS_START = 1 * MIB  # partition 1's start inside a disk
HASH_PERCENT = 99  # measured: p1 ends at floor(size * 99 / 100) MiB
DEFAULT_ALIGNMENT_MB = 128  # Kata's IMAGE_SIZE_ALIGNMENT_MB (arm64 memory hotplug needs 128 MiB blocks)


class LayoutError(ValueError):
    """The file is not a valid Kata image; `problems` lists every reason found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Region:
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    def to_json(self) -> dict[str, int]:
        return {"offset": self.offset, "size": self.size}


@dataclass(frozen=True)
class ImageLayout:
    size: int  # bytes, the whole file
    dax_header: bool
    measured: bool
    disk_signature: int
    root: Region  # the rootfs partition (p1), absolute offsets
    hash: Region | None = None  # the dm-verity hash partition (p2) of a measured image
    fs_type: str = ""  # "ext4", "xfs", "erofs"; "" when not known (a layout plan)
    pfn: pfn.PfnInfo | None = None

    @property
    def dataoff(self) -> int:
        """Where the NVDIMM namespace's data starts (MBR #2); 0 without the DAX header."""
        return self.pfn.dataoff if self.pfn is not None else 0

    def _partitions(self, base: int) -> tuple[mbr.Partition, ...]:
        regions = [self.root] if self.hash is None else [self.root, self.hash]
        return tuple(mbr.Partition((region.offset - base) // mbr.SECTOR, region.size // mbr.SECTOR,
                                   mbr.LINUX, bootable=self.measured and index == 0)
                     for index, region in enumerate(regions))

    def primary_mbr(self) -> mbr.Mbr:
        """MBR #1 at offset 0 (the only one without the DAX header)."""
        return mbr.Mbr(self.disk_signature, self._partitions(0))

    def nested_mbr(self) -> mbr.Mbr | None:
        """MBR #2 at `dataoff`, with offsets relative to it."""
        if not self.dax_header:
            return None
        return mbr.Mbr(self.disk_signature, self._partitions(self.dataoff))

    def headers(self) -> list[tuple[int, bytes]]:
        """(absolute offset, bytes) for everything outside the partitions."""
        writes = [(0, mbr.encode(self.primary_mbr()))]
        nested = self.nested_mbr()
        if nested is not None and self.pfn is not None:
            writes.append((pfn.OFFSET, pfn.encode(self.pfn)))
            writes.append((self.dataoff, mbr.encode(nested)))
        return writes

    def to_json(self) -> dict[str, object]:
        nested = self.nested_mbr()
        return {
            "size": self.size, "dax_header": self.dax_header, "measured": self.measured,
            "fs_type": self.fs_type, "disk_signature": f"0x{self.disk_signature:08x}",
            "root_partition": self.root.to_json(), "hash_partition": self.hash.to_json() if self.hash else None,
            "pfn": self.pfn.to_json() if self.pfn else None,
            "mbr1": self.primary_mbr().to_json(),
            "mbr2": nested.to_json(self.dataoff) if nested else None,
        }

    def kernel_root_params(self, *, nvdimm: bool, verity: VerityLine | None = None) -> list[str]:
        """The root= parameters Kata's runtime passes for this image (reference §9.4).

        nvdimm: the image is attached as an NVDIMM (root=/dev/pmem0p1, mounted with DAX); else as
        virtio-blk (root=/dev/vda1). verity: the recorded root hash line of a measured image, which
        turns the root into dm-verity through dm-mod.create (no DAX on a dm device)."""
        if nvdimm and not self.dax_header:
            raise LayoutError(["an image without the DAX header cannot be used as an NVDIMM root"])
        if verity is not None and self.hash is None:
            raise LayoutError(["verity parameters given for an image without a hash partition"])
        return root_params(RootSpec("image", self.fs_type or "ext4", nvdimm, verity))


def hash_boundary_mib(size_mib: int) -> int:
    """Kata's `floor(img_size * 0.99)`, in integer arithmetic."""
    return size_mib * HASH_PERCENT // 100


def plan(size_mib: int, *, dax_header: bool, measured: bool, disk_signature: int, fs_type: str = "") -> ImageLayout:
    """The layout of an image of `size_mib` MiB."""
    size = size_mib * MIB
    start = (DAX_HEADER_SIZE if dax_header else 0) + ROOTFS_START
    if measured:
        boundary = hash_boundary_mib(size_mib) * MIB
        if boundary <= start or boundary >= size:
            raise LayoutError([f"a measured image of {size_mib} MiB has no room for both partitions"])
        root, hash_region = Region(start, boundary - start), Region(boundary, size - boundary)
    else:
        if size <= start:
            raise LayoutError([f"an image of {size_mib} MiB has no room for the rootfs partition"])
        root, hash_region = Region(start, size - start), None
    info = pfn.decode(pfn.encode(pfn.PfnInfo())) if dax_header else None  # with its checksum filled in
    return ImageLayout(size, dax_header, measured, disk_signature, root, hash_region, fs_type, info)


HEAD_SIZE = DAX_HEADER_SIZE + mbr.SECTOR  # enough to decode every header


def decode(head: bytes, file_size: int) -> tuple[ImageLayout | None, list[str], dict[str, object]]:
    """Decode the headers of an image from its first HEAD_SIZE bytes.

    Returns the layout (None when it cannot be understood), the problems found (an empty list for
    a valid image), and the raw decoded structures for an inspector (both MBRs, the pfn block)."""
    problems: list[str] = []
    raw: dict[str, object] = {}
    try:
        primary = mbr.decode(head[:mbr.SECTOR])
    except mbr.MbrError as error:
        return None, [f"MBR #1: {error}"], raw
    raw["mbr1"] = primary.to_json()
    info: pfn.PfnInfo | None = None
    try:
        info = pfn.decode(head[pfn.OFFSET:pfn.OFFSET + pfn.SIZE])
    except pfn.PfnError:
        info = None
    nested: mbr.Mbr | None = None
    if info is not None:
        raw["pfn"] = info.to_json()
        if not info.checksum_ok:
            problems.append(f"pfn info block: bad checksum 0x{info.checksum:016x} "
                            f"(expected 0x{pfn.checksum(head[pfn.OFFSET:pfn.OFFSET + pfn.SIZE]):016x})")
        if info.mode != pfn.MODE_RAM:
            problems.append(f"pfn info block: mode {info.mode}, expected {pfn.MODE_RAM} (RAM)")
        if info.dataoff % MIB or not 0 < info.dataoff <= len(head) - mbr.SECTOR:
            problems.append(f"pfn info block: dataoff {info.dataoff} is not where MBR #2 can be")
            return None, problems, raw
        if info.align == 0 or info.dataoff % info.align:
            problems.append(f"pfn info block: dataoff {info.dataoff} is not a multiple of align {info.align}")
        try:
            nested = mbr.decode(head[info.dataoff:info.dataoff + mbr.SECTOR])
            raw["mbr2"] = nested.to_json(info.dataoff)
        except mbr.MbrError as error:
            problems.append(f"MBR #2 at {info.dataoff}: {error}")
            return None, problems, raw
    partitions = primary.partitions
    if not partitions or len(partitions) > 2:
        problems.append(f"MBR #1 has {len(partitions)} partitions; a Kata image has 1 (or 2 when measured)")
        return None, problems, raw
    for index, partition in enumerate(partitions):
        if partition.type != mbr.LINUX:
            problems.append(f"MBR #1 partition {index + 1} has type 0x{partition.type:02x}, expected 0x83")
        if partition.end > file_size:
            problems.append(f"MBR #1 partition {index + 1} ends at {partition.end}, beyond the file ({file_size})")
        if partition.offset % MIB:
            problems.append(f"MBR #1 partition {index + 1} starts at {partition.offset}, not MiB-aligned")
    if nested is not None:
        base = info.dataoff if info else 0
        if len(nested.partitions) != len(partitions):
            problems.append(f"partitions disagree: MBR #1 has {len(partitions)}, MBR #2 has {len(nested.partitions)}")
        for index, (outer, inner) in enumerate(zip(partitions, nested.partitions, strict=False)):
            if (outer.offset, outer.end) != (base + inner.offset, base + inner.end):
                problems.append(f"partitions disagree: p{index + 1} is {outer.offset}..{outer.end} in MBR #1 but "
                                f"{base + inner.offset}..{base + inner.end} in MBR #2")
    root = Region(partitions[0].offset, partitions[0].size)
    hash_region = Region(partitions[1].offset, partitions[1].size) if len(partitions) == 2 else None
    expected_start = (DAX_HEADER_SIZE if info else 0) + ROOTFS_START
    if root.offset != expected_start:
        problems.append(f"the rootfs partition starts at {root.offset}, Kata's layout has it at {expected_start}")
    if hash_region is not None and hash_region.offset < root.end:
        problems.append("the hash partition overlaps the rootfs partition")
    layout = ImageLayout(file_size, info is not None, hash_region is not None, primary.disk_signature, root,
                         hash_region, "", info)
    return layout, problems, raw


def read_head(path: Path) -> tuple[bytes, int]:
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        return handle.read(HEAD_SIZE), size


def read_layout(path: Path) -> ImageLayout:
    """The layout of an image file, with its filesystem type; LayoutError if it is not valid."""
    from osbuilder.image.superblock import probe  # the superblock parsers are only needed here

    head, size = read_head(path)
    layout, problems, _raw = decode(head, size)
    if layout is None or problems:
        raise LayoutError(problems or ["not a Kata image"])
    info = probe(path, layout.root.offset)
    if info is None:
        raise LayoutError([f"no ext4, xfs or erofs filesystem at offset {layout.root.offset}"])
    return ImageLayout(layout.size, layout.dax_header, layout.measured, layout.disk_signature, layout.root,
                       layout.hash, info.fs_type, layout.pfn)
