"""Bootable assets for the boot tests, made once per session from the shared fixtures.

Everything comes from the real pipeline: the default kernel (Debian's source, every fragment
verified), the Ubuntu noble systemd rootfs and the Debian bookworm agent-as-init rootfs (both with
the reference agent), turned into images and an initrd by the builders; plus a deliberately tiny
kernel without any virtio, for the "no agent transport" case (built once with its own fragments,
then cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from osbuilder.image.builder import ImageOptions, build_image
from osbuilder.initrd.builder import InitrdOptions, build_initrd
from osbuilder.kernel.build import KernelOptions

NO_TRANSPORT_CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "kernel-no-transport"


@dataclass(frozen=True)
class MeasuredImage:
    image: Path
    root_hash_file: Path


@dataclass(frozen=True)
class BootAssets:
    kernel: Path  # the default kernel's vmlinux (PVH)
    agent_version: str
    systemd_image: Path  # Ubuntu noble, systemd starts the agent, DAX image
    agent_image: Path  # Debian bookworm, the agent is init, DAX image
    agent_initrd: Path  # the same rootfs as an initrd
    measured_image: MeasuredImage  # the systemd rootfs, measured (dm-verity)
    no_dax_header_image: Path  # agent rootfs without the 2 MiB DAX prefix
    no_transport_kernel: Path  # no virtio at all


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory, default_kernel: Any, noble_rootfs: Any,
           bookworm_agent_rootfs: Any) -> BootAssets:
    from tests.helpers.kernel import build_with, user_context

    out = tmp_path_factory.mktemp("boot-assets")
    systemd = build_image(noble_rootfs.path, ImageOptions(output=out / "systemd.img"))
    agent = build_image(bookworm_agent_rootfs.path, ImageOptions(output=out / "agent.img", agent_init=True))
    initrd = build_initrd(bookworm_agent_rootfs.path, InitrdOptions(output=out / "agent-initrd.img", agent_init=True))
    measured = build_image(noble_rootfs.path, ImageOptions(output=out / "measured.img", measured=True,
                                                           root_hash_file=out / "root_hash_measured.txt"))
    plain = build_image(bookworm_agent_rootfs.path, ImageOptions(output=out / "no-dax-header.img", agent_init=True,
                                                                 dax_header=False))
    tiny = build_with(user_context(), KernelOptions(configs_dir=NO_TRANSPORT_CONFIGS, measured=False,
                                                      output_dir=out / "no-transport-kernel"))
    assert measured.root_hash_file is not None
    return BootAssets(
        kernel=default_kernel.vmlinux,
        agent_version=str(noble_rootfs.report["agent_version"]),
        systemd_image=systemd.path,
        agent_image=agent.path,
        agent_initrd=initrd.path,
        measured_image=MeasuredImage(measured.path, measured.root_hash_file),
        no_dax_header_image=plain.path,
        no_transport_kernel=tiny.vmlinuz,
    )
