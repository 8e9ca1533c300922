"""Real kernels from Debian's linux-source-6.12: the configuration check against the tree's own
kconfig (seconds), the default x86_64 build (cached in the user's cache between runs), a boot of
both its images under QEMU, and the arm64 cross build (marker `cross`: in `make test`, alone with
`make test-cross`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from osbuilder.errors import ConfigError, UsageError
from osbuilder.kernel.build import KernelBuild, KernelOptions
from osbuilder.kernel.fragments import KconfigMismatchError
from osbuilder.kernel.inspect import inspect_kernel
from osbuilder.paths import DEFAULT_VERSIONS, KERNEL_CONFIGS_DIR
from osbuilder.versions import load_versions
from tests.conftest import run_cli
from tests.helpers.kernel import build_with, check_with, user_context

pytestmark = pytest.mark.integration

CONFIG_VERSION = (KERNEL_CONFIGS_DIR / "config_version").read_text().strip()
NAME = f"6.12.107-{CONFIG_VERSION}"


def fragment_lines(*directories: str, arch: str) -> list[str]:
    """The kconfig lines of the default selection, read here without osbuilder's parser."""
    lines = []
    for directory in directories:
        for path in sorted((KERNEL_CONFIGS_DIR / directory).glob("*.conf")):
            text = path.read_text().splitlines()
            if any(line.startswith("# !") and f"!{arch}" in line.split() for line in text):
                continue
            lines += [line for line in text if line.startswith("CONFIG_") or line.endswith(" is not set")]
    return lines


def file_says(path: Path) -> str:
    return subprocess.run(["file", "-b", "-L", str(path)], capture_output=True, text=True, check=True).stdout


# --- the configuration check on the real tree (no compile) ---------------------------------------


def check(tmp_path: Path, *fragments: str, configs_dir: Path = KERNEL_CONFIGS_DIR, **options: object) -> object:
    paths = []
    for index, text in enumerate(fragments):
        path = tmp_path / f"extra{index}.conf"
        path.write_text(text)
        paths.append(path)
    return check_with(user_context(), KernelOptions(extra_fragments=tuple(paths), configs_dir=configs_dir,
                                                             output_dir=tmp_path / "out", **options))  # type: ignore[arg-type]


def test_a_misspelt_option_fails_with_its_place(tmp_path: Path) -> None:
    with pytest.raises(KconfigMismatchError) as caught:
        check(tmp_path, "# typo\nCONFIG_VIRTIO_BLKK=y\n")
    (mismatch,) = caught.value.mismatches
    assert mismatch.describe().startswith(f"{tmp_path / 'extra0.conf'}:2: CONFIG_VIRTIO_BLKK: requested y, "
                                          "got absent from .config")
    assert "no such option in this kernel" in mismatch.explanation
    assert caught.value.exit_code == 1


def test_an_unsatisfiable_option_fails_with_both_values(tmp_path: Path) -> None:
    with pytest.raises(KconfigMismatchError) as caught:
        check(tmp_path, "CONFIG_LOG_BUF_SHIFT=30\nCONFIG_SND_HDA_INTEL=y\n")
    found = {m.request.symbol: m for m in caught.value.mismatches}
    assert found["LOG_BUF_SHIFT"].describe().startswith(
        f"{tmp_path / 'extra0.conf'}:1: CONFIG_LOG_BUF_SHIFT: requested 30, got 25")
    assert "range 12 25" in found["LOG_BUF_SHIFT"].explanation
    assert found["SND_HDA_INTEL"].shown_actual == "absent from .config"
    assert "sound/pci/hda/Kconfig" in found["SND_HDA_INTEL"].explanation


def test_two_fragments_that_disagree_fail_before_kconfig_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        check(tmp_path, "CONFIG_PRINTK_TIME=y\n", "\n# CONFIG_PRINTK_TIME is not set\n")
    text = caught.value.message()
    assert "CONFIG_PRINTK_TIME" in text and "common/base.conf:" in text
    assert f"{tmp_path / 'extra1.conf'}:2" in text and caught.value.exit_code == 2


