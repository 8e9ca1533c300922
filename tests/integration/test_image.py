"""build-image with the real tools, checked by independent ones (sfdisk, e2fsck, debugfs, fsck.erofs,
veritysetup, xfs_db)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from osbuilder.image import builder, layout, sizing
from osbuilder.image.builder import ImageOptions, build_image
from osbuilder.image.layout import MIB
from tests.conftest import run_cli
from tests.helpers.make import make
from tests.helpers.trees import EPOCH, OLD, make_rootfs

pytestmark = pytest.mark.integration


def sh(*argv: str | os.PathLike[str]) -> str:
    return subprocess.run([os.fspath(a) for a in argv], check=True, capture_output=True, text=True).stdout


def sfdisk(path: Path) -> dict[str, object]:
    table: dict[str, object] = json.loads(sh("sfdisk", "--json", path))["partitiontable"]
    return table


def nested_table(image: Path, tmp_path: Path) -> dict[str, object]:
    """MBR #2 as sfdisk sees it: its sector at the start of a file as large as the inner disk."""
    view = tmp_path / "inner-disk"
    with image.open("rb") as source, view.open("wb") as target:
        source.seek(2 * MIB)
        target.write(source.read(512))
        target.truncate(image.stat().st_size - 2 * MIB)
    return sfdisk(view)


def debugfs(image: Path, offset: int, command: str) -> str:
    return subprocess.run(["debugfs", "-R", command, f"{image}?offset={offset}"], check=True, capture_output=True,
                          text=True).stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path / "rootfs")


def build(rootfs: Path, output: Path, **options: object) -> builder.ImageResult:
    options.setdefault("source_date_epoch", EPOCH)
    return build_image(rootfs, ImageOptions(output=output, **options))  # type: ignore[arg-type]


