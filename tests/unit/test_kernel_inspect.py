"""Kernel naming and `osbuilder inspect` on kernels built from the fake tree and on synthetic images."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import pytest

from osbuilder.context import Context
from osbuilder.kernel.build import KernelOptions
from osbuilder.kernel.inspect import detect_kernel, features_of, inspect_kernel, render_kernel
from osbuilder.kernel.naming import base_of, kernel_suffix, output_names
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS
from tests.conftest import run_cli
from tests.helpers.fakekernel import make_configs, make_tree
from tests.helpers.kernel import build_with

# --- naming --------------------------------------------------------------------------------------


def test_output_names_follow_kata() -> None:
    names = output_names("6.12.107", "1", kernel_suffix(debug=True, build_type="experimental"))
    assert names.vmlinux == "vmlinux-6.12.107-1-debug-experimental"
    assert names.vmlinuz == "vmlinuz-6.12.107-1-debug-experimental"
    assert names.config == "config-6.12.107-1-debug-experimental"
    assert names.system_map == "System.map-6.12.107-1-debug-experimental"
    assert names.record == "kernel-6.12.107-1-debug-experimental.json"
    assert names.vmlinux_link == "vmlinux-debug-experimental.container"
    assert names.vmlinuz_link == "vmlinuz-debug-experimental.container"
    plain = output_names("6.12.107", "1")
    assert (plain.vmlinux, plain.vmlinux_link, plain.vmlinuz_link) == (
        "vmlinux-6.12.107-1", "vmlinux.container", "vmlinuz.container")
    assert kernel_suffix(False, None) == "" and kernel_suffix(False, "x") == "-x" and kernel_suffix(True, None) == "-debug"


@pytest.mark.parametrize(("name", "base"), [
    ("vmlinux-6.12.107-1", "6.12.107-1"), ("vmlinuz-6.12.107-1-debug", "6.12.107-1-debug"),
    ("config-6.12.107-1", "6.12.107-1"), ("System.map-6.12.107-1", "6.12.107-1"),
    ("kernel-6.12.107-1.json", "6.12.107-1"), ("vmlinux", None), ("bzImage", None), ("vmlinux.container", None),
])
def test_base_of(name: str, base: str | None) -> None:
    assert base_of(name) == base


# --- inspecting built kernels --------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("inspect")
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=tmp / "cache")
    tree, configs = make_tree(tmp / "linux"), make_configs(tmp / "configs")
    x86 = build_with(context, KernelOptions(source_path=tree, configs_dir=configs, output_dir=tmp / "x86"))
    arm = build_with(context, KernelOptions(source_path=tree, configs_dir=configs, output_dir=tmp / "arm",
                                              arch="aarch64"))
    return {"x86": x86.output_dir or tmp, "arm": arm.output_dir or tmp}


def test_inspect_x86_vmlinux_through_its_container_link(built: dict[str, Path]) -> None:
    report = inspect_kernel(built["x86"] / "vmlinux.container")
    assert report["format"] == "elf" and report["architecture"] == "x86_64"
    assert report["version"] == "6.12.107" and report["config_version"] == "7" and report["name"] == "6.12.107-7"
    assert report["link_target"] == "vmlinux-6.12.107-7"
    assert report["pvh_entry_note"] is True
    assert report["config"] == str(built["x86"] / "config-6.12.107-7")
    assert report["source"]["kind"] == "local-tree"
    features = report["features"]
    assert features["virtio_serial_console"] and features["vsock"] and features["pvh"] and features["initrd"]
    assert not features["modules"] and not features["virtio_fs"]
    assert features["initrd_codecs"] == ["gzip"]
    assert "(osbuilder@osbuilder)" in report["banner"]
    text = "\n".join(render_kernel(report))
    assert "version 6.12.107, config_version 7" in text and "PVH entry note: yes" in text


def test_inspect_bzimage_and_arm64_images(built: dict[str, Path]) -> None:
    bz = inspect_kernel(built["x86"] / "vmlinuz-6.12.107-7")
    assert (bz["format"], bz["architecture"], bz["version"]) == ("bzimage", "x86_64", "6.12.107")
    assert bz["boot_protocol"] == "2.15"
    image = inspect_kernel(built["arm"] / "vmlinux-6.12.107-7")
    assert (image["format"], image["architecture"], image["page_size"]) == ("arm64-image", "aarch64", "4K")
    compressed = inspect_kernel(built["arm"] / "vmlinuz.container")
    assert (compressed["format"], compressed["architecture"]) == ("arm64-image.gz", "aarch64")
    assert compressed["features"]["pvh"] is False


def test_inspect_finds_the_config_in_a_build_directory(tmp_path: Path) -> None:
    boot = tmp_path / "arch" / "arm64" / "boot"
    boot.mkdir(parents=True)
    (tmp_path / ".config").write_text("CONFIG_ARM64=y\nCONFIG_DM_VERITY=y\nCONFIG_BLK_DEV_DM=y\nCONFIG_DM_INIT=y\n")
    header = bytearray(0x40)
    header[0x38:0x3C] = b"ARM\x64"
    (boot / "Image").write_bytes(bytes(header) + b"Linux version 6.12.107 (a@b) (gcc) #1 SMP x\0")
    report = inspect_kernel(boot / "Image")
    assert report["config"] == str(tmp_path / ".config")
    assert report["features"]["dm_verity"] and report["features"]["dm_init"]
    assert report["config_version"] is None


def test_embedded_ikconfig_is_read_when_no_file_is_next_to_it(tmp_path: Path) -> None:
    config = b"# Linux/arm64 6.12.107 Kernel Configuration\nCONFIG_ARM64=y\nCONFIG_VIRTIO_FS=y\nCONFIG_FUSE_FS=y\n"
    header = bytearray(0x40)
    header[0x38:0x3C] = b"ARM\x64"
    blob = bytes(header) + b"IKCFG_ST" + gzip.compress(config) + b"IKCFG_ED" + b"Linux version 6.12.107 (x@y) #1 \0"
    (tmp_path / "kernel.img").write_bytes(blob)
    report = inspect_kernel(tmp_path / "kernel.img")
    assert report["config"] == "embedded (CONFIG_IKCONFIG)" and report["features"]["virtio_fs"]


def test_detect_kernel_rejects_user_programs_and_initrds(tmp_path: Path) -> None:
    user_elf = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x401000, 64,
                                                                         0, 0, 64, 56, 0, 64, 0, 0)
    assert not detect_kernel(user_elf)
    assert not detect_kernel(gzip.compress(b"070701" + bytes(200)))  # a cpio.gz initrd
    assert not detect_kernel(b"hello")


def test_features_of_a_config() -> None:
    features = features_of({"BLK_DEV_INITRD": "y", "RD_ZSTD": "y", "RD_LZ4": "y", "EXT4_FS": "y", "MODULES": None})
    assert features["initrd_codecs"] == ["zstd", "lz4"] and features["filesystems"] == ["ext4"]
    assert features["modules"] is False
    assert features_of({"RD_GZIP": "y"})["initrd_codecs"] == []  # no initrd support at all


def test_cli_inspect(built: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("inspect", built["x86"] / "vmlinuz.container", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["kind"] == "kernel" and data["features"]["vsock"] is True
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    refused = run_cli("inspect", other)
    assert refused.returncode == 2 and "not a file osbuilder can inspect" in refused.stderr
    assert run_cli("inspect", tmp_path / "missing").returncode == 2
    os.symlink("missing-target", tmp_path / "dangling")
    assert run_cli("inspect", tmp_path / "dangling").returncode == 2
