"""Kernel command lines as the Kata runtime builds them (reference §9.4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbuilder.boot.runtimeconfig import read_runtime_config
from osbuilder.errors import ConfigError, UsageError
from osbuilder.kernelcmdline import RootSpec, kernel_params, parse_verity, root_params, split_params

VERITY = ("root_hash=" + "ab" * 32 + ",salt=" + "cd" * 32 +
          ",data_blocks=31744,data_block_size=4096,hash_block_size=4096")


def test_nvdimm_ext4_image_mounts_with_dax() -> None:
    assert root_params(RootSpec("image")) == [
        "root=/dev/pmem0p1", "rootflags=dax,data=ordered,errors=remount-ro", "ro", "rootfstype=ext4"]


def test_virtio_blk_and_other_filesystems() -> None:
    assert root_params(RootSpec("image", nvdimm=False)) == [
        "root=/dev/vda1", "rootflags=data=ordered,errors=remount-ro", "ro", "rootfstype=ext4"]
    assert root_params(RootSpec("image", fs_type="erofs")) == ["root=/dev/pmem0p1", "rootflags=dax", "ro",
                                                               "rootfstype=erofs"]
    assert root_params(RootSpec("image", fs_type="xfs", nvdimm=False)) == ["root=/dev/vda1", "ro", "rootfstype=xfs"]
    assert root_params(RootSpec("image"), arch="aarch64")[1] == "rootflags=data=ordered,errors=remount-ro"


def test_measured_image_uses_dm_mod_create() -> None:
    params = root_params(RootSpec("image", verity=parse_verity(VERITY)))
    sectors = 31744 * 4096 // 512
    assert params[0] == (f'dm-mod.create="dm-verity,,,ro,0 {sectors} verity 1 /dev/pmem0p1 /dev/pmem0p2 4096 4096 '
                         f'31744 0 sha256 {"ab" * 32} {"cd" * 32}"')
    assert params[1:] == ["root=/dev/dm-0", "rootflags=data=ordered,errors=remount-ro", "ro", "rootfstype=ext4"]


def test_full_line_for_images_and_initrds() -> None:
    image = kernel_params(RootSpec("image"))
    assert "systemd.unit=kata-containers.target" in image
    assert "systemd.mask=systemd-networkd.service systemd.mask=systemd-networkd.socket" in image
    assert "panic=1" in image and "reboot=k" in image and image.endswith("console=ttyS0")
    initrd = split_params(kernel_params(RootSpec("initrd"), verbosity="quiet"))
    assert not [part for part in initrd if part.startswith(("root=", "rootflags=", "systemd."))]
    assert "quiet" in initrd
    debug = kernel_params(RootSpec("image"), verbosity="debug")
    assert "systemd.show_status=true" in debug and "systemd.log_level=debug" in debug
    quoted = kernel_params(RootSpec("image", verity=parse_verity(VERITY)))
    assert any(part.startswith('dm-mod.create="') and part.endswith('"') for part in split_params(quoted))


@pytest.mark.parametrize("bad", ["root_hash=xyz", VERITY.replace("hash_block_size=4096", "hash_block_size=100"),
                                 VERITY.replace("data_blocks=31744", "data_blocks=many")])
def test_bad_verity_params(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_verity(bad)


def test_runtime_config_reading(tmp_path: Path) -> None:
    config = tmp_path / "configuration-qemu.toml"
    config.write_text(f'''
[hypervisor.qemu]
kernel = "/opt/kata/share/kata-containers/vmlinux.container"
image = "/opt/kata/share/kata-containers/kata-containers.img"
kernel_params = "agent.log=debug"
rootfs_type = "ext4"
disable_image_nvdimm = false
kernel_verity_params = "{VERITY}"
''')
    boot = read_runtime_config(config, root=tmp_path / "root")
    assert boot.kernel == tmp_path / "root/opt/kata/share/kata-containers/vmlinux.container"
    assert boot.initrd is None and boot.nvdimm and boot.verity is not None
    config.write_text(config.read_text().replace('rootfs_type', 'initrd = "/x"\nrootfs_type'))
    with pytest.raises(ConfigError, match="cannot set both image and initrd"):
        read_runtime_config(config)


def test_dax_follows_the_command_line_for_every_root() -> None:
    """The boot check expects DAX exactly when root_params asks for it (one rule for both)."""
    cases = [RootSpec("initrd"), RootSpec("image", nvdimm=False), RootSpec("image"),
             RootSpec("image", verity=parse_verity(VERITY))]
    for spec in cases:
        for arch in ("x86_64", "aarch64"):
            asked = any("dax" in param.split("=", 1)[-1].split(",") for param in root_params(spec, arch))
            expected = spec.dax(arch)
            assert (expected is None) == (spec.kind == "initrd" or not spec.nvdimm), (spec, arch)
            assert bool(expected) == asked, (spec, arch)
    assert RootSpec("image").dax("x86_64") is True and RootSpec("image").dax("aarch64") is False
