"""The on-disk formats: MBR, the NVDIMM pfn block, Kata's dual-MBR layout, the verity record."""

from __future__ import annotations

import random
import struct

import pytest

from osbuilder.image import layout, mbr, pfn
from osbuilder.image.layout import MIB, ImageLayout, LayoutError
from osbuilder.kernelcmdline import VerityLine


def test_pfn_block_reproduces_nsdax_golden_checksum() -> None:
    block = pfn.encode(pfn.PfnInfo())
    assert len(block) == 4096
    assert pfn.checksum(block) == pfn.GOLDEN_CHECKSUM == 0x685B032BE3943830
    assert block[4088:] == bytes.fromhex("303894e32b035b68")
    assert block[:16] == b"NVDIMM_PFN_INFO\0"
    # Every field where nsdax puts it (little endian).
    assert struct.unpack_from("<IHHQQIIII", block, 48) == (0, 0, 2, 2 << 20, 0, 1, 0, 0, 2 << 20)
    assert block[88:4088] == bytes(4000)


def test_pfn_decode_round_trip_and_bad_checksum() -> None:
    info = pfn.decode(pfn.encode(pfn.PfnInfo(dataoff=4 << 20, align=4 << 20)))
    assert (info.dataoff, info.align, info.mode, info.version_minor, info.checksum_ok) == (4 << 20, 4 << 20, 1, 2, True)
    corrupt = bytearray(pfn.encode(pfn.PfnInfo()))
    corrupt[100] ^= 1
    assert pfn.decode(bytes(corrupt)).checksum_ok is False
    with pytest.raises(pfn.PfnError):
        pfn.decode(bytes(4096))


def test_fletcher64_matches_the_definition() -> None:
    rng = random.Random(1)
    data = bytes(rng.getrandbits(8) for _ in range(4096))
    lo = hi = 0
    for index in range(0, 4096, 4):
        lo = (lo + int.from_bytes(data[index:index + 4], "little")) % (1 << 32)
        hi = (hi + lo) % (1 << 64)
    assert pfn.fletcher64(data) == ((hi << 32) | lo) % (1 << 64)


def test_mbr_round_trip() -> None:
    table = mbr.Mbr(0x4B415441, (mbr.Partition(6144, 256000, bootable=True), mbr.Partition(262144, 4096)))
    raw = mbr.encode(table)
    assert len(raw) == 512 and raw[510:] == b"\x55\xaa" and raw[440:444] == bytes.fromhex("4154414b")
    assert raw[446] == 0x80 and raw[450] == 0x83 and raw[462] == 0 and raw[466] == 0x83
    assert struct.unpack_from("<II", raw, 454) == (6144, 256000)
    assert mbr.decode(raw) == table
    assert raw[:440] == bytes(440)  # no boot code


def test_mbr_rejects_garbage() -> None:
    with pytest.raises(mbr.MbrError, match="boot signature"):
        mbr.decode(bytes(512))
    with pytest.raises(mbr.MbrError, match="at most 4"):
        mbr.encode(mbr.Mbr(1, tuple(mbr.Partition(2048 * (i + 1), 2048) for i in range(5))))


def test_chs_of_small_and_large_addresses() -> None:
    raw = mbr.encode(mbr.Mbr(1, (mbr.Partition(2048, 2048),)))
    assert raw[447:450] == bytes((32, 33, 0))  # LBA 2048 = C0 H32 S33
    big = mbr.encode(mbr.Mbr(1, (mbr.Partition(20_000_000, 2048),)))
    assert big[447:450] == bytes((254, 0xFF, 0xFF))  # beyond 1024 cylinders: the maximum


def _head(image: ImageLayout) -> bytes:
    head = bytearray(layout.HEAD_SIZE)
    for offset, data in image.headers():
        if offset < len(head):
            head[offset:offset + len(data)] = data
    return bytes(head)


def test_default_layout_is_kata_dax_layout() -> None:
    image = layout.plan(128, dax_header=True, measured=False, disk_signature=7)
    assert image.size == 128 * MIB
    assert (image.root.offset, image.root.end) == (3 * MIB, 128 * MIB)
    primary, nested = image.primary_mbr(), image.nested_mbr()
    assert primary.partitions[0].start_lba == 6144 and primary.partitions[0].sectors == (128 - 3) * 2048
    assert nested is not None and nested.partitions[0].start_lba == 2048
    assert nested.partitions[0].sectors == primary.partitions[0].sectors
    offsets = [offset for offset, _ in image.headers()]
    assert offsets == [0, 4096, 2 * MIB]
    decoded, problems, _raw = layout.decode(_head(image), image.size)
    assert problems == []
    assert decoded is not None and decoded.root == image.root and decoded.dax_header and decoded.pfn is not None