def test_default_image_has_kata_layout(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "kata-containers.img"
    result = build(rootfs, image)
    assert image.stat().st_size == 128 * MIB
    # The pfn block with nsdax's golden checksum at 4 KiB.
    raw = image.read_bytes()[:3 * MIB]
    assert raw[4096:4096 + 16] == b"NVDIMM_PFN_INFO\0"
    assert raw[0x1FF8:0x2000] == bytes.fromhex("303894e32b035b68")
    assert raw[2 * MIB - 512:2 * MIB] == bytes(512)
    # Both MBRs decode with sfdisk and point at the same filesystem.
    outer = sfdisk(image)
    inner = nested_table(image, tmp_path)
    assert outer["id"] == inner["id"] == result.identifiers.to_json()["disk_signature"]
    [p1] = outer["partitions"]  # type: ignore[misc]
    [q1] = inner["partitions"]  # type: ignore[misc]
    assert (p1["start"], p1["type"]) == (6144, "83") and p1["start"] + p1["size"] == 128 * MIB // 512
    assert q1["start"] * 512 + 2 * MIB == p1["start"] * 512 and q1["size"] == p1["size"]
    assert "bootable" not in p1
    # The filesystem there is clean and holds the tree.
    offset = p1["start"] * 512
    subprocess.run(["e2fsck", "-fn", f"{image}?offset={offset}"], check=True, capture_output=True)
    assert debugfs(image, offset, "cat /var/lib/osbuilder/osbuilder.yaml") == \
        (rootfs / "var/lib/osbuilder/osbuilder.yaml").read_text()
    assert layout.read_layout(image) == result.layout
    assert result.layout.fs_type == "ext4" and result.filesystem.size == 125 * MIB


def test_image_contents_match_the_tree(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "kata.img"
    result = build(rootfs, image)
    offset = result.layout.root.offset
    stat_of = lambda path: debugfs(image, offset, f"stat {path}")  # noqa: E731
    machine_id = stat_of("/etc/machine-id")
    assert re.search(r"Size: 0\b", machine_id) and "Mode:  0444" in machine_id  # emptied, mode kept
    assert (rootfs / "etc/machine-id").read_bytes() == b"0123456789abcdef\n"  # the tree is untouched
    new_file = stat_of("/etc/new-file")
    assert "mtime: 0x6553f100" in new_file and "ctime: 0x6553f100" in new_file  # clamped to the epoch
    assert f"mtime: 0x{OLD:08x}" in stat_of("/etc/hostname")  # older ones are kept
    inodes = {re.search(r"Inode: (\d+)", stat_of(p)).group(1)  # type: ignore[union-attr]
              for p in ("/usr/bin/hard-a", "/usr/bin/hard-b", "/usr/share/hard-c")}
    assert len(inodes) == 1  # hard links stay hard links
    assert "Links: 3" in stat_of("/usr/bin/hard-a")
    assert "Fast link dest: \"/lib/systemd/systemd\"" in stat_of("/usr/sbin/init")
    assert "Type: FIFO" in stat_of("/run/initctl")
    assert "Mode:  04755" in stat_of("/usr/share/setuid")
    debugfs(image, offset, f"dump /usr/share/size-65536 {tmp_path / 'dumped'}")
    assert (tmp_path / "dumped").read_bytes() == (rootfs / "usr/share/size-65536").read_bytes()
    listing = debugfs(image, offset, "ls -p /usr/share/many")
    assert listing.count("file-with-a-longish-name-") == 300
    assert "Root node dump" in debugfs(image, offset, "htree /usr/share/many")  # e2fsck -D indexed it


def test_plain_image_without_dax_header(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "plain.img"
    result = build(rootfs, image, dax_header=False)
    [p1] = sfdisk(image)["partitions"]  # type: ignore[misc]
    assert p1["start"] == 2048 and p1["start"] + p1["size"] == image.stat().st_size // 512
    assert image.read_bytes()[4096:4096 + 16] != b"NVDIMM_PFN_INFO\0"
    assert not result.layout.dax_header
    subprocess.run(["e2fsck", "-fn", f"{image}?offset={MIB}"], check=True, capture_output=True)


def test_measured_image_verifies_with_veritysetup(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "kata.img"
    result = build(rootfs, image, measured=True, variant="base")
    record = tmp_path / "root_hash_base.txt"
    assert result.root_hash_file == record
    line = record.read_text().strip()
    fields = dict(part.split("=") for part in line.split(","))
    assert list(fields) == ["root_hash", "salt", "data_blocks", "data_block_size", "hash_block_size"]
    table = sfdisk(image)
    p1, p2 = table["partitions"]  # type: ignore[misc]
    assert p1.get("bootable") is True and "bootable" not in p2
    assert p2["start"] * 512 == 126 * MIB and p2["start"] + p2["size"] == 128 * MIB // 512
    inner = nested_table(image, tmp_path)["partitions"]
    assert [(q["start"] * 512 + 2 * MIB, q["size"]) for q in inner] == [(p["start"] * 512, p["size"]) for p in (p1, p2)]  # type: ignore[union-attr,index]
    data = tmp_path / "p1"
    with image.open("rb") as source, data.open("wb") as target:
        source.seek(p1["start"] * 512)
        target.write(source.read(p1["size"] * 512))
    assert int(fields["data_blocks"]) * 4096 == data.stat().st_size
    subprocess.run(["veritysetup", "verify", "--no-superblock", f"--hash-offset={p2['start'] * 512}",
                    f"--salt={fields['salt']}", f"--data-blocks={fields['data_blocks']}", data, image,
                    fields["root_hash"]], check=True, capture_output=True)
    wrong = "1" * 64
    bad = subprocess.run(["veritysetup", "verify", "--no-superblock", f"--hash-offset={p2['start'] * 512}",
                          f"--salt={fields['salt']}", f"--data-blocks={fields['data_blocks']}", data, image, wrong],
                         capture_output=True)
    assert bad.returncode != 0
    subprocess.run(["e2fsck", "-fn", f"{image}?offset={p1['start'] * 512}"], check=True, capture_output=True)


def test_python_verity_equals_veritysetup(tmp_path: Path) -> None:
    from osbuilder.image import verity

    data = tmp_path / "data"
    data.write_bytes(os.urandom(4096 * 300))
    salt = "5a" * 32
    hash_file = tmp_path / "hash"
    hash_file.write_bytes(bytes(4096 * 8))
    out = sh("veritysetup", "format", "--no-superblock", f"--salt={salt}", data, hash_file)
    root = re.search(r"Root hash:\s+([0-9a-f]+)", out).group(1)  # type: ignore[union-attr]
    combined = tmp_path / "combined"
    combined.write_bytes(data.read_bytes() + bytes(4096 * 8))
    fd = os.open(combined, os.O_RDWR)
    try:
        line = verity.format_region(fd, data_offset=0, data_blocks=300, hash_offset=4096 * 300,
                                    salt=bytes.fromhex(salt))
    finally:
        os.close(fd)
    assert line.root_hash == root
    assert combined.read_bytes()[4096 * 300:] == hash_file.read_bytes()


def test_erofs_image(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "erofs.img"
    result = build(rootfs, image, fs_type="erofs")
    assert result.filesystem.fs_type == "erofs"
    size_mib = image.stat().st_size // MIB
    assert size_mib == sizing.kata_erofs_size_mib(result.sizing["fs_bytes"], dax_header=True,  # type: ignore[arg-type]
                                                  measured=False)
    [p1] = sfdisk(image)["partitions"]  # type: ignore[misc]
    assert p1["start"] == 6144
    blob = tmp_path / "fs.erofs"
    with image.open("rb") as source, blob.open("wb") as target:
        source.seek(3 * MIB)
        target.write(source.read(result.filesystem.size))
    extracted = tmp_path / "extracted"
    subprocess.run(["fsck.erofs", f"--extract={extracted}", blob], check=True, capture_output=True)
    assert (extracted / "etc/machine-id").read_bytes() == b""
    assert (extracted / "usr/share/size-1048576").read_bytes() == (rootfs / "usr/share/size-1048576").read_bytes()
    nids = {re.search(r"NID: (\d+)\s+Links: (\d+)", sh("dump.erofs", f"--path={path}", blob)).groups()  # type: ignore[union-attr]
            for path in ("/usr/bin/hard-a", "/usr/bin/hard-b", "/usr/share/hard-c")}
    assert len(nids) == 1 and next(iter(nids))[1] == "3"  # one inode, three links
    assert int(os.stat(extracted / "etc/new-file").st_mtime) == EPOCH
    assert not list(rootfs.parent.glob(".osbuilder-stage-*"))  # the staging tree is gone


def test_measured_erofs_image(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "erofs.img"
    result = build(rootfs, image, fs_type="erofs", measured=True)
    assert result.verity is not None and result.layout.hash is not None
    assert result.layout.root.size >= result.filesystem.size
    data = tmp_path / "p1"
    with image.open("rb") as source, data.open("wb") as target:
        source.seek(result.layout.root.offset)
        target.write(source.read(result.layout.root.size))
    subprocess.run(["veritysetup", "verify", "--no-superblock", f"--hash-offset={result.layout.hash.offset}",
                    f"--salt={result.verity.salt}", f"--data-blocks={result.verity.data_blocks}", data, image,
                    result.verity.root_hash], check=True, capture_output=True)


def test_xfs_image(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "xfs.img"
    result = build(rootfs, image, fs_type="xfs", fs_uuid="11111111-2222-4333-8444-555555555555")
    assert result.filesystem.fs_type == "xfs" and result.filesystem.uuid == "11111111-2222-4333-8444-555555555555"
    assert image.stat().st_size % (128 * MIB) == 0 and result.filesystem.size == image.stat().st_size - 3 * MIB
    region = tmp_path / "fs.xfs"
    subprocess.run(["dd", f"if={image}", f"of={region}", "bs=1M", "skip=3", "conv=sparse", "status=none"], check=True)
    subprocess.run(["xfs_repair", "-n", "-f", region], check=True, capture_output=True)
    listing = sh("xfs_db", "-r", "-c", "ls /etc", region)
    assert "machine-id" in listing and "hostname" in listing


def test_identifier_overrides(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "kata.img"
    result = build(rootfs, image, disk_signature=0x4B415441, fs_uuid="6ba7b810-9dad-41d1-80b4-00c04fd430c8",
                   hash_seed="6ba7b811-9dad-41d1-80b4-00c04fd430c8", measured=True, verity_salt="00ff" * 8)
    assert sfdisk(image)["id"] == "0x4b415441"
    dump = sh("dumpe2fs", "-h", f"{image}?offset={3 * MIB}")
    assert "6ba7b810-9dad-41d1-80b4-00c04fd430c8" in dump and "6ba7b811-9dad-41d1-80b4-00c04fd430c8" in dump
    assert result.verity is not None and result.verity.salt == "00ff" * 8


@pytest.mark.parametrize("options", [{}, {"fs_type": "erofs"}, {"measured": True}],
                         ids=["ext4", "erofs", "measured"])
def test_builds_are_reproducible(tmp_path: Path, options: dict[str, object]) -> None:
    first = make_rootfs(tmp_path / "one" / "rootfs")
    image_one = tmp_path / "one.img"
    build(first, image_one, root_hash_file=tmp_path / "one.txt", **options)
    time.sleep(1.1)  # another wall-clock second, and a copy with other ctimes, atimes and inode numbers
    second = tmp_path / "elsewhere" / "deeper" / "rootfs-copy"
    second.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", first, second], check=True)
    (second / "etc/hostname").read_bytes()
    image_two = tmp_path / "two.img"
    build(second, image_two, root_hash_file=tmp_path / "two.txt", **options)
    assert sha256(image_one) == sha256(image_two)
    if options.get("measured"):
        assert (tmp_path / "one.txt").read_text() == (tmp_path / "two.txt").read_text()


def test_sizing_grows_when_the_estimate_is_short(rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    (rootfs / "usr/share/big").write_bytes(os.urandom(6 * MIB))
    real = sizing.ext4_min_blocks

    def short(needs: sizing.TreeNeeds, free_bytes: int = 0) -> sizing.Ext4Geometry:
        geometry = real(needs, free_bytes)
        return sizing.ext4_geometry(geometry.blocks * 7 // 10, geometry.block_size, geometry.inodes)

    monkeypatch.setattr(sizing, "ext4_min_blocks", short)
    with caplog.at_level(logging.WARNING):
        result = build(rootfs, tmp_path / "kata.img", alignment_mb=1, dax_header=False)
    assert result.sizing["grown"] >= 1
    assert "too small" in caplog.text
    subprocess.run(["e2fsck", "-fn", f"{tmp_path / 'kata.img'}?offset={MIB}"], check=True, capture_output=True)


def test_model_is_close_to_what_mke2fs_uses(tmp_path: Path) -> None:
    """The estimate against the real filesystem: never short, and the slack is small."""
    rootfs = make_rootfs(tmp_path / "rootfs", extra_bytes=30 * MIB, large_directory=2000)
    result = build(rootfs, tmp_path / "kata.img", alignment_mb=1, dax_header=False)
    info = result.filesystem.details
    used = result.filesystem.blocks - int(info["free_blocks"])  # type: ignore[call-overload]
    geometry = result.sizing["geometry"]
    estimated_used = geometry["overhead_blocks"] + result.sizing["tree"]["blocks"]  # type: ignore[index]
    assert estimated_used >= used  # never short
    assert estimated_used - used < 0.02 * used + 64  # and tight


@pytest.mark.parametrize(("args", "message"), [
    (["--fs-type", "btrfs"], "invalid choice"),
    (["-o", "/nonexistent-dir/kata.img"], "does not exist"),
])
def test_bad_options_exit_2_without_output(rootfs: Path, tmp_path: Path, args: list[str], message: str) -> None:
    output = tmp_path / "out.img"
    full = [*args] if "-o" in args else [*args, "-o", output]
    result = run_cli("build-image", rootfs, *full)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not output.exists() and not list(tmp_path.glob(".out.img*"))


def test_bad_rootfs_exit_2_without_output(tmp_path: Path) -> None:
    no_init = make_rootfs(tmp_path / "no-init")
    (no_init / "usr/sbin/init").unlink()
    systemd_init = make_rootfs(tmp_path / "systemd-init")
    for rootfs, extra, message in ((no_init, [], "no /sbin/init"), (systemd_init, ["--agent-init"], "must not be systemd"),
                                   (tmp_path / "missing", [], "does not exist")):
        output = tmp_path / "out.img"
        result = run_cli("build-image", rootfs, "-o", output, *extra)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert not output.exists() and not list(tmp_path.glob(".out.img*"))


def test_cli_json_and_make_variables(rootfs: Path, tmp_path: Path) -> None:
    result = run_cli("build-image", rootfs, "-o", tmp_path / "k.img", "--json", "--measured", "--variant", "v",
                     env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["layout"]["root_partition"]["offset"] == 3 * MIB
    assert data["root_hash_file"] == str(tmp_path / "root_hash_v.txt")
    assert data["source_date_epoch"] == EPOCH
    made = make("image", f"ROOTFS_DIR={rootfs}", f"IMAGE={tmp_path / 'm.img'}", "FS_TYPE=erofs", "MEASURED_ROOTFS=yes",
                "SKIP_DAX_HEADER=yes", "BUILD_VARIANT=x")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "root_hash_x.txt").is_file()
    assert layout.read_layout(tmp_path / "m.img").fs_type == "erofs"
    assert not layout.read_layout(tmp_path / "m.img").dax_header
