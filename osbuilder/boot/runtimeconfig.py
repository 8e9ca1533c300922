"""Reading what to boot from a Kata runtime configuration file (configuration-<hypervisor>.toml)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.errors import ConfigError
from osbuilder.kernelcmdline import VerityLine, parse_verity

SHARED_FS_VALUES = ("virtio-fs", "virtio-9p", "none")


@dataclass(frozen=True)
class RuntimeBoot:
    hypervisor: str
    kernel: Path
    image: Path | None
    initrd: Path | None
    kernel_params: str
    rootfs_type: str
    nvdimm: bool
    verity: VerityLine | None
    memory_mb: int | None
    vcpus: int | None
    # How the runtime shares a container's root with the guest: "virtio-fs", "virtio-9p" or "none"
    # (Kata's keys shared_fs, virtio_fs_daemon, virtio_fs_cache).
    shared_fs: str = "virtio-fs"
    virtio_fs_daemon: Path | None = None
    virtio_fs_cache: str = "auto"


def read_runtime_config(path: Path, root: Path | None = None) -> RuntimeBoot:
    """Parse [hypervisor.<name>]. With `root`, absolute asset paths are taken relative to it (a
    bundle extracted into a temporary directory instead of /)."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(problem="file not found", where=str(path), fix="check --config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(problem=f"invalid TOML: {exc}", where=str(path), fix="fix the TOML syntax") from exc
    hypervisors: dict[str, Any] = data.get("hypervisor", {})
    if not hypervisors:
        raise ConfigError(problem="no [hypervisor.<name>] section", where=str(path),
                          fix="use a Kata runtime configuration file")
    name, section = next(iter(hypervisors.items()))
    where = f"{path} ([hypervisor.{name}])"

    def asset(key: str) -> Path | None:
        value = section.get(key)
        if not value:
            return None
        asset_path = Path(value)
        if root is not None and asset_path.is_absolute():
            asset_path = root / asset_path.relative_to("/")
        return asset_path

    kernel = asset("kernel")
    if kernel is None:
        raise ConfigError(problem="no kernel", where=where, fix='set kernel = "/path/to/vmlinux"')
    image, initrd = asset("image"), asset("initrd")
    if image is not None and initrd is not None:
        raise ConfigError(problem="cannot set both image and initrd", where=where,
                          fix="keep one of the two keys, as the runtime requires")
    if image is None and initrd is None:
        raise ConfigError(problem="neither image nor initrd is set", where=where, fix="set one of them")
    shared_fs = str(section.get("shared_fs", "virtio-fs"))
    if shared_fs not in SHARED_FS_VALUES:
        raise ConfigError(problem=f"shared_fs = {shared_fs!r} is not one of {', '.join(SHARED_FS_VALUES)}",
                          where=f"{where} shared_fs", fix='use shared_fs = "virtio-fs", as the runtime does by default')
    verity_text = section.get("kernel_verity_params", "")
    verity = parse_verity(verity_text, f"{where} kernel_verity_params") if verity_text else None
    return RuntimeBoot(
        hypervisor=name,
        kernel=kernel,
        image=image,
        initrd=initrd,
        kernel_params=str(section.get("kernel_params", "")),
        rootfs_type=str(section.get("rootfs_type", "ext4")),
        nvdimm=not bool(section.get("disable_image_nvdimm", False)),
        verity=verity,
        memory_mb=section.get("default_memory"),
        vcpus=section.get("default_vcpus"),
        shared_fs=shared_fs,
        virtio_fs_daemon=asset("virtio_fs_daemon"),
        virtio_fs_cache=str(section.get("virtio_fs_cache", "auto")),
    )
