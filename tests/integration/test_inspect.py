"""osbuilder inspect on real images and initrds, valid and broken."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from osbuilder.image.builder import ImageOptions, build_image
from osbuilder.image.layout import MIB
from osbuilder.initrd.builder import InitrdOptions, build_initrd
from tests.conftest import run_cli
from tests.helpers.trees import EPOCH, make_rootfs

pytestmark = pytest.mark.integration


def inspect(path: Path, *args: str | Path) -> tuple[int, dict[str, Any], str]:
    result = run_cli("inspect", path, "--json", *args)
    return result.returncode, json.loads(result.stdout) if result.stdout else {}, result.stderr


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rootfs(tmp_path_factory.mktemp("tree") / "rootfs")


def test_inspect_default_image(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "kata.img"
    built = build_image(rootfs, ImageOptions(output=image, source_date_epoch=EPOCH))
    code, data, _err = inspect(image)
    assert code == 0 and data["ok"] and data["kind"] == "image"
    pfn = data["headers"]["pfn"]
    assert pfn["checksum"] == "0x685b032be3943830" and pfn["checksum_ok"] and pfn["dataoff"] == 2 * MIB
    assert pfn["mode"] == "ram" and pfn["align"] == 2 * MIB and pfn["version"] == "0.2"
    assert data["headers"]["mbr1"]["partitions"][0]["offset"] == data["headers"]["mbr2"]["partitions"][0]["offset"]
    assert data["filesystem"]["type"] == "ext4" and data["filesystem"]["uuid"] == built.identifiers.fs_uuid
    assert data["filesystem"]["size"] == 125 * MIB
    assert data["osbuilder"]["content"]["osbuilder"]["version"] == "4.1.0-test"
    assert data["kernel_params"]["nvdimm"][0] == "root=/dev/pmem0p1"
    text = run_cli("inspect", image)
    assert text.returncode == 0 and "0x685b032be3943830 (ok)" in text.stdout


def test_inspect_measured_image_finds_and_verifies_its_root_hash(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "kata.img"
    built = build_image(rootfs, ImageOptions(output=image, measured=True, variant="base", source_date_epoch=EPOCH))
    assert built.verity is not None
    (tmp_path / "root_hash_other.txt").write_text(built.verity.format().replace(built.verity.root_hash, "1" * 64))
    code, data, _err = inspect(image, "--verify")
    assert code == 0
    assert data["verity"]["root_hash_file"] == str(tmp_path / "root_hash_base.txt")
    assert data["verity"]["verified"] is True
    assert data["verity"]["kernel_params_nvdimm"][0].startswith('dm-mod.create="dm-verity,,,ro,0 ')
    code, data, err = inspect(image, "--root-hash-file", tmp_path / "root_hash_other.txt")
    assert code == 1 and "does not belong to this image" in err


def test_inspect_erofs_and_xfs_images(rootfs: Path, tmp_path: Path) -> None:
    erofs = tmp_path / "erofs.img"
    build_image(rootfs, ImageOptions(output=erofs, fs_type="erofs", dax_header=False, source_date_epoch=EPOCH))
    code, data, _err = inspect(erofs)
    assert code == 0 and data["filesystem"]["type"] == "erofs"
    assert data["osbuilder"]["read_by"] == "erofs reader"
    assert data["osbuilder"]["content"]["agent"]["name"] == "kata-agent"
    xfs = tmp_path / "xfs.img"
    build_image(rootfs, ImageOptions(output=xfs, fs_type="xfs", source_date_epoch=EPOCH))
    code, data, _err = inspect(xfs)
    assert code == 0 and data["filesystem"]["type"] == "xfs"
    assert "xfs" in data["osbuilder"]["read_by"] and "content" not in data["osbuilder"]


def test_broken_images_exit_1_with_the_reason(rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "kata.img"
    build_image(rootfs, ImageOptions(output=image, source_date_epoch=EPOCH))
    with image.open("r+b") as handle:  # one bit in the pfn block's padding
        handle.seek(4096 + 300)
        handle.write(b"\x01")
    code, data, err = inspect(image)
    assert code == 1 and not data["ok"] and "bad checksum" in err
    build_image(rootfs, ImageOptions(output=image, source_date_epoch=EPOCH))
    with image.open("r+b") as handle:  # MBR #2's partition starts 1 MiB later than MBR #1's
        handle.seek(2 * MIB + 446 + 8)
        handle.write(struct.pack("<I", 4096))
    code, data, err = inspect(image)
    assert code == 1 and "partitions disagree" in err


def test_unknown_and_missing_files_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello" * 100)
    assert run_cli("inspect", junk).returncode == 2
    assert run_cli("inspect", tmp_path / "missing").returncode == 2


@pytest.mark.parametrize("agent_init", [False, True], ids=["systemd", "agent-init"])
def test_inspect_initrd(tmp_path: Path, agent_init: bool) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs", agent_init=agent_init)
    initrd = tmp_path / "initrd.img"
    build_initrd(rootfs, InitrdOptions(output=initrd, agent_init=agent_init, compression="gzip"))
    code, data, _err = inspect(initrd)
    assert code == 0 and data["kind"] == "initrd" and data["compression"] == "gzip"
    assert data["entries"] == len(list(rootfs.rglob("*"))) + 2  # "." and /init
    agent_file = rootfs / ("usr/sbin/init" if agent_init else "usr/bin/kata-agent")
    assert data["agent"]["path"] == "/" + str(agent_file.relative_to(rootfs))
    assert data["agent"]["sha256"] == hashlib.sha256(agent_file.read_bytes()).hexdigest()
    assert data["init"]["symlink"] == ("/sbin/init" if agent_init else "/lib/systemd/systemd")
    assert data["init"]["mode"] == ("agent" if agent_init else "systemd")
    assert data["osbuilder"]["content"]["agent"]["agent-is-init-daemon"] == ("yes" if agent_init else "no")


def test_inspect_broken_initrds(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs")
    raw = subprocess.run("find . | cpio -o -H newc --quiet", shell=True, cwd=rootfs, capture_output=True,
                         check=True).stdout
    no_init = tmp_path / "no-init.img"
    no_init.write_bytes(raw)
    code, _data, err = inspect(no_init)
    assert code == 1 and "no /init" in err
    frame = tmp_path / "frame.lz4"
    frame.write_bytes(subprocess.run(["lz4", "-c"], input=raw, capture_output=True, check=True).stdout)
    code, _data, err = inspect(frame)
    assert code == 1 and "legacy" in err