def test_plain_layout_without_dax_header() -> None:
    image = layout.plan(64, dax_header=False, measured=False, disk_signature=7)
    assert image.root.offset == 1 * MIB and image.nested_mbr() is None and image.pfn is None
    assert [offset for offset, _ in image.headers()] == [0]
    decoded, problems, _raw = layout.decode(_head(image), image.size)
    assert problems == [] and decoded is not None and not decoded.dax_header


def test_measured_layout_splits_at_99_percent_in_both_mbrs() -> None:
    image = layout.plan(256, dax_header=True, measured=True, disk_signature=7)
    assert image.hash is not None
    assert image.root.end == image.hash.offset == 253 * MIB  # floor(256 * 0.99)
    assert image.hash.end == 256 * MIB
    primary, nested = image.primary_mbr(), image.nested_mbr()
    assert nested is not None
    assert [p.bootable for p in primary.partitions] == [True, False]
    for outer, inner in zip(primary.partitions, nested.partitions, strict=True):
        assert outer.offset == inner.offset + 2 * MIB and outer.size == inner.size
    # At 202 MiB Kata's two boundaries differ: floor(0.99 * 202) = 199 in MBR #1, 2 + floor(0.99 * 200)
    # = 200 in MBR #2. Here both MBRs use 199.
    odd = layout.plan(202, dax_header=True, measured=True, disk_signature=7)
    decoded, problems, _raw = layout.decode(_head(odd), odd.size)
    assert problems == [] and decoded is not None and decoded.hash == odd.hash


def test_decode_reports_disagreeing_partitions_and_bad_checksum() -> None:
    image = layout.plan(128, dax_header=True, measured=False, disk_signature=7)
    head = bytearray(_head(image))
    struct.pack_into("<I", head, 2 * MIB + 446 + 8, 4096)  # MBR #2's p1 start: 4096 instead of 2048
    _decoded, problems, _raw = layout.decode(bytes(head), image.size)
    assert any("partitions disagree" in problem for problem in problems)
    head = bytearray(_head(image))
    head[4096 + 200] = 1
    _decoded, problems, _raw = layout.decode(bytes(head), image.size)
    assert any("bad checksum" in problem for problem in problems)


def test_decode_rejects_a_partition_beyond_the_file() -> None:
    image = layout.plan(128, dax_header=False, measured=False, disk_signature=7)
    _decoded, problems, _raw = layout.decode(_head(image), 64 * MIB)
    assert any("beyond the file" in problem for problem in problems)


def test_kernel_root_params_follow_the_runtime() -> None:
    image = layout.plan(128, dax_header=True, measured=False, disk_signature=7, fs_type="ext4")
    assert image.kernel_root_params(nvdimm=True) == [
        "root=/dev/pmem0p1", "rootflags=dax,data=ordered,errors=remount-ro", "ro", "rootfstype=ext4"]
    assert image.kernel_root_params(nvdimm=False) == [
        "root=/dev/vda1", "rootflags=data=ordered,errors=remount-ro", "ro", "rootfstype=ext4"]
    erofs = layout.plan(16, dax_header=True, measured=False, disk_signature=7, fs_type="erofs")
    assert erofs.kernel_root_params(nvdimm=True) == ["root=/dev/pmem0p1", "rootflags=dax", "ro", "rootfstype=erofs"]
    measured = layout.plan(128, dax_header=True, measured=True, disk_signature=7, fs_type="ext4")
    line = VerityLine("ab" * 32, "cd" * 32, 31488)
    params = measured.kernel_root_params(nvdimm=True, verity=line)
    assert params[0] == ('dm-mod.create="dm-verity,,,ro,0 251904 verity 1 /dev/pmem0p1 /dev/pmem0p2 4096 4096 '
                         f'31488 0 sha256 {"ab" * 32} {"cd" * 32}"')
    assert params[1:] == ["root=/dev/dm-0", "rootflags=data=ordered,errors=remount-ro", "ro", "rootfstype=ext4"]
    plain = layout.plan(128, dax_header=False, measured=False, disk_signature=7)
    with pytest.raises(LayoutError):
        plain.kernel_root_params(nvdimm=True)


def test_verity_line_round_trip_and_errors() -> None:
    text = "root_hash=" + "ab" * 32 + ",salt=" + "cd" * 32 + ",data_blocks=10,data_block_size=4096,hash_block_size=4096"
    assert VerityLine.parse(text).format() == text
    for bad in ("root_hash=zz,salt=00,data_blocks=1,data_block_size=4096,hash_block_size=4096",
                "salt=00,data_blocks=1,data_block_size=4096,hash_block_size=4096",
                "root_hash=00,salt=00,data_blocks=1,data_block_size=1000,hash_block_size=4096"):
        with pytest.raises(ValueError):
            VerityLine.parse(bad)
