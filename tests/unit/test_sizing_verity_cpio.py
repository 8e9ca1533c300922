"""Sizing arithmetic, the verity tree shape, cpio entry planning and the compressor command lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osbuilder.image import sizing, verity
from osbuilder.image.layout import MIB
from osbuilder.initrd import compression, cpio
from osbuilder.tree import DIR, SYMLINK, Entry, scan_tree
from osbuilder.userns import IDENTITY, caller_as_root
from tests.helpers.trees import EPOCH, NEW, OLD, make_rootfs

# Free blocks that mke2fs 1.47.0 reports (dumpe2fs) for empty 4 KiB-block filesystems of these sizes
# with the default inode ratio; the model must agree block for block.
MKE2FS_FREE_BLOCKS = {60: 14079, 120: 29192, 127: 30955, 129: 28131, 200: 46242, 300: 71414, 600: 146860,
                      1100: 268288}


@pytest.mark.parametrize("size_mib", sorted(MKE2FS_FREE_BLOCKS))
def test_ext4_model_matches_mke2fs(size_mib: int) -> None:
    blocks = size_mib * MIB // 4096
    geometry = sizing.ext4_geometry(blocks, 4096, sizing.default_inodes(blocks, 4096))
    assert geometry.usable_blocks + geometry.reserved == MKE2FS_FREE_BLOCKS[size_mib]


def test_journal_sizes() -> None:
    assert [sizing.journal_blocks(b) for b in (1000, 20000, 32768, 300_000, 600_000, 1 << 22)] == [0, 1024, 4096, 8192, 16384, 32768]


def test_minimum_ext4_holds_the_tree_and_free_space(tmp_path: Path) -> None:
    scan = scan_tree(make_rootfs(tmp_path / "rootfs", extra_bytes=20 * MIB))
    needs = sizing.tree_needs(scan, 4096)
    assert needs.file_blocks >= scan.total_file_bytes() // 4096
    geometry = sizing.ext4_min_blocks(needs, free_bytes=10 * MIB)
    assert geometry.usable_blocks >= needs.blocks + 10 * MIB // 4096
    smaller = sizing.ext4_geometry(geometry.blocks - 64, 4096, sizing.ext4_inode_count(needs, geometry.blocks - 64,
                                                                                      10 * MIB))
    assert smaller.usable_blocks < needs.blocks + 10 * MIB // 4096  # and it is (nearly) the smallest


def test_many_small_files_get_enough_inodes(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    for index in range(3000):
        (root / f"f{index}").write_bytes(b"")
    needs = sizing.tree_needs(scan_tree(root), 4096)
    geometry = sizing.ext4_min_blocks(needs)
    assert geometry.inodes >= needs.inodes > 3000
    assert geometry.inodes > sizing.default_inodes(geometry.blocks, 4096)  # more than the ratio would give


def test_image_size_alignment_and_measured_split() -> None:
    assert sizing.image_size_mib(100 * MIB, dax_header=True, measured=False, alignment_mib=128).size_mib == 128
    assert sizing.image_size_mib(126 * MIB, dax_header=True, measured=False, alignment_mib=128).size_mib == 256
    assert sizing.image_size_mib(100 * MIB, dax_header=False, measured=False, alignment_mib=1).size_mib == 101
    measured = sizing.image_size_mib(122 * MIB, dax_header=True, measured=True, alignment_mib=2)
    # p1 (3 MiB .. floor(0.99 * size)) must hold 122 MiB: 126 MiB -> 124 is too small; 128 -> 126 - 3 = 123.
    assert measured.size_mib == 128


def test_kata_erofs_size_formula() -> None:
    assert sizing.kata_erofs_size_mib(10 * MIB, dax_header=True, measured=False) == 11 + 1 + 1 + 2
    assert sizing.kata_erofs_size_mib(10 * MIB, dax_header=False, measured=True) == 13 * 100 // 99 + 1


def test_verity_levels_match_veritysetup() -> None:
    # veritysetup format of 1000 blocks reports 9 hash blocks; 31488 blocks -> 246 + 2 + 1.
    assert verity.levels(1000).total_blocks == 9
    tree = verity.levels(31488)
    assert tree.sizes == (246, 2, 1) and tree.starts == (3, 1, 0)
    assert verity.levels(1).starts == ()


def test_cpio_members_order_links_and_times(tmp_path: Path) -> None:
    scan = scan_tree(make_rootfs(tmp_path / "rootfs"))
    init = Entry("init", SYMLINK, 0o777, 0, 0, 11, EPOCH, 1, 0, 0, 0, "/sbin/init")
    items = cpio.members(scan, IDENTITY, EPOCH, [init])
    names = [item.name for item in items]
    assert names[0] == "."
    assert names.index("./init") == names.index("./home/user") + 1 < names.index("./lib")
    assert len(names) == len(scan.entries) + 1
    by_name = {item.name: item for item in items}
    links = [by_name["./usr/bin/hard-a"], by_name["./usr/bin/hard-b"], by_name["./usr/share/hard-c"]]
    assert {item.ino for item in links} == {links[0].ino} and all(item.nlink == 3 for item in links)
    assert [item.size for item in links] == [0, 0, 5000]  # the data travels with the last name
    inos = [item.ino for item in items if item.name not in ("./usr/bin/hard-b", "./usr/share/hard-c")]
    assert inos == list(range(1, len(inos) + 1))
    assert by_name["./etc/new-file"].mtime == EPOCH and by_name["./etc/hostname"].mtime == OLD < NEW
    assert by_name["./init"].target == "/sbin/init"
    assert by_name["./usr"].nlink == 2 + sum(1 for e in scan.entries if e.kind == DIR and e.path.count("/") == 1
                                             and e.path.startswith("usr/"))


def test_cpio_members_map_the_caller_to_root(tmp_path: Path) -> None:
    scan = scan_tree(make_rootfs(tmp_path / "rootfs"))
    items = cpio.members(scan, caller_as_root(os.getuid(), os.getgid()), EPOCH)
    assert {(item.uid, item.gid) for item in items} == {(0, 0)}


def test_compressor_command_lines() -> None:
    assert compression.CODECS["xz"].argv(6) == ["xz", "-6", "-T0", "--check=crc32", "-c"]
    assert compression.CODECS["lz4"].argv(9)[:2] == ["lz4", "-l"]
    assert compression.CODECS["zstd"].argv(6) == ["zstd", "-6", "-T0", "-q", "-c"]
    assert "-n" in compression.CODECS["gzip"].argv(9)
    assert compression.CODECS["none"].argv(0) == []
    assert compression.DEFAULT == "zstd"
    assert compression.detect(b"\x28\xb5\x2f\xfd....").name == "zstd"  # type: ignore[union-attr]
    assert compression.detect(b"070701000") is compression.CODECS["none"]
    assert compression.detect(compression.LZ4_FRAME_MAGIC) is None