def test_a_whitelisted_option_passes(tmp_path: Path) -> None:
    configs = tmp_path / "kernel-configs"
    shutil.copytree(KERNEL_CONFIGS_DIR, configs)
    with (configs / "whitelist.conf").open("a") as handle:
        handle.write("# renamed in a later kernel (test)\nCONFIG_VIRTIO_BLKK\n")
    result = check(tmp_path, "CONFIG_VIRTIO_BLKK=y\n", configs_dir=configs)
    assert [m.request.symbol for m in result.whitelisted] == ["VIRTIO_BLKK"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("variant", [
    {}, {"measured": False}, {"confidential": True}, {"debug": True}, {"build_type": "experimental"},
    {"confidential": True, "debug": True},
    {"arch": "aarch64"}, {"arch": "aarch64", "measured": False}, {"arch": "aarch64", "debug": True},
    {"arch": "aarch64", "build_type": "experimental"},
], ids=lambda v: "-".join(f"{k}={v}" for k, v in v.items()) or "default")
def test_every_variant_merges_on_the_real_tree(tmp_path: Path, variant: dict[str, object]) -> None:
    result = check(tmp_path, **variant)
    assert result.requested > 300 and result.whitelisted == ()  # type: ignore[attr-defined]
    config = (result.config).read_text()  # type: ignore[attr-defined]
    assert "# CONFIG_MODULES is not set" in config
    assert ("CONFIG_ARM64=y" in config) == (variant.get("arch") == "aarch64")


def test_confidential_arm64_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no confidential guest support for arm64"):
        check(tmp_path, arch="aarch64", confidential=True)


# --- the default kernel --------------------------------------------------------------------------


@pytest.mark.slow
def test_default_kernel_from_debian_with_every_fragment(default_kernel: KernelBuild) -> None:
    kernel = default_kernel
    assert kernel.name == NAME and kernel.arch == "x86_64"
    assert os.readlink(kernel.vmlinux_container) == f"vmlinux-{NAME}"  # type: ignore[arg-type]
    assert os.readlink(kernel.vmlinuz_container) == f"vmlinuz-{NAME}"  # type: ignore[arg-type]
    assert "ELF 64-bit LSB executable, x86-64" in file_says(kernel.vmlinux)
    bz = file_says(kernel.vmlinuz)
    assert "Linux kernel x86 boot executable bzImage" in bz and "version 6.12.107 (osbuilder@osbuilder)" in bz
    config = set(kernel.config.read_text().splitlines())
    missing = [line for line in fragment_lines("common", "x86_64", "measured", arch="x86_64") if line not in config]
    assert missing == []
    assert "CONFIG_64BIT=y" in config and "CONFIG_X86_64=y" in config
    record = json.loads(kernel.record.read_text())
    pin = load_versions(DEFAULT_VERSIONS).kernel_debian_source()
    assert record["source"]["kind"] == "debian" and record["source"]["sha256"] == pin.sha256_for("x86_64")
    assert record["source"]["package_version"] == "6.12.107-1"
    assert record["kernel_release"] == "6.12.107"
    assert record["config"]["sha256"] == hashlib.sha256(kernel.config.read_bytes()).hexdigest()
    assert record["outputs"]["vmlinuz"]["sha256"] == hashlib.sha256(kernel.vmlinuz.read_bytes()).hexdigest()
    report = inspect_kernel(kernel.vmlinux_container)  # type: ignore[arg-type]
    features = report["features"]
    for feature in ("dax_nvdimm_root", "vsock", "virtio_fs", "virtio_serial_console", "dm_verity", "dm_init",
                    "pvh"):
        assert features[feature], feature
    assert features["initrd_codecs"] == ["gzip", "zstd", "xz", "lz4"]
    assert report["pvh_entry_note"] is True and report["config_version"] == CONFIG_VERSION


@pytest.mark.slow
def test_default_kernel_second_build_is_a_cache_hit(default_kernel: KernelBuild, tmp_path: Path) -> None:
    result = run_cli("build-kernel", "--arch", "x86_64", "-o", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["cache_hit"] is True and data["cache_key"] == default_kernel.cache_key
    copied = tmp_path / f"vmlinuz-{NAME}"
    assert hashlib.sha256(copied.read_bytes()).digest() == hashlib.sha256(default_kernel.vmlinuz.read_bytes()).digest()


# --- booting it -----------------------------------------------------------------------------------

INIT_C = r"""
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

static void cat(const char *path, const char *prefix) {
    char line[256];
    FILE *file = fopen(path, "r");
    if (!file) { printf("%smissing %s\n", prefix, path); return; }
    while (fgets(line, sizeof line, file)) printf("%s%s", prefix, line);
    fclose(file);
}

int main(void) {
    mount("proc", "/proc", "proc", 0, 0);
    mount("sysfs", "/sys", "sysfs", 0, 0);
    cat("/proc/version", "OSB version: ");
    cat("/proc/filesystems", "OSB fs: ");
    DIR *ports = opendir("/sys/class/virtio-ports");
    struct dirent *entry;
    while (ports && (entry = readdir(ports))) {
        char path[300];
        if (entry->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", entry->d_name);
        cat(path, "OSB port: ");
    }
    printf("OSB done\n");
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
"""


def newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive of (name, mode, data, rdev major<<8|minor) entries."""
    out = b""
    for index, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], 1):
        encoded = name.encode() + b"\0"
        fields = (index, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % field for field in fields)
        out += header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4) + data + b"\0" * (-len(data) % 4)
    return out


@pytest.fixture(scope="module")
def probe_initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("probe")
    (work / "init.c").write_text(INIT_C)
    subprocess.run(["gcc", "-static", "-Os", "-o", str(work / "init"), str(work / "init.c")], check=True)
    initrd = work / "initrd.cpio"
    initrd.write_bytes(newc([("dev", 0o40755, b"", 0), ("proc", 0o40755, b"", 0), ("sys", 0o40755, b"", 0),
                             ("dev/console", 0o20600, b"", (5 << 8) | 1),
                             ("init", 0o100755, (work / "init").read_bytes(), 0)]))
    return initrd


@pytest.mark.slow
@pytest.mark.parametrize("image", ["vmlinux", "vmlinuz"])
def test_default_kernel_boots_under_qemu(default_kernel: KernelBuild, probe_initrd: Path, image: str) -> None:
    """vmlinux boots through its PVH entry, vmlinuz as a bzImage; the probe init reports the
    filesystems and the virtio-serial port the agent would use."""
    kernel = default_kernel.vmlinux if image == "vmlinux" else default_kernel.vmlinuz
    argv = ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-cpu", "max", "-m", "512M", "-smp", "1",
            "-kernel", str(kernel), "-initrd", str(probe_initrd), "-append", "console=ttyS0 panic=-1",
            "-display", "none", "-no-reboot", "-nodefaults", "-serial", "stdio",
            "-device", "virtio-serial-pci", "-chardev", "null,id=agent",
            "-device", "virtserialport,chardev=agent,name=agent.channel.0"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, errors="replace")
    console = result.stdout
    assert "OSB done" in console, console[-3000:]
    assert "OSB version: Linux version 6.12.107 (osbuilder@osbuilder)" in console
    for filesystem in ("ext4", "xfs", "erofs", "virtiofs", "overlay", "9p"):
        assert f"\t{filesystem}\n" in console, filesystem
    assert "OSB port: agent.channel.0" in console


# --- arm64 ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.cross
def test_arm64_cross_build_produces_image(tmp_path: Path) -> None:
    build = build_with(user_context(), KernelOptions(arch="aarch64", output_dir=tmp_path))
    assert build.vmlinux.name == f"vmlinux-{NAME}"
    assert "Linux kernel ARM64 boot executable Image, little-endian, 4K pages" in file_says(build.vmlinux)
    assert "gzip compressed data" in file_says(build.vmlinuz)
    with build.vmlinux.open("rb") as handle:
        header = handle.read(64)
    assert header[0x38:0x3C] == b"ARM\x64" and struct.unpack_from("<Q", header, 0x10)[0] > 0
    assert build.info["toolchain"]["cross_gcc"].startswith("aarch64-linux-gnu-gcc")
    assert "CONFIG_ARM64=y" in build.config.read_text()
    report = inspect_kernel(build.vmlinuz_container)  # type: ignore[arg-type]
    assert report["architecture"] == "aarch64" and report["features"]["dm_verity"]
